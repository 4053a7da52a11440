"""Monitoring on a schedule: every deployed tenant, traffic or not, once per tick."""

from datetime import UTC, datetime

import dagster as dg

from ml_assets import names
from ml_assets_testing.chain import chain

monitoring_schedule = chain().schedule("monitoring_schedule")

def test_the_schedule_monitors_the_deployed_tenants_in_one_run_per_block():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex", "initech", "umbrella"])
        for tenant in ("acme", "initech", "umbrella"):
            instance.report_runless_asset_event(dg.AssetMaterialization(
                ["churn", names.DEPLOYED_ENDPOINT], partition=tenant))
        instance.report_runless_asset_event(dg.AssetMaterialization(
            ["churn", names.REGISTERED_MODEL], partition="globex"))  # registered, never deployed
        tick = datetime(2026, 11, 30, 2, 5, tzinfo=UTC)
        with dg.build_schedule_context(instance=instance,
                                       scheduled_execution_time=tick) as context:
            requests = monitoring_schedule(context)
    # globex in between is not deployed: acme alone, then initech and umbrella in one run
    assert [(r.partition_key, r.run_key, r.tags[names.TRIGGER_TAG],
             r.tags.get("dagster/asset_partition_range_start"),
             r.tags.get("dagster/asset_partition_range_end")) for r in requests] == [
        ("acme", "20261130T0205:acme", "schedule", None, None),
        (None, "20261130T0205:initech...umbrella", "schedule", "initech", "umbrella")]
    assert monitoring_schedule.cron_schedule == "*/5 * * * *"
    assert monitoring_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
