"""The tenant's live HTTP endpoint on Ray Serve."""


import json
import time
import urllib.error
import urllib.request

import dagster as dg
import numpy as np
from pydantic import Field

from ml_assets.defs.registry import stages
from ml_assets.events import EventType
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.ray import RayCluster, ServeEndpoint
from ml_assets.tenants import Tenant, tenant_partitions


class DeployConfig(dg.Config):
    """Which version to serve and how hard to smoke-test it."""

    version: str | None = Field(
        None, description="registered version to deploy; default: Production, else Staging")
    smoke_requests: int = Field(20, ge=1, le=1000)


def post_json(url: str, body: dict, timeout: float = 30) -> tuple[int, dict, dict]:
    """(status, headers, json body) of a POST; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, dict(exc.headers), json.loads(raw)
        except json.JSONDecodeError:  # e.g. the Serve proxy's plain-text 404
            return exc.code, dict(exc.headers), {"error": raw.decode(errors="replace")}


def input_example(model_uri: str) -> list[dict]:
    """The rows the model was logged with, as JSON records: the smoke test's requests."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    local = download_artifacts(model_uri)
    example = Model.load(local).load_input_example(local)
    return json.loads(example.to_json(orient="records"))


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


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="serving",
    kinds={"ray"},
    deps=["registered_model"],  # reads the registry's state, not the last registration
)
def deployed_endpoint(
    context: dg.AssetExecutionContext,
    config: DeployConfig,
    ray: RayCluster,
    mlflow: MlflowRegistry,
    serve_endpoint: ServeEndpoint,
    events: LifecycleEvents,
) -> dg.Output[dict]:
    """The tenant's model version live on Ray Serve at POST /v1/{tenant}/predict, smoke-tested
    with real HTTP requests (p50/p95 in metadata). Only Staging or Production versions serve."""
    tenant = Tenant.from_context(context)
    version = version_to_deploy(mlflow.client(), tenant, config.version)
    stage = stages.stage_of(version)
    if stage not in stages.SERVABLE:
        raise stages.StageTransitionError(
            f"version {version.version} of tenant {tenant.key!r} is in stage {stage}; "
            f"only {sorted(stages.SERVABLE)} versions are deployed"
        )
    model_uri = f"models:/{version.name}/{version.version}"
    rows = input_example(model_uri)

    ray.connect()
    from ray import serve

    from ml_assets.serve_app import VERSION_HEADER, ChurnPredictor

    serve.start(http_options={"host": serve_endpoint.host, "port": serve_endpoint.port})
    app = ChurnPredictor.bind(tenant.key, model_uri, str(version.version), mlflow.tracking_uri)
    serve.run(app, name=tenant.serve_app_name, route_prefix=tenant.route_prefix)

    url = serve_endpoint.url(tenant)
    latencies = []
    for i in range(config.smoke_requests):
        started = time.perf_counter()
        status, headers, body = post_json(url, {"rows": [rows[i % len(rows)]]})
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200 or not 0.0 <= body["predictions"][0] <= 1.0:
            raise RuntimeError(f"smoke request to {url} failed: {status} {body}")
        if headers.get(VERSION_HEADER) != str(version.version):
            raise RuntimeError(f"{url} answered with version {headers.get(VERSION_HEADER)}")
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    events.emit(EventType.MODEL_DEPLOYED, tenant, model=version.name,
                version=str(version.version), stage=stage, url=url)
    return dg.Output(
        {"url": url, "version": str(version.version), "stage": stage,
         "app": tenant.serve_app_name, "sample_row": rows[0]},
        metadata={
            "url": dg.MetadataValue.url(url),
            "version": str(version.version),
            "stage": stage,
            "smoke_requests": config.smoke_requests,
            "smoke_p50_ms": dg.MetadataValue.float(p50),
            "smoke_p95_ms": dg.MetadataValue.float(p95),
        },
    )
