"""A tenant that failed in a run over many tenants is retried alone: the many-tenant run
finished the others, and Dagster can mark a partition failed only by a run that fails (a
single-run backfill records every partition of its range as materialized)."""

import time
from datetime import UTC, datetime

import dagster as dg

from ml_assets import names
from ml_assets.defs.tenant_runs import failed_tenants

RETRY_OF_TAG = "ml_assets/retry_of"  # the many-tenant run a tenant's own run retries
RETRY = "tenant_retry"


def retry_requests(run: dg.DagsterRun) -> list[dg.RunRequest]:
    """One run per failed tenant of `run`, for exactly the assets that failed or skipped it."""
    by_tenant: dict[str, list[str]] = {}
    for asset, tenants in failed_tenants(run).items():
        for tenant in tenants:
            by_tenant.setdefault(tenant, []).append(asset)
    return [dg.RunRequest(
        run_key=f"{run.run_id}:{tenant}", partition_key=tenant,
        asset_selection=[dg.AssetKey.from_user_string(a) for a in sorted(assets)],
        tags={RETRY_OF_TAG: run.run_id, names.TRIGGER_TAG: RETRY})
        for tenant, assets in sorted(by_tenant.items())]


@dg.sensor(
    name="tenant_retry_sensor",
    asset_selection=dg.AssetSelection.all(),
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a run over many tenants, runs each tenant that failed in it alone, "
    "for the assets it failed: a passing failure heals, a lasting one fails the tenant's own "
    "partition in Dagster (the many-tenant run marked it materialized).",
)
def tenant_retry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    if context.cursor is None:  # the first tick starts from now: earlier runs are history
        return dg.SensorResult(cursor=str(time.time()))
    since = datetime.fromtimestamp(float(context.cursor), UTC)
    finished = context.instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
                      updated_after=since),
        limit=500, order_by="update_timestamp", ascending=True)
    requests = [request for record in finished for request in retry_requests(record.dagster_run)
                if RETRY_OF_TAG not in record.dagster_run.tags]  # a retry is not retried
    newest = max((r.update_timestamp.timestamp() for r in finished), default=float(
        context.cursor))
    # run keys make a run seen twice (same update time) ask for its retries once
    return dg.SensorResult(run_requests=requests, cursor=str(newest))
