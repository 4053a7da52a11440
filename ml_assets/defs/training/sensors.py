"""Retrain a tenant's model when new source data arrives or a monitoring check fails."""

import json
import time

import dagster as dg

from ml_assets import names, use_case
from ml_assets.data.sources import source_names
from ml_assets.defs import tenant_runs
from ml_assets.defs.features.contracts import contract_check_keys
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.defs.scope import key as asset_key
from ml_assets.monitoring import check_history
from ml_assets.resources.feast import FeastStore
from ml_assets.resources.retrain import RetrainPolicy
from ml_assets.tenants import Tenant

RETRAIN = "retrain"
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
          dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def source_version(feast: FeastStore, tenant: Tenant) -> str | None:
    """Size and mtime of the tenant's source files of its use case: changes when new data
    lands; None when the tenant is not enabled for the use case."""
    declared = use_case.load(tenant.use_case)
    paths = [feast.source_path(tenant, declared, name) for name in source_names(declared)]
    if not all(p.exists() for p in paths):
        return None
    return ";".join(f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)


def newest_failed_check(instance: dg.DagsterInstance, tenant: Tenant, checks: list[str],
                        after_id: int) -> tuple[int, str] | None:
    """(record id, check name) of the newest breach of a monitoring check past after_id."""
    newest = None
    for name in checks:
        breaches = [record_id for record_id, evaluation
                    in check_history.evaluations(instance, name, tenant, limit=20,
                                                 failed_only=True)
                    if record_id > after_id and check_history.is_breach(evaluation)]
        if breaches and (newest is None or breaches[0] > newest[0]):
            newest = (breaches[0], name)
    return newest


@dg.sensor(
    name="retrain_sensor",
    asset_selection=[asset_key(u, name) for u in use_case.names()
                     for name in names.RETRAIN_ASSETS],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains a tenant (features -> registered model) when its source data changed "
    "or a drift / error-rate check of its model_monitoring failed; one per cooldown, capped "
    "runs. The tenants due in one tick retrain in one run.",
)
def retrain_sensor(context: dg.SensorEvaluationContext, feast: FeastStore,
                   retrain_policy: RetrainPolicy) -> dg.SensorResult:
    first_tick = context.cursor is None
    cursor: dict[str, dict] = json.loads(context.cursor or "{}")
    active = context.instance.get_runs_count(dg.RunsFilter(
        tags={names.TRIGGER_TAG: RETRAIN}, statuses=ACTIVE))
    now = time.time()
    tenants = context.instance.get_dynamic_partitions(tenant_partitions.name)
    due: dict[str, dict[str, dict]] = {}  # use case -> tenant -> why, and its new state
    for tenant in [Tenant(t, u) for u in use_case.names() for t in tenants]:
        key = f"{tenant.use_case}/{tenant.key}"
        state = cursor.setdefault(key, {"source": None, "check_id": 0, "last_request": 0.0})
        source = source_version(feast, tenant)
        failed = newest_failed_check(context.instance, tenant, retrain_policy.checks,
                                     state["check_id"])
        if first_tick:
            state.update(source=source, check_id=failed[0] if failed else state["check_id"])
            continue
        if failed:
            reason, run_key = f"check {failed[1]} failed", f"{key}:check:{failed[0]}"
        elif source is not None and source != state["source"]:
            reason, run_key = "new source data", f"{key}:source:{source}"
        else:
            continue
        if now - state["last_request"] < retrain_policy.cooldown_minutes * 60:
            context.log.info(f"{key}: {reason}, retrain deferred (cooldown)")
            continue
        due.setdefault(tenant.use_case, {})[tenant.key] = {
            "reason": reason, "run_key": run_key,
            "state": {"source": source, "last_request": now,
                      "check_id": failed[0] if failed else state["check_id"]}}
    requests: list[dg.RunRequest] = []
    for name, chosen in due.items():
        # the tenants due in this tick retrain together: one run per unbroken block of them
        for block in tenant_runs.blocks(tenants, set(chosen)):
            if active + len(requests) >= retrain_policy.max_concurrent:
                context.log.info(f"{name}: {', '.join(block)}: retrain deferred (runs capped)")
                continue
            for tenant in block:
                cursor[f"{name}/{tenant}"].update(chosen[tenant]["state"])
            requests += tenant_runs.run_requests(
                tenants, set(block),
                run_key=tenant_runs.batch_key({t: chosen[t]["run_key"] for t in block}),
                tags={names.TRIGGER_TAG: RETRAIN,
                      names.REASON_TAG: "; ".join(sorted({chosen[t]["reason"] for t in block}))},
                asset_selection=[asset_key(name, k) for k in names.RETRAIN_ASSETS],
                asset_check_keys=contract_check_keys(use_case.load(name)))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
