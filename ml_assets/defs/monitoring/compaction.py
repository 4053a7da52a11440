"""The prediction log kept cheap to read: hourly compaction and retention, per tenant."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from ml_assets import names
from ml_assets.defs.scope import tenant_of, use_case_asset
from ml_assets.defs.tenant_runs import run_requests
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.prediction_log import PredictionLogPolicy
from ml_assets.serving import log_compaction
from ml_assets.tenants import registered_tenants
from ml_assets.use_case import UseCase


def prediction_log_compaction(context: dg.AssetExecutionContext, object_store: ObjectStore,
                              prediction_log_policy: PredictionLogPolicy) -> dg.MaterializeResult:
    """The tenant's prediction log of the use case with each closed hour compacted into one
    file and the days past the retention deleted: monitoring's read costs its window, not the
    log's age."""
    tenant = tenant_of(context)
    policy = prediction_log_policy
    object_store.check()
    # the use case's log, and the tenant's log of requests that named no use case
    logs = [tenant.use_case, None]
    done = log_compaction.compact_logs(object_store, tenant, logs,
                                            lookback_days=policy.lookback_days,
                                            grace=timedelta(minutes=policy.grace_minutes))
    done.expired = log_compaction.expire_logs(object_store, tenant, logs,
                                                   policy.retention_days)
    return dg.MaterializeResult(metadata={
        "hours_compacted": len(done.partitions),
        "files_read": done.files_read,
        "files_deleted": done.files_deleted,
        "rows_compacted": done.rows,
        "days_expired": ", ".join(d.rsplit("=", 1)[-1] for d in done.expired) or "none",
        "retention_days": policy.retention_days,
    })


def build(use_case: UseCase) -> list:
    compaction = use_case_asset(use_case, prediction_log_compaction,
                                names.PREDICTION_LOG_COMPACTION, "monitoring", {"parquet"},
                                deps=(names.DEPLOYED_ENDPOINT,))  # compacts the log it writes

    @dg.schedule(
        name=f"{use_case.name}_prediction_log_compaction_schedule",
        cron_schedule="10 * * * *",  # past the grace after each hour's end
        target=[compaction],
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every hour, compacts each tenant's closed log hours and applies "
        "retention, every tenant in one run.",
    )
    def compaction_schedule(context: dg.ScheduleEvaluationContext):
        hour = context.scheduled_execution_time or datetime.now(UTC)
        tenants = registered_tenants(context.instance)  # all of them in one run
        return run_requests(tenants, set(tenants), run_key=f"{hour:%Y-%m-%dT%H}",
                            tags={names.TRIGGER_TAG: "schedule"})

    return [compaction, compaction_schedule]
