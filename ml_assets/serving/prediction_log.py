"""The per-tenant prediction log: every served row, appended as parquet under the tenant prefix.

One row per scored feature row (a failed request is one row with null features and prediction),
so drift reads rows while latency and error rate read requests (`request_id`).
Written by the Serve replica off the request path; read by monitoring.
"""

from __future__ import annotations

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


def write(store: ObjectStoreClient, tenant: Tenant, records: list[dict[str, Any]]) -> str:
    """Append records (dicts with the schema's columns) as one new parquet file; its key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wrong = {r["tenant"] for r in records} - {tenant.key}
    if wrong:
        raise ValueError(f"records of tenants {sorted(wrong)} in the log of {tenant.key!r}")
    now = datetime.now(UTC)
    key = f"{LOG_DIR}/date={now:%Y-%m-%d}/{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    table = pa.Table.from_pylist(records, schema=schema())
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
