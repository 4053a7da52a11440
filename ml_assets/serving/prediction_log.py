"""The prediction log of each (tenant, use case): every served row, appended as parquet under
the tenant prefix, in hour partitions (`<use_case>/predictions/date=D/hour=H/`, by the rows'
`ts`) that log_compaction turns into one file each once the hour is over; a read lists only its
window's partitions.

One row per scored feature row (a failed request is one row with null features and prediction),
so drift reads rows while latency and error rate read requests (`request_id`). The columns are
the common ones, the entity key as a string (int and string keys both fit) and the use case's
features. A request refused before its use case is known (an undeclared one) is logged in the
tenant's UNROUTED log, which has no feature columns.
Written by the Serve replica off the request path; read by monitoring.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ml_assets.tenants import Tenant
from ml_assets.use_case import UseCase, load

if TYPE_CHECKING:
    import pyarrow as pa

    from ml_assets.data.object_store import ObjectStoreClient

LOG_DIR = "predictions"
# the log of requests naming no declared use case; "_" is outside use-case names
UNROUTED = "_unrouted"
ENTITY_KEY = "entity_key"
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


UseCaseRef = UseCase | str | None  # a declared use case, its name, or None: UNROUTED


def features_of(use_case: UseCaseRef) -> list[str]:
    if use_case is None:
        return []
    return (use_case if isinstance(use_case, UseCase) else load(use_case)).features


def name_of(use_case: UseCaseRef) -> str:
    if use_case is None:
        return UNROUTED
    return use_case.name if isinstance(use_case, UseCase) else load(use_case).name


def log_dir(use_case: UseCaseRef) -> str:
    """The folder, under the tenant's prefix, of the use case's log."""
    return f"{name_of(use_case)}/{LOG_DIR}"


def schema(use_case: UseCaseRef) -> pa.Schema:
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
            ("use_case", pa.string()),
            (ENTITY_KEY, pa.string()),  # str() of the entity key: int and string keys fit
            ("prediction", pa.float64()),
            *[(name, pa.float64()) for name in features_of(use_case)],
        ]
    )


class LogBuffer:
    """One (tenant, use case)'s rows not written yet, kept per request as the replica answered
    it: the request path only appends a tuple; the columns are built, vectorized, when
    written. use_case None: the tenant's UNROUTED log."""

    def __init__(self, tenant: str, use_case: UseCaseRef) -> None:
        self.tenant = tenant
        self.use_case = None if use_case is None else name_of(use_case)
        self.features = features_of(use_case)
        self.requests: list[tuple] = []

    def add(self, version: str | None, route: str | None, status: int, latency_ms: float,
            keys: list, matrix: list[list[float]], predictions: list) -> None:
        """A request: one row per prediction (a failed request: [None], no features); `keys`
        the entity keys of the rows, or [None] when the request gave rows."""
        self.requests.append((uuid.uuid4().hex, time.time_ns() // 1000, version, route, status,
                              latency_ms, keys, matrix, predictions))

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
        width = len(self.features)
        features = np.array([row for r in self.requests
                             for row in (r[7] or [[np.nan] * width] * len(r[8]))],
                            dtype=np.float64).reshape(int(counts.sum()), width)
        ids = [str(r[6][i]) if len(r[6]) > i and r[6][i] is not None else None
               for r in self.requests for i in range(len(r[8]))]
        log_schema = schema(self.use_case)
        columns = {
            **{name: pa.array(values.tolist(), type=log_schema.field(name).type)
               for name, values in repeated.items()},
            "tenant": pa.array([self.tenant] * int(counts.sum()), pa.string()),
            "use_case": pa.array([self.use_case] * int(counts.sum()), pa.string()),
            ENTITY_KEY: pa.array(ids, pa.string()),
            "prediction": pa.array([p for r in self.requests for p in r[8]], pa.float64()),
            **{name: pa.array(features[:, i], mask=np.isnan(features[:, i]))
               for i, name in enumerate(self.features)},
        }
        return pa.table({name: columns[name] for name in log_schema.names}, schema=log_schema)


def write(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
          records: list[dict[str, Any]]) -> str:
    """Append records (dicts with the schema's columns) as new parquet files; the newest key."""
    import pyarrow as pa

    wrong = {r["tenant"] for r in records} - {tenant.key}
    if wrong:
        raise ValueError(f"records of tenants {sorted(wrong)} in the log of {tenant.key!r}")
    return write_table(store, tenant, use_case,
                       pa.Table.from_pylist(records, schema=schema(use_case)))


def write_buffer(store: ObjectStoreClient, buffer: LogBuffer) -> str:
    """Write a replica's buffered rows of one (tenant, use case) as new parquet files; the
    newest key."""
    return write_table(store, Tenant(buffer.tenant), buffer.use_case, buffer.table())


def write_table(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
                table: pa.Table) -> str:
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
        key = f"{hour_dir(use_case, hour)}/{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
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


def hour_dir(use_case: UseCaseRef, hour: datetime) -> str:
    """The partition a row logged at `hour` (UTC) lives in: every row of a file under
    <use_case>/predictions/date=D/hour=H has its `ts` in that hour."""
    hour = hour.astimezone(UTC)
    return f"{log_dir(use_case)}/date={hour:%Y-%m-%d}/hour={hour:%H}"


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


def list_window(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
                since: datetime | None, until: datetime | None) -> list[tuple[str, int]]:
    """(key, size) of the files that can hold rows of [since, until): only the partitions of
    the window's hours (a whole day's folder where the window covers the day)."""
    directory = log_dir(use_case)
    if since is None:
        return [(k, s) for k, s in store.list_sizes(tenant, directory)
                if k.endswith(".parquet")]
    # rows stamped by a replica whose clock runs a little ahead still count as "now"
    until = until or datetime.now(UTC) + CLOCK_SKEW
    hours = window_hours(since, until)
    days: dict[str, list[datetime]] = {}
    for hour in hours:
        days.setdefault(f"{hour:%Y-%m-%d}", []).append(hour)
    prefixes = [[hour_dir(use_case, hour)] for day_hours in days.values() if len(day_hours) < 24
                for hour in day_hours]
    prefixes += [[f"{directory}/date={day}"] for day, day_hours in days.items()
                 if len(day_hours) == 24]
    files = [entry for prefix in prefixes for entry in store.list_sizes(tenant, *prefix)]
    return sorted(entry for entry in files if entry[0].endswith(".parquet"))


def read(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
         columns: list[str] | None = None, since: datetime | None = None,
         until: datetime | None = None) -> pa.Table:
    """The (tenant, use case)'s logged rows (only `columns`) with `since` <= ts < `until`
    (either optional). Lists only the partitions of the window: its cost follows the window,
    not the log's age. A compaction deleting files under the read is met by listing again."""
    for _ in range(READ_ATTEMPTS - 1):
        try:
            return _read(store, tenant, use_case, columns, since, until)
        except OSError:  # S3 says NO_SUCH_KEY as a plain OSError, not FileNotFoundError
            continue
    return _read(store, tenant, use_case, columns, since, until)


def _read(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
          columns: list[str] | None, since: datetime | None,
          until: datetime | None) -> pa.Table:
    import pyarrow.dataset as ds

    where = None
    if since is not None:
        where = ds.field("ts") >= since
    if until is not None:
        where = (ds.field("ts") < until) if where is None else where & (ds.field("ts") < until)
    files = live_files(store, tenant, list_window(store, tenant, use_case, since, until))
    return read_files(store, tenant, use_case, files, columns, where)


def read_files(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
               files: list[tuple[str, int]], columns: list[str] | None = None,
               where=None) -> pa.Table:
    """The rows of these (key, size) files, as one table in the use case's log schema."""
    import pyarrow.dataset as ds

    filesystem, fmt = store.filesystem(), ds.ParquetFileFormat()
    # the listed size spares a HEAD request per file on S3
    fragments = [fmt.make_fragment(store.path(tenant, key), filesystem, file_size=size)
                 for key, size in files]
    dataset = ds.FileSystemDataset(fragments, schema(use_case), fmt, filesystem)
    return dataset.to_table(columns=columns, filter=where)
