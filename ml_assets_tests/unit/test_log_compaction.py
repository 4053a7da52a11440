"""The log's hour partitions as the writer lays them out, and compaction run as Dagster runs it:
the hourly schedule's requests and the asset on a local store."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pytest

from ml_assets import names
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.prediction_log import PredictionLogPolicy
from ml_assets.serving import prediction_log
from ml_assets.settings import load_settings
from ml_assets.tenants import Tenant
from ml_assets_testing import synthetic_log
from ml_assets_testing.chain import chain

ACME = Tenant("acme")
CHURN = "churn"


def rows_at(*stamps: datetime) -> pa.Table:
    table = synthetic_log.generate(ACME.key, synthetic_log.LogSpec(requests=len(stamps)))
    ts = pa.array(list(stamps), pa.timestamp("us", tz="UTC"))
    return table.set_column(table.schema.get_field_index("ts"), "ts", ts)


def test_rows_across_an_hour_go_to_the_partition_of_their_hour(tmp_path):
    store = ObjectStore(root=str(tmp_path))
    turn = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    table = rows_at(turn - timedelta(seconds=1), turn, turn + timedelta(minutes=5))
    newest = prediction_log.write_table(store, ACME, CHURN, table)
    keys = store.list(ACME, prediction_log.log_dir(CHURN))
    assert [k.rsplit("/", 1)[0] for k in keys] == ["churn/predictions/date=2026-02-28/hour=23",
                                                   "churn/predictions/date=2026-03-01/hour=00"]
    assert newest == keys[-1]
    late = prediction_log.read(store, ACME, CHURN, ["ts"], since=turn,
                               until=turn + timedelta(hours=1))
    assert late["ts"].to_pylist() == [turn, turn + timedelta(minutes=5)]
    assert prediction_log.read(store, ACME, CHURN).num_rows == 3


def test_window_hours_are_the_hours_the_window_touches():
    start = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
    assert prediction_log.window_hours(start, start + timedelta(minutes=30)) == [
        start.replace(minute=0)]
    assert [h.hour for h in prediction_log.window_hours(start, start + timedelta(hours=2))] == [
        22, 23, 0]


def test_retention_comes_from_the_environment():
    assert load_settings({}).log_retention_days == 30
    assert load_settings({"ML_ASSETS_LOG_RETENTION_DAYS": "7"}).log_retention_days == 7
    for bad in ("0", "-3", "a week"):
        with pytest.raises(ValueError, match="ML_ASSETS_LOG_RETENTION_DAYS"):
            load_settings({"ML_ASSETS_LOG_RETENTION_DAYS": bad})


def test_the_hourly_schedule_asks_one_run_for_every_tenant():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex", "initech"])
        at = datetime(2026, 3, 1, 5, 10, tzinfo=UTC)
        with dg.build_schedule_context(instance=instance,
                                       scheduled_execution_time=at) as context:
            requests = chain().schedule("prediction_log_compaction_schedule")(context)
    (request,) = requests
    assert request.partition_key is None
    assert request.run_key == "2026-03-01T05:acme...initech"
    assert (request.tags["dagster/asset_partition_range_start"],
            request.tags["dagster/asset_partition_range_end"]) == ("acme", "initech")


def test_the_asset_compacts_closed_hours_and_expires_old_days(tmp_path):
    store = ObjectStore(root=str(tmp_path))
    now = datetime.now(UTC)
    # two hours ago: closed, and in the default lookback (yesterday and today)
    closed = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    old = now - timedelta(days=40)
    for stamp in (closed, closed + timedelta(minutes=1), now, old):
        prediction_log.write_table(store, ACME, CHURN, rows_at(stamp))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [ACME.key])
        result = dg.materialize(
            [chain().asset("prediction_log_compaction")], instance=instance, partition_key=ACME.key,
            resources={"object_store": store,
                       "prediction_log_policy": PredictionLogPolicy(retention_days=30)})
    assert result.success
    metadata = result.asset_materializations_for_node(
        names.op_name("churn", names.PREDICTION_LOG_COMPACTION))[
        0].metadata
    assert metadata["hours_compacted"].value == 1 and metadata["files_deleted"].value == 2
    assert metadata["days_expired"].value == f"{old:%Y-%m-%d}"
    keys = store.list(ACME, prediction_log.log_dir(CHURN))
    assert len(keys) == 2 and prediction_log.is_compacted(keys[0]) != (
        prediction_log.is_compacted(keys[1]))
    assert prediction_log.read(store, ACME, CHURN).num_rows == 3


def test_the_sensor_sees_replica_files_of_the_last_two_hours_not_compacted_ones(tmp_path):
    from ml_assets.defs.monitoring.sensors import newest_log_file
    from ml_assets.serving import log_compaction

    store = ObjectStore(root=str(tmp_path))
    now = datetime.now(UTC)
    written = prediction_log.write_table(store, ACME, CHURN, rows_at(now - timedelta(hours=1)))
    assert newest_log_file(store, ACME, now) == written
    assert newest_log_file(store, ACME, now + timedelta(hours=2)) is None
    log_compaction.compact(store, ACME, CHURN, now=now + timedelta(hours=1))
    assert prediction_log.is_compacted(store.list(ACME, prediction_log.log_dir(CHURN))[0])
    assert newest_log_file(store, ACME, now) is None  # no new rows: no monitoring run
