"""The one Ray Serve application answering every tenant and use case:
POST /v1/{tenant}/{use_case}/predict (the Production version) and
/v1/{tenant}/{use_case}/staging/predict (the Staging version, pre-production).

A tenant's use case costs a model load, not a replica: models of every family share the
replica's model cache (least recently used out beyond a count and a size, model_cache.py), one
per (tenant, use case, version); the version is picked by the route of (tenant, use case)
(routing.py), never by the client, and so is the engine of its production route: this model
in-process, or the tenant's own model on Triton. Requests are validated against the use case's
declaration (its features, its entity key type). A caller needs a key of the tenant (`predict`
scope, `staging` for the pre-production route), checked before the body is read. Imported only
by the serving code: ray.serve, mlflow, torch and feast are slow to import; Dagster is never
imported here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from ml_assets import use_case as use_cases
from ml_assets.access.guard import AccessDenied, authorize
from ml_assets.access.keys import REPLICA_CACHE_S, KeyStore, Role
from ml_assets.access.rate_limit import RateLimiter
from ml_assets.data.feature_store import TenantFeatureStore
from ml_assets.data.object_store import ObjectStoreClient
from ml_assets.serving import prediction_log, triton
from ml_assets.serving.model_cache import ModelCache
from ml_assets.serving.models import Predictor, family_of, load_sized
from ml_assets.serving.request import (
    KEYS,
    RequestError,
    decode_json,
    key_aliases,
    parse_body,
    predict_target,
    refuse_oversized,
    validate_keys,
    validate_rows,
)
from ml_assets.serving.routing import (
    ENGINE_HEADER,
    KEY_HEADER,
    ROUTE_HEADER,
    TRITON,
    VERSION_HEADER,
    Route,
    RouteError,
    route_table,
    split_key,
)
from ml_assets.tenants import Tenant
from ml_assets.use_case import UseCase

APP_NAME = "models"
TRITON_TIMEOUT_S = 10.0  # beyond it the request is a 504, logged; the SLA is 50 ms

logger = logging.getLogger("ray.serve")

LogKey = tuple[str, str | None]  # (tenant, use case); None: the tenant's UNROUTED log


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=256,
    logging_config={"enable_access_log": False},  # one log line per request costs ~1 ms here
)
class ModelService:
    """Scores feature rows (or entities' online features) with the version the route of
    (tenant, use case) picks, and appends every request to that prediction log off the request
    path."""

    async def __init__(self, feast: dict, object_store: dict, keys_path: str,
                       rate_limit_per_minute: int, log_flush_s: float = 2.0,
                       models_per_replica: int = 256,
                       model_cache_mb: float | None = None) -> None:
        self.feast = TenantFeatureStore(**feast)
        # the data layer moves to online stores per (tenant, use case); until it has, the
        # tenant's one store holds churn's features only
        self.object_store = ObjectStoreClient(**object_store)
        self.keys = KeyStore(keys_path, cache_s=REPLICA_CACHE_S)
        self.limiter = RateLimiter(rate_limit_per_minute)
        self.log_flush_s = log_flush_s
        # declarations are code: read once per replica (a new one comes with a redeploy)
        self.use_cases: dict[str, UseCase] = {name: use_cases.load(name)
                                              for name in use_cases.names()}
        self.routes: dict[tuple[str, str], Route] = {}
        self.tenants: set[str] = set()
        self.routes_version = -1
        self.feature_stores: dict[tuple[str, str], Any] = {}
        self.log_buffer: dict[LogKey, prediction_log.LogBuffer] = {}
        self.load_lock = threading.Lock()
        self.models = ModelCache(
            self._load_model, models_per_replica,
            None if model_cache_mb is None else int(model_cache_mb * 2**20))
        self.shadows: set[asyncio.Task] = set()  # kept referenced until they finish
        self.http = None  # the aiohttp session to Triton, made on the replica's loop
        await self._refresh_routes(timeout_s=0)
        self.background = [asyncio.create_task(self._follow_routes()),
                           asyncio.create_task(self._flush_periodically())]

    async def _refresh_routes(self, timeout_s: float) -> None:
        version, routes = await route_table().wait_newer.remote(self.routes_version, timeout_s)
        self.routes = {split_key(key): Route(**route) for key, route in routes.items()}
        self.tenants = {tenant for tenant, _ in self.routes}
        self.routes_version = version

    async def _follow_routes(self) -> None:
        while True:
            try:
                await self._refresh_routes(timeout_s=30)
            except Exception:  # noqa: BLE001 - keep serving the last routes; retry shortly
                logger.exception("route table unreachable")
                await asyncio.sleep(1)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.log_flush_s)
            try:
                await self.flush_log()
            except Exception:  # noqa: BLE001 - the buffer is kept and written next time
                logger.exception("prediction log flush failed")

    async def flush_log(self) -> int:
        """Write the buffered log rows, one parquet file per (tenant, use case); how many
        rows."""
        buffered, self.log_buffer = self.log_buffer, {}
        written = 0
        for where, buffer in buffered.items():
            try:
                await asyncio.to_thread(prediction_log.write_buffer, self.object_store, buffer)
                written += len(buffer)
            except Exception:
                self._buffer(*where).extend(buffer)  # nothing is lost: written next time
                raise
        return written

    def __del__(self) -> None:
        # Serve calls this when it stops the replica gracefully: write what is still buffered
        for where, buffer in getattr(self, "log_buffer", {}).items():
            try:
                prediction_log.write_buffer(self.object_store, buffer)
            except Exception:  # noqa: BLE001 - shutting down: say it, nothing else to do
                logger.exception("prediction log rows of %s lost at shutdown", where)

    def _buffer(self, tenant: str, use_case: str | None) -> prediction_log.LogBuffer:
        found = self.log_buffer.get((tenant, use_case))
        if found is None:
            found = self.log_buffer[(tenant, use_case)] = prediction_log.LogBuffer(
                tenant, None if use_case is None else self.use_cases[use_case])
        return found

    async def model_cache_stats(self) -> dict:
        """The model cache's contents, bytes and counts, and this replica's resident memory."""
        return {**self.models.stats(), "rss_bytes": _rss_bytes()}

    async def _load_model(self, model_id: str) -> tuple[Predictor, int]:
        """The model of "tenant/use_case/version" and its size (model_cache.ModelCache)."""
        tenant, use_case, version = model_id.split("/")
        route = self.routes[(tenant, use_case)]
        return await asyncio.to_thread(self._load_blocking, tenant, use_case, version,
                                       route.registry_uri)

    def _load_blocking(self, tenant: str, use_case: str, version: str,
                       registry_uri: str) -> tuple[Predictor, int]:
        """Load a Staging or Production version with verified lineage, with the loader of the
        family its `model_type` tag names; never a None or Archived one, nor one made from
        another tenant's run."""
        import mlflow
        from mlflow import MlflowClient

        from ml_assets.registry import lineage, stages

        client = MlflowClient(registry_uri, registry_uri)
        owner = Tenant(tenant, use_case)
        found = stages.model_version(client, owner, version)
        if stages.stage_of(found) not in stages.SERVABLE:
            raise stages.StageTransitionError(
                f"version {version} is {stages.stage_of(found)}: only Staging and Production "
                "versions are served")
        lineage.verify(client, owner, found)
        family = family_of(found.tags)
        # mlflow resolves models:/ sources through its process-wide URIs (download_artifacts'
        # tracking_uri is not passed down): set them and load under one lock
        with self.load_lock:
            mlflow.set_tracking_uri(registry_uri)
            mlflow.set_registry_uri(registry_uri)
            return load_sized(f"models:/{owner.registered_model_name}/{version}", family)

    def _online_rows(self, tenant: str, use_case: UseCase, keys: list) -> list[list[float]]:
        columns = self._online_columns(tenant, use_case, keys)
        rows = [[columns[name][i] for name in use_case.features] for i in range(len(keys))]
        unknown = [key for key, row in zip(keys, rows, strict=True)
                   if all(v is None for v in row)]
        if unknown:
            raise RequestError(404, f"no online features for {KEYS} {unknown[:10]}")
        return [[math.nan if v is None else float(v) for v in row] for row in rows]

    def _online_columns(self, tenant: str, use_case: UseCase, keys: list) -> dict[str, list]:
        """{feature: values} of the entities from the (tenant, use case)'s online store."""
        store = self.feature_stores.get((tenant, use_case.name))
        if store is None:
            store = self.feast.store(Tenant(tenant, use_case.name), use_case)
            self.feature_stores[(tenant, use_case.name)] = store
        return self.feast.online_features(store, use_case, keys)

    async def __call__(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        tenant, name, version, route = None, None, None, None
        headers: dict[str, str] = {}
        keys: list[Any] = [None]
        matrix: list[list[float]] = []
        try:
            if request.method != "POST":
                raise RequestError(405, "use POST /v1/{tenant}/{use_case}/predict")
            tenant, name, staging = predict_target(request.url.path)
            try:  # before anything else: no work for a caller without the tenant's key
                authorize(self.keys, self.limiter, request.headers.get("authorization"),
                          tenant, Role.staging if staging else Role.predict)
            except AccessDenied as exc:
                if exc.retry_after_s:
                    headers["retry-after"] = str(exc.retry_after_s)
                raise RequestError(exc.status, str(exc)) from None
            if tenant not in self.tenants:
                raise RequestError(404, f"unknown tenant {tenant!r}: no deployed endpoint")
            use_case = self.use_cases.get(name)
            if use_case is None:
                raise RequestError(404, f"unknown use case {name!r}: declared are "
                                        f"{sorted(self.use_cases)}")
            tenant_route = self.routes.get((tenant, name))
            if tenant_route is None:
                raise RequestError(404, f"tenant {tenant!r} has no deployed endpoint for use "
                                        f"case {name!r}")
            await refuse_oversized(request)  # dropped unparsed, not scored
            body = decode_json(await request.body())
            kind, items, field = parse_body(body, key_aliases(name))
            key = body.get("key") or request.headers.get(KEY_HEADER)
            if kind == KEYS:
                keys = validate_keys(items, use_case.entity.key_type, field)
                key = key or str(keys[0])
            else:
                matrix = validate_rows(items, use_case.features)
            version, route = self._pick(tenant_route, tenant, name, staging, key)
            engine = tenant_route.engine_for(route)
            headers.update({VERSION_HEADER: version, ROUTE_HEADER: route, ENGINE_HEADER: engine})
            model = None if engine == TRITON else await self._model(tenant, name, version)
            if kind == KEYS:
                matrix = await asyncio.to_thread(self._online_rows, tenant, use_case, keys)
            if model is None:
                predictions = await self._triton(tenant, version, tenant_route.triton_url,
                                                 matrix)
            else:
                predictions = model(np.asarray(matrix, dtype=np.float32)).tolist()
            # rendered here, inside the try: a body that cannot be sent is a 500, logged as one
            response = JSONResponse(
                {"tenant": tenant, "use_case": name, "model_version": version, "route": route,
                 "predictions": predictions},
                headers=headers,
            )
        except RequestError as exc:
            self._log_refusal(tenant, name, version, route, exc.status, started)
            return JSONResponse({"error": str(exc)}, exc.status, headers=headers)
        except Exception:  # noqa: BLE001 - the last resort: a JSON 500 that is still logged
            logger.exception("request to %s failed", request.url.path)
            self._log_refusal(tenant, name, version, route, 500, started)
            return JSONResponse({"error": "internal error"}, 500, headers=headers)
        self._log(tenant, name, version, route, 200, started, keys, matrix, predictions)
        shadow = tenant_route.shadow_version()
        if shadow and route == prediction_log.PRODUCTION_ROUTE:
            self.shadows.add(task := asyncio.create_task(
                self._shadow(tenant, name, shadow, keys, matrix)))
            task.add_done_callback(self.shadows.discard)
        return response

    def _log_refusal(self, tenant: str | None, name: str | None, version: str | None,
                     route: str | None, status: int, started: float) -> None:
        """A refused or failed request, in its use case's log (the tenant's UNROUTED log when
        the path names no declared use case); unknown tenants have no log to write to."""
        if tenant in self.tenants:
            where = name if name in self.use_cases else None
            self._log(tenant, where, version, route, status, started, [None], [], [None])

    @staticmethod
    def _pick(route: Route, tenant: str, use_case: str, staging: bool,
              key: Any) -> tuple[str, str]:
        """The version and route name a request gets: stages mean access."""
        if staging:
            if route.staging is None:
                raise RequestError(404, f"tenant {tenant!r} has no Staging version of "
                                        f"{use_case!r}")
            return route.staging, prediction_log.STAGING_ROUTE
        try:
            return route.pick(tenant, None if key is None else str(key), use_case)
        except RouteError as exc:
            raise RequestError(503, str(exc)) from None

    async def _model(self, tenant: str, use_case: str, version: str) -> Predictor:
        try:
            return await self.models.get(f"{tenant}/{use_case}/{version}")
        except Exception as exc:  # noqa: BLE001 - this tenant's model only; others serve
            logger.exception("model %s/%s/%s failed to load", tenant, use_case, version)
            # a refusal (stage, lineage, family) says why; anything else only what kind
            why = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            raise RequestError(503, f"model version {version} of {use_case!r} of tenant "
                                    f"{tenant!r} failed to load: {why}") from None

    async def _triton(self, tenant: str, version: str, url: str,
                      matrix: list[list[float]]) -> list[float]:
        """The version on Triton; the model name comes from the authenticated path's tenant
        (`triton.model_name`), never from the request."""
        if self.http is None:
            import aiohttp

            self.http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TRITON_TIMEOUT_S))
        try:
            return await triton.infer_async(self.http, url, Tenant(tenant), version, matrix)
        except triton.TritonError as exc:
            logger.warning("triton call of %s/%s failed: %s", tenant, version, exc)
            raise RequestError(exc.status, str(exc)) from None

    async def _shadow(self, tenant: str, use_case: str, version: str, keys: list,
                      matrix: list[list[float]]) -> None:
        """Staging's answer to a production request, logged beside it; never returned."""
        started = time.perf_counter()
        try:
            model = await self._model(tenant, use_case, version)
            predictions = model(np.asarray(matrix, dtype=np.float32)).tolist()
        except Exception:  # noqa: BLE001 - a failing shadow is logged, production unharmed
            logger.exception("shadow %s/%s/%s failed", tenant, use_case, version)
            self._log(tenant, use_case, version, prediction_log.SHADOW_ROUTE, 500, started,
                      [None], [], [None])
            return
        self._log(tenant, use_case, version, prediction_log.SHADOW_ROUTE, 200, started, keys,
                  matrix, predictions)

    def _log(self, tenant: str, use_case: str | None, version: str | None, route: str | None,
             status: int, started: float, keys: list, matrix: list,
             predictions: list) -> None:
        self._buffer(tenant, use_case).add(version, route, status,
                                           (time.perf_counter() - started) * 1000, keys, matrix,
                                           predictions)


def _rss_bytes() -> int | None:
    """This process's resident memory (Linux), None elsewhere."""
    import os

    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None
