"""Compaction and retention of the prediction log, on a local directory and on a real
S3-protocol server: no row lost or counted twice, through crashes and a concurrent writer."""

import threading
from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pytest

from ml_assets.resources.object_store import ObjectStore
from ml_assets.serving import log_compaction, prediction_log
from ml_assets.tenants import Tenant
from ml_assets_testing import synthetic_log
from ml_assets_testing.recording_store import Crash, RecordingStore
from ml_assets_testing.servers import s3_store

ACME, GLOBEX = Tenant("acme"), Tenant("globex")
CHURN = "churn"
NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
HOUR = timedelta(hours=1)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> RecordingStore:
    if request.param == "local":
        base = ObjectStore(root=str(tmp_path / "objects"))
    else:
        bucket = f"log-{tmp_path.name.lower().replace('_', '-')[-40:]}"
        base = s3_store(request.getfixturevalue("s3_endpoint"), bucket)
    base.ensure_bucket()
    return RecordingStore.like(base)


def write_hour(store, tenant: Tenant, hour: datetime, files: int = 3, rows: int = 20,
               seed: int = 0) -> set[str]:
    """`files` replica files of rows logged in the hour `hour` falls in; their request ids."""
    hour, ids = hour.replace(minute=0, second=0, microsecond=0), set()
    for i in range(files):
        table = synthetic_log.generate(tenant.key, synthetic_log.LogSpec(
            requests=rows, seed=seed * 100 + i, end=hour + timedelta(minutes=59), span_s=3000))
        prediction_log.write_table(store, tenant, CHURN, table)
        ids |= set(table["request_id"].to_pylist())
    return ids


def logged_ids(store, tenant: Tenant, **window) -> list[str]:
    return prediction_log.read(store, tenant, CHURN, ["request_id"],
                               **window)["request_id"].to_pylist()


def test_compaction_keeps_every_row_and_its_tenant(store):
    hours = [NOW - timedelta(hours=h) for h in (26, 3, 2)]
    ids = {t.key: set().union(*[write_hour(store, t, h, seed=n + 10 * (t == GLOBEX))
                                for n, h in enumerate(hours)]) for t in (ACME, GLOBEX)}
    before = prediction_log.read(store, ACME, CHURN).sort_by("request_id")
    done = log_compaction.compact(store, ACME, CHURN, now=NOW, lookback_days=2)
    assert len(done.partitions) == 3 and done.files_deleted == 9 and done.rows == 180
    keys = store.list(ACME, prediction_log.log_dir(CHURN))
    assert len(keys) == 3 and all(prediction_log.is_compacted(k) for k in keys)
    after = prediction_log.read(store, ACME, CHURN).sort_by("request_id")
    assert after.equals(before)  # every column of every row, tenant included
    assert set(after["request_id"].to_pylist()) == ids["acme"]
    assert set(pc.unique(after["tenant"]).to_pylist()) == {"acme"}
    assert set(logged_ids(store, GLOBEX)) == ids["globex"]  # globex's log untouched
    assert len(store.list(GLOBEX, prediction_log.log_dir(CHURN))) == 9
    assert log_compaction.compact(store, ACME, CHURN, now=NOW, lookback_days=2).partitions == []


@pytest.mark.parametrize("deleted", [0, 2])
def test_a_crash_before_the_inputs_are_gone_counts_no_row_twice(store, deleted):
    ids = write_hour(store, ACME, NOW - 2 * HOUR, files=4)
    store.crash_deletes_after(deleted)
    with pytest.raises(Crash):
        log_compaction.compact(store, ACME, CHURN, now=NOW)
    store.crash_deletes_after(None)
    keys = store.list(ACME, prediction_log.log_dir(CHURN))
    assert len(keys) == 5 - deleted and sum(map(prediction_log.is_compacted, keys)) == 1
    for window in ({}, {"since": NOW - 3 * HOUR}):
        found = logged_ids(store, ACME, **window)
        assert len(found) == len(ids) and set(found) == ids
    done = log_compaction.compact(store, ACME, CHURN, now=NOW)  # the next run finishes the job
    assert done.partitions == [] and done.files_deleted == 4 - deleted
    assert store.list(ACME, prediction_log.log_dir(CHURN)) == [k for k in keys
                                                        if prediction_log.is_compacted(k)]
    assert sorted(logged_ids(store, ACME)) == sorted(ids)


def test_a_crash_while_writing_the_compacted_file_loses_nothing(store):
    ids = write_hour(store, ACME, NOW - 2 * HOUR)

    def crash(key):
        if prediction_log.is_compacted(key):
            raise Crash("stopped before the compacted file was written")

    store.before_put(crash)
    with pytest.raises(Crash):
        log_compaction.compact(store, ACME, CHURN, now=NOW)
    store.before_put(None)
    assert sorted(logged_ids(store, ACME)) == sorted(ids)
    log_compaction.compact(store, ACME, CHURN, now=NOW)
    assert sorted(logged_ids(store, ACME)) == sorted(ids)


def test_compaction_while_the_replica_keeps_writing(store):
    """A writer thread keeps adding files to the hour being compacted (`now` three hours
    ahead makes the current hour, and the next, closed), and one file lands between listing
    and deleting."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ids, stop = write_hour(store, ACME, hour, files=3, rows=5), threading.Event()

    def replica():
        n = 0
        while not stop.is_set():
            n += 1
            table = synthetic_log.generate(ACME.key, synthetic_log.LogSpec(
                requests=3, seed=1000 + n, end=datetime.now(UTC), span_s=0.001))
            prediction_log.write_table(store, ACME, CHURN, table)
            ids.update(table["request_id"].to_pylist())

    landed = []

    def lands_mid_compaction(key):
        if prediction_log.is_compacted(key) and not landed:
            table = synthetic_log.generate(ACME.key, synthetic_log.LogSpec(
                requests=2, seed=1, end=datetime.now(UTC), span_s=0.001))
            landed.append(prediction_log.write_table(store, ACME, CHURN, table))
            ids.update(table["request_id"].to_pylist())

    store.before_put(lands_mid_compaction)
    writer = threading.Thread(target=replica)
    writer.start()
    try:
        for _ in range(3):
            log_compaction.compact(store, ACME, CHURN, now=hour + 3 * HOUR)
            found = logged_ids(store, ACME)
            assert len(set(found)) == len(found)
    finally:
        stop.set()
        writer.join()
    store.before_put(None)
    found = logged_ids(store, ACME)
    assert landed and sorted(found) == sorted(ids)
    log_compaction.compact(store, ACME, CHURN, now=hour + 3 * HOUR)
    assert [k for k in store.list(ACME, prediction_log.log_dir(CHURN))
            if not prediction_log.is_compacted(k)] == []
    assert sorted(logged_ids(store, ACME)) == sorted(ids)


def test_a_window_read_lists_only_its_hours(store):
    ids = {h: write_hour(store, ACME, NOW - timedelta(hours=h), files=2, seed=h)
           for h in (24 * 20, 30, 2, 1, 0)}
    log_compaction.compact(store, ACME, CHURN, now=NOW, lookback_days=30)
    store.listed.clear()
    since = NOW - timedelta(minutes=150)
    found = logged_ids(store, ACME, since=since, until=NOW)
    expected = [prediction_log.hour_dir(CHURN, NOW - timedelta(hours=h)) for h in (2, 1, 0)]
    assert store.listed == expected
    inside = prediction_log.read(store, ACME, CHURN, ["request_id", "ts"]).filter(
        (pc.field("ts") >= since) & (pc.field("ts") < NOW))
    assert sorted(found) == sorted(inside["request_id"].to_pylist())
    assert set(found) <= ids[2] | ids[1] | ids[0]


def test_a_compaction_between_listing_and_reading_is_read_through(store):
    hour = (NOW - 2 * HOUR).replace(minute=0)
    ids = write_hour(store, ACME, hour, files=4)
    store.after_next_list(lambda: log_compaction.compact(store, ACME, CHURN, now=NOW))
    assert sorted(logged_ids(store, ACME, since=hour, until=hour + HOUR)) == sorted(ids)
    assert len(store.list(ACME, prediction_log.log_dir(CHURN))) == 1
    # the read's files were deleted under it: it listed again and read the compacted file
    assert store.listed.count(prediction_log.hour_dir(CHURN, hour)) == 2


def test_retention_deletes_only_older_days_of_the_tenant(store):
    old, kept = NOW - timedelta(days=10), NOW - timedelta(days=2)
    write_hour(store, ACME, old, files=1)
    kept_ids = write_hour(store, ACME, kept, files=1, seed=1)
    globex_ids = write_hour(store, GLOBEX, old, files=1, seed=2)
    expired = log_compaction.expire(store, ACME, CHURN, retention_days=7, now=NOW)
    assert expired == [f"{prediction_log.log_dir(CHURN)}/date={old:%Y-%m-%d}"]
    assert set(logged_ids(store, ACME)) == kept_ids
    assert set(logged_ids(store, GLOBEX)) == globex_ids
    assert log_compaction.expire(store, ACME, CHURN, retention_days=3, now=NOW) == []
    assert log_compaction.expire(store, ACME, CHURN, retention_days=1, now=NOW) == [
        f"{prediction_log.log_dir(CHURN)}/date={kept:%Y-%m-%d}"]
    assert logged_ids(store, ACME) == [] and set(logged_ids(store, GLOBEX)) == globex_ids
