"""The tenant's live HTTP endpoint: a route on the one multi-tenant Ray Serve application."""

import time
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from ml_assets import names
from ml_assets.access.keys import Role, temporary_token
from ml_assets.defs.scope import tenant_of, use_case_asset, use_case_of
from ml_assets.events import EventType
from ml_assets.registry import lineage, stages
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.feast import FeastStore
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.ray import RayCluster, ServeEndpoint
from ml_assets.serving.client import input_example, post_json
from ml_assets.serving.routing import (
    ENGINE_HEADER,
    RAY,
    TRITON,
    VERSION_HEADER,
    Route,
    get_route,
    set_route,
)
from ml_assets.tenants import Tenant
from ml_assets.use_case import UseCase


class DeployConfig(dg.Config):
    """How much traffic the Staging version gets beside Production, how hard to smoke-test."""

    canary_weight: int | None = Field(
        None, ge=0, le=100,
        description="percent of request keys sent to the Staging version; 0 aborts a canary, "
        "100 promotes it; default: keep the tenant's current weight")
    shadow: bool | None = Field(
        None, description="Staging also scores every production request, logged, never "
        "returned; default: keep the tenant's current setting")
    smoke_requests: int = Field(20, ge=1, le=1000)


def plausible(prediction: object, declared: UseCase) -> bool:
    """A probability for a binary label, a finite number for a regression one."""
    import math

    if not isinstance(prediction, int | float) or not math.isfinite(prediction):
        return False
    return 0.0 <= prediction <= 1.0 if declared.binary else True


def servable(client, tenant: Tenant, stage: str) -> str | None:
    """The version holding the stage, if any; its lineage verified (else it is not served)."""
    version = stages.version_with_alias(client, tenant, stage)
    if version is None:
        return None
    lineage.verify(client, tenant, version)
    return str(version.version)


def wait_until_routed(url: str, token: str, expected: set[str], row: dict,
                      timeout_s: float = 30, engine: str | None = None) -> None:
    """Until the endpoint answers with the new route (replicas pick it up by long-poll): one of
    the `expected` versions, scored by `engine` if given."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, headers, body = post_json(url, {"rows": [row]}, token=token)
        if status == 200 and headers.get(VERSION_HEADER) in expected and (
                engine is None or headers.get(ENGINE_HEADER) == engine):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} still answers {status} {headers.get(VERSION_HEADER)} "
                               f"({headers.get(ENGINE_HEADER)}) {body} after {timeout_s} s; "
                               f"expected versions {expected}, engine {engine}")
        time.sleep(0.1)


def start_serve(serve_endpoint: ServeEndpoint) -> None:
    """Start Serve on the connected cluster, with the endpoint's proxy and controller env,
    unless it runs."""
    from ray import serve

    env = serve_endpoint.controller_env()  # applies when this call starts the controller
    serve.start(http_options={"host": serve_endpoint.host, "port": serve_endpoint.port},
                controller_options={"runtime_env": {"env_vars": env}} if env else None)


def ensure_app(feast: FeastStore, object_store: ObjectStore,
               serve_endpoint: ServeEndpoint) -> None:
    """Start the one multi-tenant Serve application unless it runs: tenants share it."""
    from ray import serve

    from ml_assets.serving.app import APP_NAME, ModelService
    from ml_assets.serving.request import ROUTE_PREFIX

    start_serve(serve_endpoint)
    app = serve.status().applications.get(APP_NAME)
    if app is None or app.status != "RUNNING":
        # plain config: resources carry runtime state (locks) that does not pickle
        serve.run(ModelService.bind(feast.model_dump(), object_store.model_dump(),
                                    **serve_endpoint.replica_config()),
                  name=APP_NAME,
                  route_prefix=ROUTE_PREFIX)


def direct_ingress_port(app_name: str, timeout_s: float = 10) -> int | None:
    """The port the app's replica serves HTTP on itself (Serve's direct ingress), or None when
    the Serve controller runs without direct ingress (one started elsewhere, e.g. KubeRay's)."""
    import ray
    from ray.serve._private.common import REPLICA_ID_FULL_ID_STR_PREFIX
    from ray.serve.context import _get_global_client

    # Serve 2.60 has no public call for it: the controller's target groups are what its own
    # HAProxy mode routes by. Without direct ingress they hold only the proxies (no app name).
    controller = _get_global_client()._controller
    deadline = time.monotonic() + timeout_s
    while True:
        groups = [g for g in ray.get(controller.get_target_groups.remote(app_name))
                  if g.app_name == app_name and g.protocol == "HTTP"]
        if not groups:
            return None
        ports = [t.port for g in groups for t in g.targets
                 if t.name.startswith(REPLICA_ID_FULL_ID_STR_PREFIX)]
        if ports:
            return ports[0]  # one replica: the app's deployment does not scale out
        if time.monotonic() > deadline:  # a replica still starting: the proxy answers
            return None
        time.sleep(0.2)


def deployed_endpoint(
    context: dg.AssetExecutionContext,
    config: DeployConfig,
    ray: RayCluster,
    mlflow: MlflowRegistry,
    feast: FeastStore,
    object_store: ObjectStore,
    serve_endpoint: ServeEndpoint,
    events: LifecycleEvents,
) -> dg.Output[dict]:
    """The tenant's routes of the use case on the shared Ray Serve app: its Production version
    at POST /v1/{tenant}/{use_case}/predict, its Staging version at
    /v1/{tenant}/{use_case}/staging/predict and optionally as a canary share or shadow of
    production; latest features in the online store; smoke-tested over HTTP (p50/p95 in
    metadata). Only versions with verified lineage
    are served. `url` is the replica's own port under direct ingress, `proxy_url` Serve's."""
    tenant, declared = tenant_of(context), use_case_of(context)
    client = mlflow.client()
    primary = servable(client, tenant, stages.PRODUCTION)
    staging = servable(client, tenant, stages.STAGING)
    if primary is None and staging is None:
        raise stages.StageTransitionError(
            f"tenant {tenant.key!r} has no Staging or Production model version to deploy")
    ray.connect()
    current = get_route(tenant)
    # a rollout in progress goes on for the same Staging version; a new one starts over
    same = current is not None and current.staging == staging
    weight = config.canary_weight if config.canary_weight is not None else (
        current.canary_weight if same and current.canary == staging else 0)
    shadow = config.shadow if config.shadow is not None else bool(same and current.shadow)
    if (weight or shadow) and (primary is None or staging is None or staging == primary):
        raise stages.StageTransitionError(  # before any work
            f"canary weight {weight} / shadow {shadow} for tenant {tenant.key!r} needs a "
            f"Production and a Staging version; it has {primary} and {staging}")
    # Triton holds the version triton_endpoint loaded: a new Production version is served
    # in-process until triton_endpoint loads it (the stage-change sensor runs both)
    on_triton = current is not None and current.engine == TRITON and current.primary == primary
    route = Route(registry_uri=mlflow.tracking_uri, primary=primary, staging=staging,
                  canary=staging if weight else None, canary_weight=weight, shadow=shadow,
                  since=current.since if same else None, paused=same and current.paused,
                  engine=TRITON if on_triton else RAY,
                  triton_url=current.triton_url if on_triton else None)
    served = primary or staging
    rows = input_example(f"models:/{tenant.registered_model_name}/{served}")
    entities = feast.materialize_online(tenant, declared)
    context.log.info(f"tenant {tenant.key}: {entities} {declared.entity.name}s in the online "
                     "store")

    ensure_app(feast, object_store, serve_endpoint)
    set_route(tenant, route)

    from ml_assets.serving.app import APP_NAME  # imported by ensure_app already

    port = direct_ingress_port(APP_NAME) if serve_endpoint.direct_ingress else None
    url, proxy_url = serve_endpoint.url(tenant, port), serve_endpoint.url(tenant)
    smoke_url = url if primary else serve_endpoint.url(tenant, port, staging=True)
    if primary is None:
        context.log.warning(f"tenant {tenant.key}: no Production version; the production "
                            f"route answers 503, Staging {staging} is at {smoke_url}")
    context.log.info(f"tenant {tenant.key}: {url}" + (f" (proxy: {proxy_url})" if port else ""))
    expected = {primary, route.canary} if primary else {staging}
    latencies = []
    with temporary_token(Path(serve_endpoint.api_keys_path), tenant, Role.staging) as token:
        wait_until_routed(smoke_url, token, expected - {None}, rows[0])
        for i in range(config.smoke_requests):
            started = time.perf_counter()
            status, headers, body = post_json(smoke_url, {"rows": [rows[i % len(rows)]],
                                                          "key": f"smoke-{i}"}, token=token)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200 or not plausible(body["predictions"][0], declared):
                raise RuntimeError(f"smoke request to {smoke_url} failed: {status} {body}")
            if headers.get(VERSION_HEADER) not in expected:
                raise RuntimeError(f"{smoke_url} answered with version "
                                   f"{headers.get(VERSION_HEADER)}")
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    stage = stages.PRODUCTION if primary else stages.STAGING
    events.emit(EventType.MODEL_DEPLOYED, tenant, model=tenant.registered_model_name,
                version=served, stage=stage, url=url, staging_version=staging,
                canary=route.canary, canary_weight=route.canary_weight, shadow=shadow)
    return dg.Output(
        {"url": url, "proxy_url": proxy_url, "staging_url": serve_endpoint.url(
            tenant, port, staging=True), "version": primary, "staging_version": staging,
         "stage": stage, "canary": route.canary, "canary_weight": route.canary_weight,
         "shadow": shadow, "engine": route.engine, "sample_row": rows[0]},
        metadata={
            "url": dg.MetadataValue.url(url),
            "ingress": f"direct (replica port {port})" if port else "proxy",
            "version": primary or "",
            "staging_version": staging or "",
            "stage": stage,
            "canary_version": route.canary or "",
            "canary_weight": route.canary_weight,
            "shadow": shadow,
            "engine": route.engine,
            "online_entities": entities,
            "smoke_requests": config.smoke_requests,
            "smoke_p50_ms": dg.MetadataValue.float(p50),
            "smoke_p95_ms": dg.MetadataValue.float(p95),
        },
    )


def build(use_case: UseCase) -> list[dg.AssetsDefinition]:
    return [use_case_asset(use_case, deployed_endpoint, names.DEPLOYED_ENDPOINT, "serving",
                           {"ray", "feast", "kafka"},  # kafka: MODEL_DEPLOYED
                           # reads the registry's state, not the last registration
                           deps=(names.REGISTERED_MODEL,))]
