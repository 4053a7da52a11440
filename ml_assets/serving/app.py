"""The one Ray Serve application answering every tenant: POST /v1/{tenant}/predict (the
Production version) and /v1/{tenant}/staging/predict (the Staging version, pre-production).

A tenant costs a model load, not a replica: models are multiplexed per (tenant, version), the
version is picked by the tenant's route (routing.py), never by the client, and so is the engine
of its production route: this model in-process, or the tenant's own model on Triton. A caller
needs a key of the tenant (`predict` scope, `staging` for the pre-production route), checked
before the body is read. Imported only by the serving code: ray.serve, mlflow, torch and feast
are slow to import; Dagster is never imported here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from ml_assets import use_case
from ml_assets.access.guard import AccessDenied, authorize
from ml_assets.access.keys import REPLICA_CACHE_S, KeyStore, Role
from ml_assets.access.rate_limit import RateLimiter
from ml_assets.data.feature_store import TenantFeatureStore
from ml_assets.data.object_store import ObjectStoreClient
from ml_assets.schema import FEATURES
from ml_assets.serving import prediction_log, triton
from ml_assets.serving.request import (
    RequestError,
    decode_json,
    parse_body,
    predict_target,
    refuse_oversized,
    validate_customer_ids,
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
)
from ml_assets.tenants import Tenant

APP_NAME = "churn"
MODELS_PER_REPLICA = 32  # ~100 KB each: a replica holds every tenant's live versions
TRITON_TIMEOUT_S = 10.0  # beyond it the request is a 504, logged; the SLA is 50 ms

logger = logging.getLogger("ray.serve")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=256,
    logging_config={"enable_access_log": False},  # one log line per request costs ~1 ms here
)
class ChurnService:
    """Scores feature rows (or customers' online features) with the version the tenant's route
    picks, and appends every request to the tenant's prediction log off the request path."""

    async def __init__(self, feast: dict, object_store: dict, keys_path: str,
                       rate_limit_per_minute: int, log_flush_s: float = 2.0) -> None:
        self.feast = TenantFeatureStore(**feast)
        self.object_store = ObjectStoreClient(**object_store)
        self.keys = KeyStore(keys_path, cache_s=REPLICA_CACHE_S)
        self.limiter = RateLimiter(rate_limit_per_minute)
        self.log_flush_s = log_flush_s
        self.routes: dict[str, Route] = {}
        self.routes_version = -1
        self.feature_stores: dict[str, Any] = {}
        self.log_buffer: dict[str, prediction_log.LogBuffer] = {}
        self.load_lock = threading.Lock()
        self.shadows: set[asyncio.Task] = set()  # kept referenced until they finish
        self.http = None  # the aiohttp session to Triton, made on the replica's loop
        await self._refresh_routes(timeout_s=0)
        self.background = [asyncio.create_task(self._follow_routes()),
                           asyncio.create_task(self._flush_periodically())]

    async def _refresh_routes(self, timeout_s: float) -> None:
        version, routes = await route_table().wait_newer.remote(self.routes_version, timeout_s)
        self.routes = {tenant: Route(**route) for tenant, route in routes.items()}
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
        """Write the buffered log rows, one parquet file per tenant; how many rows."""
        buffered, self.log_buffer = self.log_buffer, {}
        written = 0
        for tenant, buffer in buffered.items():
            try:
                await asyncio.to_thread(prediction_log.write_buffer, self.object_store, buffer)
                written += len(buffer)
            except Exception:
                self._buffer(tenant).extend(buffer)  # nothing is lost: written next time
                raise
        return written

    def __del__(self) -> None:
        # Serve calls this when it stops the replica gracefully: write what is still buffered
        for tenant, buffer in getattr(self, "log_buffer", {}).items():
            try:
                prediction_log.write_buffer(self.object_store, buffer)
            except Exception:  # noqa: BLE001 - shutting down: say it, nothing else to do
                logger.exception("prediction log rows of %s lost at shutdown", tenant)

    def _buffer(self, tenant: str) -> prediction_log.LogBuffer:
        found = self.log_buffer.get(tenant)
        if found is None:
            found = self.log_buffer[tenant] = prediction_log.LogBuffer(tenant)
        return found

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def get_model(self, model_id: str) -> torch.nn.Module:
        """The model of "tenant/version", loaded once per replica (LRU beyond the cap)."""
        tenant, version = model_id.split("/")
        route = self.routes[tenant]
        return await asyncio.to_thread(self._load_blocking, tenant, version, route.registry_uri)

    def _load_blocking(self, tenant: str, version: str, registry_uri: str) -> torch.nn.Module:
        """Load a Staging or Production version with verified lineage; never a None or
        Archived one, nor one made from another tenant's run."""
        import mlflow
        import mlflow.pytorch
        from mlflow import MlflowClient

        from ml_assets.registry import lineage, stages

        client = MlflowClient(registry_uri, registry_uri)
        found = stages.model_version(client, Tenant(tenant), version)
        if stages.stage_of(found) not in stages.SERVABLE:
            raise stages.StageTransitionError(
                f"version {version} is {stages.stage_of(found)}: only Staging and Production "
                "versions are served")
        lineage.verify(client, Tenant(tenant), found)
        # mlflow resolves models:/ sources through its process-wide URIs (download_artifacts'
        # tracking_uri is not passed down): set them and load under one lock
        with self.load_lock:
            mlflow.set_tracking_uri(registry_uri)
            mlflow.set_registry_uri(registry_uri)
            uri = f"models:/{Tenant(tenant).registered_model_name}/{version}"
            return mlflow.pytorch.load_model(uri).eval()

    def _online_rows(self, tenant: str, customer_ids: list[int]) -> list[list[float]]:
        churn = use_case.load("churn")
        store = self.feature_stores.get(tenant)
        if store is None:
            store = self.feature_stores[tenant] = self.feast.store(Tenant(tenant), churn)
        columns = self.feast.online_features(store, churn, customer_ids)
        rows = [[columns[name][i] for name in FEATURES] for i in range(len(customer_ids))]
        unknown = [cid for cid, row in zip(customer_ids, rows, strict=True)
                   if all(v is None for v in row)]
        if unknown:
            raise RequestError(404, f"no online features for customer_ids {unknown[:10]}")
        return [[math.nan if v is None else float(v) for v in row] for row in rows]

    async def __call__(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        tenant, version, route = None, None, None
        headers: dict[str, str] = {}
        customer_ids: list[int | None] = [None]
        matrix: list[list[float]] = []
        try:
            if request.method != "POST":
                raise RequestError(405, "use POST /v1/{tenant}/predict")
            tenant, staging = predict_target(request.url.path)
            try:  # before anything else: no work for a caller without the tenant's key
                authorize(self.keys, self.limiter, request.headers.get("authorization"),
                          tenant, Role.staging if staging else Role.predict)
            except AccessDenied as exc:
                if exc.retry_after_s:
                    headers["retry-after"] = str(exc.retry_after_s)
                raise RequestError(exc.status, str(exc)) from None
            tenant_route = self.routes.get(tenant)
            if tenant_route is None:
                raise RequestError(404, f"unknown tenant {tenant!r}: no deployed endpoint")
            await refuse_oversized(request)  # dropped unparsed, not scored
            body = decode_json(await request.body())
            field, items = parse_body(body)
            key = body.get("key") or request.headers.get(KEY_HEADER)
            if field == "customer_ids":
                customer_ids = validate_customer_ids(items)
                key = key or str(customer_ids[0])
            else:
                matrix = validate_rows(items)
            version, route = self._pick(tenant_route, tenant, staging, key)
            engine = tenant_route.engine_for(route)
            headers.update({VERSION_HEADER: version, ROUTE_HEADER: route, ENGINE_HEADER: engine})
            model = None if engine == TRITON else await self._model(tenant, version)
            if field == "customer_ids":
                matrix = await asyncio.to_thread(self._online_rows, tenant, customer_ids)
            if model is None:
                predictions = await self._triton(tenant, version, tenant_route.triton_url,
                                                 matrix)
            else:
                with torch.no_grad():
                    predictions = model(torch.tensor(matrix, dtype=torch.float32)).tolist()
            # rendered here, inside the try: a body that cannot be sent is a 500, logged as one
            response = JSONResponse(
                {"tenant": tenant, "model_version": version, "route": route,
                 "predictions": predictions},
                headers=headers,
            )
        except RequestError as exc:
            if tenant in self.routes:  # unknown tenants have no log to write to
                self._log(tenant, version, route, exc.status, started, [None], [], [None])
            return JSONResponse({"error": str(exc)}, exc.status, headers=headers)
        except Exception:  # noqa: BLE001 - the last resort: a JSON 500 that is still logged
            logger.exception("request to %s failed", request.url.path)
            if tenant in self.routes:
                self._log(tenant, version, route, 500, started, [None], [], [None])
            return JSONResponse({"error": "internal error"}, 500, headers=headers)
        self._log(tenant, version, route, 200, started, customer_ids, matrix, predictions)
        shadow = tenant_route.shadow_version()
        if shadow and route == prediction_log.PRODUCTION_ROUTE:
            self.shadows.add(task := asyncio.create_task(
                self._shadow(tenant, shadow, customer_ids, matrix)))
            task.add_done_callback(self.shadows.discard)
        return response

    @staticmethod
    def _pick(route: Route, tenant: str, staging: bool, key: Any) -> tuple[str, str]:
        """The version and route name a request gets: stages mean access."""
        if staging:
            if route.staging is None:
                raise RequestError(404, f"tenant {tenant!r} has no Staging version")
            return route.staging, prediction_log.STAGING_ROUTE
        try:
            return route.pick(tenant, None if key is None else str(key))
        except RouteError as exc:
            raise RequestError(503, str(exc)) from None

    async def _model(self, tenant: str, version: str) -> torch.nn.Module:
        try:
            return await self.get_model(f"{tenant}/{version}")
        except Exception as exc:  # noqa: BLE001 - this tenant's model only; others serve
            logger.exception("model %s/%s failed to load", tenant, version)
            # a refusal (stage, lineage) says why; anything else only what kind of failure
            why = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            raise RequestError(503, f"model version {version} of tenant {tenant!r} "
                                    f"failed to load: {why}") from None

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

    async def _shadow(self, tenant: str, version: str, customer_ids: list,
                      matrix: list[list[float]]) -> None:
        """Staging's answer to a production request, logged beside it; never returned."""
        started = time.perf_counter()
        try:
            model = await self._model(tenant, version)
            with torch.no_grad():
                predictions = model(torch.tensor(matrix, dtype=torch.float32)).tolist()
        except Exception:  # noqa: BLE001 - a failing shadow is logged, production unharmed
            logger.exception("shadow %s/%s failed", tenant, version)
            self._log(tenant, version, prediction_log.SHADOW_ROUTE, 500, started, [None], [],
                      [None])
            return
        self._log(tenant, version, prediction_log.SHADOW_ROUTE, 200, started, customer_ids,
                  matrix, predictions)

    def _log(self, tenant: str, version: str | None, route: str | None, status: int,
             started: float, customer_ids: list, matrix: list, predictions: list) -> None:
        self._buffer(tenant).add(version, route, status, (time.perf_counter() - started) * 1000,
                                 customer_ids, matrix, predictions)
