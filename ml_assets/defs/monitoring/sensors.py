"""Monitor a tenant's model of a use case when new rows land in its prediction log, and every
5 minutes while it is deployed."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from ml_assets import names
from ml_assets.defs.scope import key
from ml_assets.defs.tenant_runs import batch_key, run_requests
from ml_assets.resources.object_store import ObjectStore
from ml_assets.serving import prediction_log
from ml_assets.tenants import Tenant, registered_tenants
from ml_assets.use_case import UseCase


def newest_log_file(object_store: ObjectStore, tenant: Tenant,
                    now: datetime | None = None) -> str | None:
    """The tenant's newest file written by the replica (keys sort by time) in the current or
    the previous hour: new rows land only there, and listing them costs two small listings
    however old the log is. Compacted files bring no new rows and are not counted."""
    now = now or datetime.now(UTC)
    for hour in (now, now - timedelta(hours=1)):
        keys = object_store.list(tenant, prediction_log.hour_dir(tenant.use_case, hour))
        written = [key for key in keys
                   if key.endswith(".parquet") and not prediction_log.is_compacted(key)]
        if written:
            return written[-1]
    return None


def build(use_case: UseCase) -> list:
    monitoring = key(use_case.name, names.MODEL_MONITORING)

    @dg.sensor(
        name=f"{use_case.name}_prediction_log_sensor",
        asset_selection=[monitoring],
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs model_monitoring for the tenants whose prediction log got new files "
        "since the last run, together in one run (at most every 5 minutes).",
    )
    def prediction_log_sensor(context: dg.SensorEvaluationContext,
                              object_store: ObjectStore) -> dg.SensorResult:
        cursor: dict[str, str] = json.loads(context.cursor or "{}")
        tenants = registered_tenants(context.instance)
        fresh = {}
        for tenant in tenants:
            newest = newest_log_file(object_store, Tenant(tenant, use_case.name))
            if newest is not None and newest > cursor.get(tenant, ""):
                fresh[tenant] = cursor[tenant] = newest
        # the tenants with new rows are monitored together: a run per unbroken block of them
        requests = run_requests(tenants, set(fresh), run_key=batch_key(fresh),
                                tags={names.TRIGGER_TAG: "prediction_log"},
                                asset_selection=[monitoring])
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))

    @dg.schedule(
        name=f"{use_case.name}_monitoring_schedule",
        cron_schedule="*/5 * * * *",
        target=[monitoring],
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Runs model_monitoring every 5 minutes for every deployed tenant in one run, "
        "traffic or not: a quiet endpoint gets a probe (serving_alive), so a dead replica "
        "alerts within minutes.",
    )
    def monitoring_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        deployed = context.instance.get_materialized_partitions(
            key(use_case.name, names.DEPLOYED_ENDPOINT))
        tick = f"{context.scheduled_execution_time:%Y%m%dT%H%M}"
        # every deployed tenant in one run (a run per unbroken block of them)
        return run_requests(registered_tenants(context.instance), deployed, run_key=tick,
                            tags={names.TRIGGER_TAG: "schedule"})

    return [prediction_log_sensor, monitoring_schedule]
