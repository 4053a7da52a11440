"""Monitoring's read of its window over a young and an old prediction log: the same 60-minute
window over 1 day and over 30 days of compacted log, on a local directory and on the S3 server
(moto), against reading as before (listing every file the log holds and filtering by ts).

    python -m bench.monitoring_history [--days 1 30] [--rows-per-hour 2000] [--repeats 5]
"""

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from bench.common import report
from ml_assets.monitoring.window import log_columns
from ml_assets.resources.object_store import ObjectStore
from ml_assets.serving import log_compaction, prediction_log
from ml_assets.tenants import Tenant
from ml_assets_testing import synthetic_log
from ml_assets_testing.recording_store import RecordingStore
from ml_assets_testing.servers import s3_store, start_s3

TENANT = Tenant("bench")
USE_CASE = "churn"
NOW = datetime(2026, 1, 31, 12, 40, tzinfo=UTC)  # window: 11:40-12:40, two hour partitions
WINDOW = timedelta(minutes=60)
FILES_PER_HOUR = 3  # replica files per closed hour before compaction
OPEN_HOUR_FILES = 120  # the current hour: 4 minutes of one replica flushing every 2 s


def shifted(base: pa.Table, start: datetime) -> pa.Table:
    """The base hour's rows moved to the hour starting at `start`."""
    offset = pa.scalar(start - (NOW - timedelta(hours=1)).replace(minute=0), pa.duration("us"))
    return base.set_column(base.schema.get_field_index("ts"), "ts", pc.add(base["ts"], offset))


def write_log(store, days: int, base: pa.Table) -> float:
    """`days` days of closed hours as the replica writes them, compacted, plus the open hour's
    small files; the compaction's seconds per hour."""
    current = NOW.replace(minute=0)
    hours = [current - timedelta(hours=h) for h in range(days * 24, 0, -1)]
    for hour in hours:
        table = shifted(base, hour)
        step = -(-table.num_rows // FILES_PER_HOUR)
        for i in range(FILES_PER_HOUR):
            prediction_log.write_table(store, TENANT, USE_CASE, table.slice(i * step, step))
    started = time.perf_counter()
    log_compaction.compact(store, TENANT, USE_CASE, now=NOW, lookback_days=days)
    per_hour = (time.perf_counter() - started) / len(hours)
    table = shifted(base, current).filter(pc.field("ts") < NOW)
    step = -(-table.num_rows // OPEN_HOUR_FILES)
    for i in range(OPEN_HOUR_FILES):
        prediction_log.write_table(store, TENANT, USE_CASE, table.slice(i * step, step))
    return per_hour


def every_file(store: RecordingStore) -> pa.Table:
    """The read before partitions: every file of the log listed, the window kept by ts."""
    files = [(k, size) for k, size in store.list_sizes(TENANT, prediction_log.log_dir(USE_CASE))
             if k.endswith(".parquet")]
    where = (ds.field("ts") >= NOW - WINDOW) & (ds.field("ts") < NOW)
    return prediction_log.read_files(store, TENANT, USE_CASE, files, log_columns(USE_CASE),
                                    where)


def window_read(store) -> pa.Table:
    """What model_monitoring reads."""
    return prediction_log.read(store, TENANT, USE_CASE, log_columns(USE_CASE),
                               since=NOW - WINDOW, until=NOW)


def measure(stores: dict[int, RecordingStore], read, repeats: int) -> dict[int, dict]:
    """Per log age: median wall and CPU milliseconds of the read, its listings and rows. The
    ages take turns within each repeat: load from other work on the machine falls on all."""
    times = {age: [] for age in stores}
    found = {}
    for store in stores.values():
        read(store)  # warm-up: imports, connections
    for _ in range(repeats):
        for age, store in stores.items():
            store.listed.clear()
            started, started_cpu = time.perf_counter(), time.process_time()
            rows = read(store).num_rows
            times[age].append((time.perf_counter() - started, time.process_time() - started_cpu))
            found[age] = {"rows": rows, "listings": len(store.listed)}
    return {age: {**found[age], "ms": statistics.median(t for t, _ in times[age]) * 1000,
                  "cpu_ms": statistics.median(c for _, c in times[age]) * 1000}
            for age in stores}


def bench_store(name: str, make_store, days: list[int], base: pa.Table, repeats: int) -> list:
    stores, compaction_s = {}, {}
    for age in days:
        stores[age] = RecordingStore.like(make_store(age))
        stores[age].ensure_bucket()
        compaction_s[age] = write_log(stores[age], age, base)
    window = measure(stores, window_read, repeats)
    before = measure(stores, every_file, repeats)
    rows = []
    for age, store in stores.items():
        assert window[age]["rows"] == before[age]["rows"] > 0
        rows.append({"store": name, "log age (days)": age,
                     "files in log": len(store.list(TENANT, prediction_log.log_dir(USE_CASE))),
                     "rows in window": window[age]["rows"], "listings": window[age]["listings"],
                     "window read ms": window[age]["ms"],
                     "vs youngest": window[age]["ms"] / window[days[0]]["ms"],
                     "cpu ms": window[age]["cpu_ms"],
                     "list-everything read ms": before[age]["ms"],
                     "list-everything listings": before[age]["listings"],
                     "compaction ms per hour": compaction_s[age] * 1000})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, nargs="+", default=[1, 30])
    parser.add_argument("--rows-per-hour", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    base = synthetic_log.generate(TENANT.key, synthetic_log.LogSpec(
        requests=args.rows_per_hour, end=NOW.replace(minute=0), span_s=3599))
    endpoint, server = start_s3()
    try:
        with tempfile.TemporaryDirectory() as root:
            rows = bench_store("local", lambda age: ObjectStore(root=f"{root}/{age}"),
                               args.days, base, args.repeats)
            rows += bench_store("s3 (moto)", lambda age: s3_store(endpoint, f"history-{age}"),
                                args.days, base, args.repeats)
    finally:
        server.terminate()
        server.wait(timeout=10)
    youngest = {r["store"]: r for r in rows if r["log age (days)"] == min(args.days)}
    ratios = {r["store"]: f"{r['vs youngest']:.2f}x wall, "
                          f"{r['cpu ms'] / youngest[r['store']]['cpu ms']:.2f}x cpu"
              for r in rows if r["log age (days)"] == max(args.days)}
    report("monitoring_history", ["store", "log age (days)", "files in log", "rows in window",
                                  "listings", "window read ms", "vs youngest", "cpu ms",
                                  "list-everything read ms", "compaction ms per hour"], rows, {
        "window": f"{WINDOW.total_seconds() / 60:.0f} minutes: one compacted hour and the open "
                  f"hour's {OPEN_HOUR_FILES} replica files",
        f"{max(args.days)}-day read vs {min(args.days)}-day read (target <= 1.2x)": ratios,
        "log": f"{args.rows_per_hour:,} rows per hour, {FILES_PER_HOUR} replica files per "
               "closed hour before compaction",
        "repeats (median)": args.repeats,
        "1-minute load average at the end": f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
    })


if __name__ == "__main__":
    main()
