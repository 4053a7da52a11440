"""The per-tenant prediction log: every served row, appended as parquet under the tenant prefix,
in hour partitions (`predictions/date=D/hour=H/`, by the rows' `ts`) that log_compaction turns
into one file each once the hour is over; a read lists only its window's partitions.

One row per scored feature row (a failed request is one row with null features and prediction),
so drift reads rows while latency and error rate read requests (`request_id`).
Written by the Serve replica off the request path; read by monitoring.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ml_assets.schema import FEATURES
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    import pyarrow as pa

    from ml_assets.data.object_store import ObjectStoreClient

LOG_DIR = "predictions"
# a compacted file: the rows of the files named in its footer (COVERS_KEY), which it replaces
COMPACTED_PREFIX = "compacted-"
COVERS_KEY = b"ml_assets.covers"
CLOCK_SKEW = timedelta(minutes=2)
READ_ATTEMPTS = 3
# production: the Production version on the tenant's route; canary: the Staging version on its
# share of keys; staging: the pre-production route; shadow: Staging's answer to a mirrored
# production request, logged and never returned
PRODUCTION_ROUTE, CANARY_ROUTE, STAGING_ROUTE, SHADOW_ROUTE = (
    "production", "canary", "staging", "shadow")


def schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("request_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("tenant", pa.string()),
            ("model_version", pa.string()),  # null when the request failed before routing
            ("route", pa.string()),  # one of the four routes above
            ("status", pa.int16()),  # the HTTP status of the request
            ("latency_ms", pa.float64()),  # request time inside the replica
            ("customer_id", pa.int64()),
            ("prediction", pa.float64()),
            *[(name, pa.float64()) for name in FEATURES],
        ]
    )


class LogBuffer:
    """One tenant's rows not written yet, kept per request as the replica answered it: the
    request path only appends a tuple; the columns are built, vectorized, when written."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.requests: list[tuple] = []

    def add(self, version: str | None, route: str | None, status: int, latency_ms: float,
            customer_ids: list, matrix: list[list[float]], predictions: list) -> None:
        """A request: one row per prediction (a failed request: [None], no features)."""
        self.requests.append((uuid.uuid4().hex, time.time_ns() // 1000, version, route, status,
                              latency_ms, customer_ids, matrix, predictions))

    def extend(self, other: LogBuffer) -> None:
        self.requests.extend(other.requests)

    def __len__(self) -> int:
        return sum(len(request[-1]) for request in self.requests)

    def table(self) -> pa.Table:
        import numpy as np
        import pyarrow as pa

        counts = np.array([len(r[-1]) for r in self.requests], dtype=np.int64)
        per_request = list(zip(*[r[:6] for r in self.requests], strict=True)) or [()] * 6
        repeated = {name: np.repeat(np.array(values, dtype=object), counts)
                    for name, values in zip(("request_id", "ts", "model_version", "route",
                                             "status", "latency_ms"), per_request, strict=True)}
        width = len(FEATURES)
        features = np.array([row for r in self.requests
                             for row in (r[7] or [[np.nan] * width] * len(r[8]))],
                            dtype=np.float64).reshape(-1, width)
        ids = [r[6][i] if len(r[6]) > i else None
               for r in self.requests for i in range(len(r[8]))]
        columns = {
            **{name: pa.array(values.tolist(), type=schema().field(name).type)
               for name, values in repeated.items()},
            "tenant": pa.array([self.tenant] * int(counts.sum()), pa.string()),
            "customer_id": pa.array(ids, pa.int64()),
            "prediction": pa.array([p for r in self.requests for p in r[8]], pa.float64()),
            **{name: pa.array(features[:, i], mask=np.isnan(features[:, i]))
               for i, name in enumerate(FEATURES)},
        }
        return pa.table({name: columns[name] for name in schema().names}, schema=schema())


def write(store: ObjectStoreClient, tenant: Tenant, records: list[dict[str, Any]]) -> str:
    """Append records (dicts with the schema's columns) as new parquet files; the newest key."""
    import pyarrow as pa

    wrong = {r["tenant"] for r in records} - {tenant.key}
    if wrong:
        raise ValueError(f"records of tenants {sorted(wrong)} in the log of {tenant.key!r}")
    return write_table(store, tenant, pa.Table.from_pylist(records, schema=schema()))


def write_buffer(store: ObjectStoreClient, buffer: LogBuffer) -> str:
    """Write a replica's buffered rows of one tenant as new parquet files; the newest key."""
    return write_table(store, Tenant(buffer.tenant), buffer.table())


def write_table(store: ObjectStoreClient, tenant: Tenant, table: pa.Table) -> str:
    """Write the rows as one new file per hour their `ts` falls in (one, but at an hour's
    turn or for rows kept through a failed flush); the newest key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    now = datetime.now(UTC)
    groups = [(now, table)]
    if table.num_rows:
        hours = pc.fill_null(pc.floor_temporal(table["ts"], unit="hour"),
                             pa.scalar(now, table.schema.field("ts").type))
        distinct = sorted(pc.unique(hours).to_pylist())
        groups = [(distinct[0], table)] if len(distinct) == 1 else [
            (hour, table.filter(pc.equal(hours, pa.scalar(hour, hours.type))))
            for hour in distinct]
    key = ""
    for hour, rows in groups:
        key = f"{hour_dir(hour)}/{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
        store.put_bytes(tenant, key, parquet_bytes(rows))
    return key


def parquet_bytes(table: pa.Table, metadata: dict[bytes, bytes] | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if metadata:
        table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def hour_dir(hour: datetime) -> str:
    """The partition a row logged at `hour` (UTC) lives in: every row of a file under
    predictions/date=D/hour=H has its `ts` in that hour."""
    hour = hour.astimezone(UTC)
    return f"{LOG_DIR}/date={hour:%Y-%m-%d}/hour={hour:%H}"


def window_hours(since: datetime, until: datetime) -> list[datetime]:
    """The hours [since, until) touches, oldest first."""
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < until:
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours


def is_compacted(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith(COMPACTED_PREFIX)


def covers(store: ObjectStoreClient, tenant: Tenant, key: str) -> frozenset[str]:
    """Names of the files (in its partition) whose rows the compacted file at key holds."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(store.path(tenant, key), filesystem=store.filesystem()).metadata
    return frozenset(json.loads(metadata[COVERS_KEY]))


def live_files(store: ObjectStoreClient, tenant: Tenant,
               files: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The listed files a reader takes: a file a compacted file covers is left out, so a
    compaction that stopped before deleting its inputs counts no row twice. Costs a footer
    read only where a compacted file shares its partition with other files."""
    by_dir: dict[str, list[tuple[str, int]]] = {}
    for key, size in files:
        by_dir.setdefault(key.rsplit("/", 1)[0], []).append((key, size))
    live = []
    for entries in by_dir.values():
        compacted = [key for key, _ in entries if is_compacted(key)]
        if not compacted or len(entries) == 1:
            live += entries
            continue
        covered_by = {key: covers(store, tenant, key) for key in compacted}
        covered, chosen = set(), set()
        # largest cover first: a later compaction covers the earlier one it read; of two that
        # raced over overlapping inputs only one is taken
        for key in sorted(compacted, key=lambda k: (-len(covered_by[k]), k)):
            name = key.rsplit("/", 1)[-1]
            if name not in covered and not covered_by[key] & (covered | chosen):
                chosen.add(name)
                covered |= covered_by[key]
        live += [(key, size) for key, size in entries
                 if key.rsplit("/", 1)[-1] not in covered
                 and (not is_compacted(key) or key.rsplit("/", 1)[-1] in chosen)]
    return live


def list_window(store: ObjectStoreClient, tenant: Tenant, since: datetime | None,
                until: datetime | None) -> list[tuple[str, int]]:
    """(key, size) of the files that can hold rows of [since, until): only the partitions of
    the window's hours (a whole day's folder where the window covers the day)."""
    if since is None:
        return [(k, s) for k, s in store.list_sizes(tenant, LOG_DIR) if k.endswith(".parquet")]
    # rows stamped by a replica whose clock runs a little ahead still count as "now"
    until = until or datetime.now(UTC) + CLOCK_SKEW
    hours = window_hours(since, until)
    days: dict[str, list[datetime]] = {}
    for hour in hours:
        days.setdefault(f"{hour:%Y-%m-%d}", []).append(hour)
    prefixes = [[hour_dir(hour)] for day_hours in days.values() if len(day_hours) < 24
                for hour in day_hours]
    prefixes += [[f"{LOG_DIR}/date={day}"] for day, day_hours in days.items()
                 if len(day_hours) == 24]
    files = [entry for prefix in prefixes for entry in store.list_sizes(tenant, *prefix)]
    return sorted(entry for entry in files if entry[0].endswith(".parquet"))


def read(store: ObjectStoreClient, tenant: Tenant, columns: list[str] | None = None,
         since: datetime | None = None, until: datetime | None = None) -> pa.Table:
    """The tenant's logged rows (only `columns`) with `since` <= ts < `until` (either
    optional). Lists only the partitions of the window: its cost follows the window, not the
    log's age. A compaction deleting files under the read is met by listing again."""
    for _ in range(READ_ATTEMPTS - 1):
        try:
            return _read(store, tenant, columns, since, until)
        except OSError:  # S3 says NO_SUCH_KEY as a plain OSError, not FileNotFoundError
            continue
    return _read(store, tenant, columns, since, until)


def _read(store: ObjectStoreClient, tenant: Tenant, columns: list[str] | None,
          since: datetime | None, until: datetime | None) -> pa.Table:
    import pyarrow.dataset as ds

    where = None
    if since is not None:
        where = ds.field("ts") >= since
    if until is not None:
        where = (ds.field("ts") < until) if where is None else where & (ds.field("ts") < until)
    files = live_files(store, tenant, list_window(store, tenant, since, until))
    return read_files(store, tenant, files, columns, where)


def read_files(store: ObjectStoreClient, tenant: Tenant, files: list[tuple[str, int]],
               columns: list[str] | None = None, where=None) -> pa.Table:
    """The rows of these (key, size) files, as one table in the log's schema."""
    import pyarrow.dataset as ds

    filesystem, fmt = store.filesystem(), ds.ParquetFileFormat()
    # the listed size spares a HEAD request per file on S3
    fragments = [fmt.make_fragment(store.path(tenant, key), filesystem, file_size=size)
                 for key, size in files]
    dataset = ds.FileSystemDataset(fragments, schema(), fmt, filesystem)
    return dataset.to_table(columns=columns, filter=where)
