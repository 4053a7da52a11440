"""The per-tenant prediction log: every served row, appended as parquet under the tenant prefix.

One row per scored feature row (a failed request is one row with null features and prediction),
so drift reads rows while latency and error rate read requests (`request_id`).
Written by the Serve replica off the request path; read by monitoring.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_assets.schema import FEATURES
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    import pyarrow as pa

    from ml_assets.data.object_store import ObjectStoreClient

LOG_DIR = "predictions"
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
    """Append records (dicts with the schema's columns) as one new parquet file; its key."""
    import pyarrow as pa

    wrong = {r["tenant"] for r in records} - {tenant.key}
    if wrong:
        raise ValueError(f"records of tenants {sorted(wrong)} in the log of {tenant.key!r}")
    return write_table(store, tenant, pa.Table.from_pylist(records, schema=schema()))


def write_buffer(store: ObjectStoreClient, buffer: LogBuffer) -> str:
    """Write a replica's buffered rows of one tenant as one new parquet file; its key."""
    return write_table(store, Tenant(buffer.tenant), buffer.table())


def write_table(store: ObjectStoreClient, tenant: Tenant, table: pa.Table) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    now = datetime.now(UTC)
    key = f"{LOG_DIR}/date={now:%Y-%m-%d}/{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.put_bytes(tenant, key, sink.getvalue().to_pybytes())
    return key


def read(store: ObjectStoreClient, tenant: Tenant, columns: list[str] | None = None,
         since: datetime | None = None) -> pa.Table:
    """The tenant's logged rows (only `columns`), optionally those at or after `since`."""
    import pyarrow.dataset as ds

    files = [store.path(tenant, key) for key in store.list(tenant, LOG_DIR)
             if key.endswith(".parquet")]
    dataset = ds.dataset(files, schema=schema(), format="parquet",
                         filesystem=store.filesystem())
    where = None if since is None else ds.field("ts") >= since
    return dataset.to_table(columns=columns, filter=where)
