"""The tenant's Production model on the shared Triton Inference Server, behind the tenant's own
route: the route's engine says Triton, and the Serve replica scores through it."""

import math
import time
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np
from pydantic import Field

from ml_assets import names
from ml_assets.access.keys import Role, temporary_token
from ml_assets.defs.scope import tenant_of, use_case_asset, use_case_of
from ml_assets.defs.serving.assets import (
    direct_ingress_port,
    servable,
    wait_until_routed,
)
from ml_assets.defs.serving.triton import exportable_or_raise
from ml_assets.events import EventType
from ml_assets.registry import stages
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.ray import RayCluster, ServeEndpoint
from ml_assets.resources.triton import TritonServer
from ml_assets.serving.client import input_example, post_json
from ml_assets.serving.routing import ENGINE_HEADER, RAY, TRITON, get_route, set_route
from ml_assets.serving.triton import export_onnx, model_name
from ml_assets.tenants import Tenant
from ml_assets.use_case import UseCase

PARITY_ATOL = 1e-5  # float32 through two runtimes


class TritonEndpointConfig(dg.Config):
    """Whether the tenant's production route is scored by Triton or by the Serve replica."""

    engine: Literal["triton", "ray"] = Field(
        TRITON, description="triton: load the Production version on Triton and route the "
        "production traffic to it; ray: route it back to the replica's in-process model and "
        "unload it from Triton")
    smoke_requests: int = Field(20, ge=1, le=1000)


def checked_parity(repository, tenant: Tenant, version: str, model, rows: list[dict],
                   features: list[str]) -> float:
    """Triton's answer for the rows against the registry's model, before any traffic; the
    largest difference (RuntimeError above PARITY_ATOL)."""
    import torch

    matrix = np.array([[math.nan if r[f] is None else r[f] for f in features] for r in rows],
                      dtype=np.float32)
    served = np.array(repository.infer(tenant, version, matrix))
    with torch.no_grad():
        logged = model(torch.from_numpy(matrix)).numpy()
    worst = float(np.max(np.abs(served - logged)))
    if not worst <= PARITY_ATOL:
        raise RuntimeError(f"Triton's {model_name(tenant)} version {version} differs from the "
                           f"registry's model by {worst} (> {PARITY_ATOL})")
    return worst


def triton_endpoint(
    context: dg.AssetExecutionContext,
    config: TritonEndpointConfig,
    ray: RayCluster,
    mlflow: MlflowRegistry,
    triton: TritonServer,
    serve_endpoint: ServeEndpoint,
    events: LifecycleEvents,
) -> dg.Output[dict]:
    """The tenant's Production version as ONNX on the shared Triton server (model
    `{tenant}-churn`, dynamic batching, explicit model control: loaded, reloaded on a new
    Production version, unloaded), checked against the registry's model, then its production
    route at POST /v1/{tenant}/predict scored by Triton. Only a Production version with
    verified lineage is loaded; `engine: ray` routes back in-process and unloads it."""
    from mlflow import pytorch as mlflow_pytorch  # `import mlflow.x` would rebind `mlflow`

    from ml_assets.serving.app import APP_NAME

    tenant = tenant_of(context)
    repository = triton.repository()
    production = servable(mlflow.client(), tenant, stages.PRODUCTION)
    if production is None:
        if repository.inference_counts(tenant):  # loaded: its version is no longer Production
            repository.unload(tenant)
        raise stages.StageTransitionError(
            f"tenant {tenant.key!r} has no Production model version: Triton serves only "
            "Production")
    ray.connect()
    current = get_route(tenant)
    if current is None or current.primary != production:
        raise stages.StageTransitionError(
            f"tenant {tenant.key!r}'s production route serves version "
            f"{current.primary if current else None}, Production is {production}: "
            "materialize deployed_endpoint first")
    uri = f"models:/{tenant.registered_model_name}/{production}"
    rows = input_example(uri)
    port = direct_ingress_port(APP_NAME) if serve_endpoint.direct_ingress else None
    url = serve_endpoint.url(tenant, port)
    metadata: dict = {"engine": config.engine, "url": dg.MetadataValue.url(url),
                      "version": production, "triton_model": model_name(tenant)}
    if config.engine == RAY:
        set_route(tenant, current.changed(engine=RAY, triton_url=None))
        with temporary_token(Path(serve_endpoint.api_keys_path), tenant, Role.staging) as token:
            wait_until_routed(url, token, {production}, rows[0], engine=RAY)
        repository.unload(tenant)  # no request of ours reaches it any more
        events.emit(EventType.MODEL_DEPLOYED, tenant, model=tenant.registered_model_name,
                    version=production, stage=stages.PRODUCTION, url=url, engine=RAY)
        return dg.Output({"url": url, "version": production, "engine": RAY},
                         metadata=metadata)

    exportable_or_raise(mlflow.client(), tenant, production)
    model = mlflow_pytorch.load_model(uri).eval()
    latencies = []
    with temporary_token(Path(serve_endpoint.api_keys_path), tenant, Role.staging) as token:
        if current.engine == TRITON:
            # never (re)load under traffic: the python backend's stub aborted the server once
            # (boost::interprocess::lock_exception) finalizing a replaced instance while
            # requests arrived; the replica scores in-process meanwhile
            current = current.changed(engine=RAY, triton_url=None)
            set_route(tenant, current)
            wait_until_routed(url, token, {production}, rows[0], engine=RAY)
        started = time.perf_counter()
        # only this version: Triton unloads the others once it is ready
        onnx = export_onnx(model, len(use_case_of(context).features))
        repository.load(tenant, {production: onnx}, triton.backend, triton.python_env)
        load_s = time.perf_counter() - started
        worst = checked_parity(repository, tenant, production, model, rows,
                               use_case_of(context).features)
        set_route(tenant, current.changed(engine=TRITON, triton_url=triton.url))
        context.log.info(f"tenant {tenant.key}: {model_name(tenant)} version {production} on "
                         f"{triton.url} ({load_s:.1f} s), production route {url} on Triton")
        wait_until_routed(url, token, {production}, rows[0], engine=TRITON)
        for i in range(config.smoke_requests):
            began = time.perf_counter()
            status, headers, body = post_json(url, {"rows": [rows[i % len(rows)]]}, token=token)
            latencies.append((time.perf_counter() - began) * 1000)
            if status != 200 or headers.get(ENGINE_HEADER) != TRITON:
                raise RuntimeError(f"smoke request to {url} failed: {status} "
                                   f"{headers.get(ENGINE_HEADER)} {body}")
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    events.emit(EventType.MODEL_DEPLOYED, tenant, model=tenant.registered_model_name,
                version=production, stage=stages.PRODUCTION, url=url, engine=TRITON,
                triton_model=model_name(tenant), backend=triton.backend)
    return dg.Output(
        {"url": url, "version": production, "engine": TRITON, "triton_url": triton.url,
         "triton_model": model_name(tenant), "sample_row": rows[0]},
        metadata={**metadata, "backend": triton.backend,
                  "load_s": dg.MetadataValue.float(load_s),
                  "parity_max_abs_diff": dg.MetadataValue.float(worst),
                  "smoke_p50_ms": dg.MetadataValue.float(p50),
                  "smoke_p95_ms": dg.MetadataValue.float(p95)},
    )


def build(use_case: UseCase) -> list[dg.AssetsDefinition]:
    return [use_case_asset(use_case, triton_endpoint, names.TRITON_ENDPOINT, "serving",
                           {"triton", "onnx", "kafka"},  # kafka: MODEL_DEPLOYED
                           # the tenant's route, which this switches to Triton
                           deps=(names.DEPLOYED_ENDPOINT,))]
