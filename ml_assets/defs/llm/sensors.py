"""Swap a tenant's served LLM when its Production version changes in MLflow."""

import json

import dagster as dg

from ml_assets import names
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.llm.registry import LlmTenant
from ml_assets.registry import stages
from ml_assets.resources.mlflow import MlflowRegistry

OBSERVER = "llm_production_sensor"


@dg.sensor(
    name=OBSERVER,
    asset_selection=[names.LLM_ENDPOINT],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls the MLflow registry; when a tenant's Production LLM version changes "
    "(a promotion or a rollback) it runs that tenant's llm_endpoint, which starts the new "
    "version's vLLM server, moves the route and stops the old one. llm_endpoint serves only "
    "versions with verified lineage.",
)
def llm_production_sensor(context: dg.SensorEvaluationContext,
                          mlflow: MlflowRegistry) -> dg.SensorResult:
    seen: dict[str, str | None] = json.loads(context.cursor or "{}")
    client = mlflow.client()
    requests = []
    for key in context.instance.get_dynamic_partitions(tenant_partitions.name):
        version = stages.version_with_alias(client, LlmTenant(key), stages.PRODUCTION)
        current = str(version.version) if version else None
        if current is not None and current != seen.get(key):
            # a run key per version: a version already deployed by this sensor is not again
            requests.append(dg.RunRequest(
                run_key=f"{key}:llm-production={current}", partition_key=key,
                asset_selection=[dg.AssetKey(names.LLM_ENDPOINT)],
                tags={"ml_assets/trigger": OBSERVER}))
        seen[key] = current
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
