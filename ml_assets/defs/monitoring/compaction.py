"""The prediction log kept cheap to read: hourly compaction and retention, per tenant."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from ml_assets import names
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.prediction_log import PredictionLogPolicy
from ml_assets.serving import log_compaction
from ml_assets.tenants import Tenant, registered_tenants


@dg.asset(
    name=names.PREDICTION_LOG_COMPACTION,
    partitions_def=tenant_partitions,
    group_name="monitoring",
    kinds={"parquet"},
    deps=[names.DEPLOYED_ENDPOINT],  # compacts the log the endpoint writes
)
def prediction_log_compaction(context: dg.AssetExecutionContext, object_store: ObjectStore,
                              prediction_log_policy: PredictionLogPolicy) -> dg.MaterializeResult:
    """The tenant's prediction logs (one per use case) with each closed hour compacted into
    one file and the days past the retention deleted: monitoring's read costs its window, not
    the log's age."""
    tenant = Tenant(context.partition_key)
    policy = prediction_log_policy
    object_store.check()
    done = log_compaction.compact_every_log(object_store, tenant,
                                            lookback_days=policy.lookback_days,
                                            grace=timedelta(minutes=policy.grace_minutes))
    done.expired = log_compaction.expire_every_log(object_store, tenant,
                                                   policy.retention_days)
    return dg.MaterializeResult(metadata={
        "hours_compacted": len(done.partitions),
        "files_read": done.files_read,
        "files_deleted": done.files_deleted,
        "rows_compacted": done.rows,
        "days_expired": ", ".join(d.rsplit("=", 1)[-1] for d in done.expired) or "none",
        "retention_days": policy.retention_days,
    })


@dg.schedule(
    name="prediction_log_compaction_schedule",
    cron_schedule="10 * * * *",  # past the grace after each hour's end
    target=[prediction_log_compaction],
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour, compacts each tenant's closed log hours and applies retention.",
)
def prediction_log_compaction_schedule(context: dg.ScheduleEvaluationContext):
    hour = context.scheduled_execution_time or datetime.now(UTC)
    return [dg.RunRequest(run_key=f"{key}:{hour:%Y-%m-%dT%H}", partition_key=key,
                          tags={names.TRIGGER_TAG: "schedule"})
            for key in registered_tenants(context.instance)]
