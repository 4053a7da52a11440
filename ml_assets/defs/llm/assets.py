"""The LLM chain per tenant: a Hugging Face model directory registered in MLflow as
`{tenant}-llm` (stages and lineage like any version), and its Production version served on vLLM
behind the tenant's LLM route."""

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from ml_assets import names
from ml_assets.access.keys import Role, temporary_token
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.events import EventType
from ml_assets.llm import deploy
from ml_assets.llm.registry import (
    LlmTenant,
    download_llm,
    log_llm,
    production_llm,
    register_llm,
)
from ml_assets.registry import stages
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.llm import LlmServing
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.object_store import ObjectStore

ACTOR = "dagster:registered_llm"


class LlmRegistrationConfig(dg.Config):
    """Which model directory becomes the tenant's next LLM version, and how far it moves."""

    model_dir: str = Field(description="a Hugging Face format directory (config.json, "
                           "weights, tokenizer) on this machine")
    stage: Literal["None", "Staging", "Production"] = Field(
        "None", description="move the new version this far (its lineage verified on the way)")


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="llm",
    kinds={"mlflow", "kafka"},  # kafka: MODEL_REGISTERED and stage events
)
def registered_llm(context: dg.AssetExecutionContext, config: LlmRegistrationConfig,
                   mlflow: MlflowRegistry, events: LifecycleEvents) -> dg.Output[dict]:
    """A new version of the tenant's LLM (`{tenant}-llm`): the directory logged as a model of
    its own run in the tenant's experiment, registered with lineage tags (run, content hash as
    data version, Dagster run), optionally moved to Staging or Production."""
    tenant = LlmTenant(context.partition_key)
    uri, run_id, data_version = log_llm(mlflow, tenant, Path(config.model_dir),
                                        run_name=f"llm-{context.run_id[:8]}",
                                        tags={"dagster_run_id": context.run_id})
    version = register_llm(mlflow, tenant, uri, run_id, data_version, context.run_id)
    events.emit(EventType.MODEL_REGISTERED, tenant, model=version.name,
                version=str(version.version), run_id=run_id, stage=stages.NONE)
    path = {"None": [], "Staging": [stages.STAGING],
            "Production": [stages.STAGING, stages.PRODUCTION]}[config.stage]
    for stage in path:
        stages.transition(mlflow.client(), events, tenant, version.version, stage,
                          reason=f"registered_llm config stage={config.stage}", actor=ACTOR)
    return dg.Output(
        {"model": version.name, "version": str(version.version), "run_id": run_id,
         "data_version": data_version, "stage": config.stage},
        metadata={"model": version.name, "version": str(version.version), "run_id": run_id,
                  "data_version": data_version, "stage": config.stage,
                  **mlflow.version_links(version.name, str(version.version))})


def smoke_test(url: str, token: str, served_model: str) -> float:
    """One completion through the gateway; its latency (ms). Raises unless it is the version."""
    body = json.dumps({"prompt": "hello", "max_tokens": 4, "temperature": 0}).encode()
    request = urllib.request.Request(url, data=body, headers={
        "authorization": f"Bearer {token}", "content-type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer_body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"smoke request to {url}: {exc.code} {exc.read()[:300]!r}") from None
    if answer_body.get("model") != served_model or not answer_body.get("choices"):
        raise RuntimeError(f"smoke request to {url} answered {answer_body}")
    return (time.perf_counter() - started) * 1000


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="llm",
    kinds={"vllm"},
    deps=[names.REGISTERED_LLM],  # reads the registry's state, not the last registration
)
def llm_endpoint(context: dg.AssetExecutionContext, mlflow: MlflowRegistry,
                 object_store: ObjectStore, llm: LlmServing,
                 events: LifecycleEvents) -> dg.Output[dict]:
    """The tenant's Production LLM on its own vLLM server (OpenAI-compatible), behind
    POST /v1/{tenant}/llm/completions and /v1/{tenant}/llm/chat/completions on the LLM gateway
    (the tenant's key, predict role). A new Production version starts a new server; the route
    moves once it answers and the old server stops. Only versions with verified lineage."""
    tenant = LlmTenant(context.partition_key)
    version = production_llm(mlflow, tenant)
    model_dir = download_llm(mlflow, tenant, version, llm.root / "models")
    started = time.perf_counter()
    route, restarted = deploy.serve_version(llm.options(), llm.routes_path, llm.root / "logs",
                                            tenant, tenant.registered_model_name, version,
                                            model_dir)
    start_s = time.perf_counter() - started
    gateway = deploy.ensure_gateway(
        llm.root, llm.gateway_host, llm.gateway_port,
        deploy.gateway_config(llm.api_keys_path, llm.routes_path, object_store.model_dump(),
                              llm.rate_limit_per_minute, llm.log_flush_s))
    url = llm.url(tenant)
    with temporary_token(Path(llm.api_keys_path), tenant, Role.predict) as token:
        smoke_ms = smoke_test(url, token, route.served_model)
    how = f"started in {start_s:.0f} s" if restarted else "already running"
    context.log.info(f"tenant {tenant.key}: LLM version {version} at {url} ({how})")
    events.emit(EventType.MODEL_DEPLOYED, tenant, model=tenant.registered_model_name,
                version=version, stage=stages.PRODUCTION, url=url, server="vllm")
    return dg.Output(
        {"url": url, "chat_url": llm.url(tenant, "chat/completions"), "gateway": gateway,
         "version": version, "served_model": route.served_model, "vllm_url": route.url},
        metadata={"url": dg.MetadataValue.url(url), "version": version,
                  "served_model": route.served_model, "restarted": restarted,
                  "start_s": dg.MetadataValue.float(start_s),
                  "smoke_ms": dg.MetadataValue.float(smoke_ms)})
