"""Redeploy a tenant's endpoint when its Production or Staging version changes in MLflow; an
alias moved outside ml_assets onto a version that may not serve is moved back."""

import json

import dagster as dg

from ml_assets import names, use_case
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.defs.scope import key as asset_key
from ml_assets.events import EventType
from ml_assets.registry import lineage, stages
from ml_assets.registry.ledger import production_history
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.tenants import Tenant

OBSERVER = "mlflow_stage_change_sensor"
WATCHED = (stages.PRODUCTION, stages.STAGING)


def registry_state(client, tenant: Tenant) -> dict[str, str | None]:
    """The version holding each watched stage's alias."""
    state = {}
    for stage in WATCHED:
        version = stages.version_with_alias(client, tenant, stage)
        state[stage] = str(version.version) if version else None
    return state


def record_outside_move(events: LifecycleEvents, tenant: Tenant, version: str) -> None:
    """A Production move made in the MLflow UI/API: write it to the ledger, once."""
    history = production_history(events.outbox(), tenant)
    current = history[-1] if history and history[-1].until is None else None
    if current is not None and current.version == version:
        return
    if current is not None:
        events.emit(EventType.MODEL_STAGE_CHANGED, tenant, model=tenant.registered_model_name,
                    version=current.version, from_stage=stages.PRODUCTION,
                    to_stage=stages.ARCHIVED, actor=OBSERVER,
                    reason=f"production alias moved to {version} outside ml_assets")
    events.emit(EventType.MODEL_STAGE_CHANGED, tenant, model=tenant.registered_model_name,
                version=version, from_stage=stages.STAGING, to_stage=stages.PRODUCTION,
                actor=OBSERVER, reason="production alias moved outside ml_assets")


def on_triton(instance: dg.DagsterInstance, tenant: Tenant) -> bool:
    """Whether the tenant's last triton_endpoint put its production route on Triton: then a
    new Production version is loaded there too."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=asset_key(tenant.use_case, names.TRITON_ENDPOINT),
        asset_partitions=[tenant.key]),
        limit=1).records
    if not records:
        return False
    engine = records[0].asset_materialization.metadata.get("engine")
    return engine is not None and engine.value == "triton"


def refusal(client, tenant: Tenant, version: str) -> str | None:
    """Why the version may not hold a serving alias (None or Archived before the move, or no
    verified lineage), or None when it may."""
    found = stages.model_version(client, tenant, version)
    tagged = found.tags.get(stages.STAGE_TAG, stages.NONE)
    if tagged in (stages.NONE, stages.ARCHIVED):
        return f"version {version} was {tagged}: never served"
    problems = lineage.problems(client, tenant, found)
    return "; ".join(problems) if problems else None


def revert(client, events: LifecycleEvents, tenant: Tenant, stage: str, version: str,
           previous: str | None, reason: str) -> None:
    """Take the stage's alias off `version` and give it back to `previous` (if any)."""
    name, alias = tenant.registered_model_name, stages.ALIASES[stage]
    client.delete_registered_model_alias(name, alias)
    if previous is not None:
        client.set_registered_model_alias(name, alias, previous)
    events.emit(EventType.MODEL_STAGE_REVERTED, tenant, model=name, version=version,
                stage=stage, restored_version=previous, actor=OBSERVER,
                reason=f"{alias} alias moved outside ml_assets onto a refused version: {reason}")


@dg.sensor(
    name=OBSERVER,
    asset_selection=[asset_key(u, name) for u in use_case.names()
                     for name in (names.DEPLOYED_ENDPOINT, names.TRITON_ENDPOINT)],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls the MLflow registry; when a tenant's Production or Staging version "
    "of a use case changes (through ml_assets or directly in MLflow) it redeploys that "
    "tenant's endpoint of the use case "
    "(and reloads Triton for a tenant served by it). "
    "An alias moved onto a None or Archived version, or one without verified lineage, is "
    "moved back (MODEL_STAGE_REVERTED).",
)
def mlflow_stage_change_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowRegistry,
                               events: LifecycleEvents) -> dg.SensorResult:
    first_tick = context.cursor is None
    seen: dict[str, dict[str, str | None]] = json.loads(context.cursor or "{}")
    client = mlflow.client()
    requests = []
    tenants = context.instance.get_dynamic_partitions(tenant_partitions.name)
    for tenant in [Tenant(t, u) for u in use_case.names() for t in tenants]:
        key = f"{tenant.use_case}/{tenant.key}"
        state = registry_state(client, tenant)
        previous = seen.get(key, {stage: None for stage in WATCHED})
        for stage in WATCHED:
            moved_to = state[stage]
            if moved_to is None or moved_to == previous.get(stage):
                continue
            reason = refusal(client, tenant, moved_to)
            if reason is not None:
                revert(client, events, tenant, stage, moved_to, previous.get(stage), reason)
                context.log.warning(f"tenant {key}: {stage} alias on version {moved_to} "
                                    f"reverted: {reason}")
                state[stage] = previous.get(stage)
        seen[key] = state
        changed = [stage for stage in WATCHED if state[stage] != previous.get(stage)]
        if first_tick or not changed or not any(state.values()):
            continue  # the first tick only learns the state: it was deployed by the graph
        if stages.PRODUCTION in changed and state[stages.PRODUCTION]:
            record_outside_move(events, tenant, state[stages.PRODUCTION])
        selection = [names.DEPLOYED_ENDPOINT]
        if on_triton(context.instance, tenant):  # reloads it, or unloads a lost Production
            selection.append(names.TRITON_ENDPOINT)
        requests.append(dg.RunRequest(
            run_key=f"{key}:" + ",".join(f"{s}={state[s]}" for s in WATCHED),
            partition_key=tenant.key,
            asset_selection=[asset_key(tenant.use_case, name) for name in selection],
            tags={"ml_assets/trigger": OBSERVER},
        ))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
