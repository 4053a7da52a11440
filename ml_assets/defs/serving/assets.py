"""The tenant's live HTTP endpoint: a route on the one multi-tenant Ray Serve application."""

import time

import dagster as dg
import numpy as np
from pydantic import Field

from ml_assets import names
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.events import EventType
from ml_assets.registry import stages
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.feast import FeastStore
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.ray import RayCluster, ServeEndpoint
from ml_assets.serving.client import input_example, post_json
from ml_assets.serving.routing import VERSION_HEADER, Route, get_route, set_route
from ml_assets.tenants import Tenant


class DeployConfig(dg.Config):
    """Which version to serve, how much traffic its Staging canary gets, how hard to smoke-test."""

    version: str | None = Field(
        None, description="registered version to deploy; default: Production, else Staging")
    canary_weight: int | None = Field(
        None, ge=0, le=100,
        description="percent of request keys sent to the Staging version; 0 aborts a canary, "
        "100 promotes it; default: keep the tenant's current weight")
    smoke_requests: int = Field(20, ge=1, le=1000)


def version_to_deploy(client, tenant: Tenant, requested: str | None):
    """The requested version, else the tenant's Production version, else its Staging one."""
    if requested:
        return stages.model_version(client, tenant, requested)
    for stage in (stages.PRODUCTION, stages.STAGING):
        version = stages.version_with_alias(client, tenant, stage)
        if version is not None:
            return version
    raise stages.StageTransitionError(
        f"tenant {tenant.key!r} has no Staging or Production model version to deploy")


def canary_version(client, tenant: Tenant, primary: str, weight: int) -> str | None:
    """The Staging version that takes `weight` percent of keys, or None without a canary."""
    if weight == 0:
        return None
    staging = stages.version_with_alias(client, tenant, stages.STAGING)
    if staging is None or str(staging.version) == primary:
        raise stages.StageTransitionError(
            f"canary weight {weight} for tenant {tenant.key!r}, but it has no Staging version "
            f"other than the served version {primary}")
    return str(staging.version)


def wait_until_routed(url: str, route: Route, row: dict, timeout_s: float = 30) -> None:
    """Until the endpoint answers with the new route (replicas pick it up by long-poll)."""
    expected = {route.primary} | ({route.canary} if route.canary_weight else set())
    deadline = time.monotonic() + timeout_s
    while True:
        status, headers, body = post_json(url, {"rows": [row]})
        if status == 200 and headers.get(VERSION_HEADER) in expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} still answers {status} {headers.get(VERSION_HEADER)} "
                               f"{body} after {timeout_s} s; expected versions {expected}")
        time.sleep(0.1)


def ensure_app(feast: FeastStore, object_store: ObjectStore,
               serve_endpoint: ServeEndpoint) -> None:
    """Start the one multi-tenant Serve application unless it runs: tenants share it."""
    from ray import serve

    from ml_assets.serving.app import APP_NAME, ChurnService
    from ml_assets.serving.request import ROUTE_PREFIX

    env = serve_endpoint.controller_env()  # applies when this call starts the controller
    serve.start(http_options={"host": serve_endpoint.host, "port": serve_endpoint.port},
                controller_options={"runtime_env": {"env_vars": env}} if env else None)
    app = serve.status().applications.get(APP_NAME)
    if app is None or app.status != "RUNNING":
        # plain config: resources carry runtime state (locks) that does not pickle
        serve.run(ChurnService.bind(feast.model_dump(), object_store.model_dump()),
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


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="serving",
    kinds={"ray", "feast", "kafka"},  # kafka: MODEL_DEPLOYED
    deps=[names.REGISTERED_MODEL],  # reads the registry's state, not the last registration
)
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
    """The tenant's route on the shared Ray Serve app (POST /v1/{tenant}/predict): its
    Production version (else Staging), optionally a Staging canary on a share of request keys,
    its latest features in the online store; smoke-tested over HTTP (p50/p95 in metadata).
    `url` is the replica's own port under direct ingress, `proxy_url` Serve's proxy."""
    tenant = Tenant(context.partition_key)
    client = mlflow.client()
    version = version_to_deploy(client, tenant, config.version)
    stage = stages.stage_of(version)
    if stage not in stages.SERVABLE:
        raise stages.StageTransitionError(
            f"version {version.version} of tenant {tenant.key!r} is in stage {stage}; "
            f"only {sorted(stages.SERVABLE)} versions are deployed"
        )
    primary = str(version.version)
    if config.canary_weight is not None:  # bad canary config fails before any work
        canary_version(client, tenant, primary, config.canary_weight)
    rows = input_example(f"models:/{version.name}/{primary}")
    customers = feast.materialize_online(tenant)
    context.log.info(f"tenant {tenant.key}: {customers} customers in the online store")

    ray.connect()
    ensure_app(feast, object_store, serve_endpoint)
    current = get_route(tenant)
    weight = config.canary_weight
    if weight is None:
        weight = current.canary_weight if current else 0
    route = Route(registry_uri=mlflow.tracking_uri, primary=primary,
                  canary=canary_version(client, tenant, primary, weight), canary_weight=weight)
    set_route(tenant, route)

    from ml_assets.serving.app import APP_NAME  # imported by ensure_app already

    port = direct_ingress_port(APP_NAME) if serve_endpoint.direct_ingress else None
    url, proxy_url = serve_endpoint.url(tenant, port), serve_endpoint.url(tenant)
    context.log.info(f"tenant {tenant.key}: {url}" + (f" (proxy: {proxy_url})" if port else ""))
    wait_until_routed(url, route, rows[0])
    latencies = []
    for i in range(config.smoke_requests):
        started = time.perf_counter()
        status, headers, body = post_json(url, {"rows": [rows[i % len(rows)]],
                                                "key": f"smoke-{i}"})
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200 or not 0.0 <= body["predictions"][0] <= 1.0:
            raise RuntimeError(f"smoke request to {url} failed: {status} {body}")
        if headers.get(VERSION_HEADER) not in {route.primary, route.canary}:
            raise RuntimeError(f"{url} answered with version {headers.get(VERSION_HEADER)}")
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    events.emit(EventType.MODEL_DEPLOYED, tenant, model=version.name, version=primary,
                stage=stage, url=url, canary=route.canary, canary_weight=route.canary_weight)
    return dg.Output(
        {"url": url, "proxy_url": proxy_url, "version": primary, "stage": stage,
         "canary": route.canary,
         "canary_weight": route.canary_weight, "sample_row": rows[0]},
        metadata={
            "url": dg.MetadataValue.url(url),
            "ingress": f"direct (replica port {port})" if port else "proxy",
            "version": primary,
            "stage": stage,
            "canary_version": route.canary or "",
            "canary_weight": route.canary_weight,
            "online_customers": customers,
            "smoke_requests": config.smoke_requests,
            "smoke_p50_ms": dg.MetadataValue.float(p50),
            "smoke_p95_ms": dg.MetadataValue.float(p95),
        },
    )
