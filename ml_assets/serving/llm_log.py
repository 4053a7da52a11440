"""The per-tenant LLM request log: one row per answered request (status included, failures
too), appended as parquet under the tenant prefix beside the prediction log (`llm_requests/`),
so the churn model's drift statistics never read LLM traffic."""

from __future__ import annotations

import time
import uuid
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    import pyarrow as pa

    from ml_assets.data.object_store import ObjectStoreClient

LOG_DIR = "llm_requests"


@dataclass
class LlmRecord:
    """One request as the gateway answered it."""

    tenant: str
    endpoint: str | None  # completions / chat/completions; None: refused before routing
    model_version: str | None  # None when refused before routing
    route: str  # production: the only route an LLM has today
    stream: bool
    status: int
    latency_ms: float  # until the last byte was sent
    ttft_ms: float | None  # until the first token's chunk (the whole answer when not streamed)
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_per_s: float | None  # completion tokens over the time spent generating them
    prompt_chars: int | None
    response_chars: int  # bytes of the answer body sent to the caller
    error: str | None = None
    request_id: str = ""
    ts: int = 0  # microseconds since the epoch

    def __post_init__(self) -> None:
        self.request_id = self.request_id or uuid.uuid4().hex
        self.ts = self.ts or time.time_ns() // 1000


def schema() -> pa.Schema:
    import pyarrow as pa

    types = {"tenant": pa.string(), "endpoint": pa.string(), "model_version": pa.string(),
             "route": pa.string(), "stream": pa.bool_(), "status": pa.int16(),
             "latency_ms": pa.float64(), "ttft_ms": pa.float64(), "prompt_tokens": pa.int64(),
             "completion_tokens": pa.int64(), "tokens_per_s": pa.float64(),
             "prompt_chars": pa.int64(), "response_chars": pa.int64(), "error": pa.string(),
             "request_id": pa.string(), "ts": pa.timestamp("us", tz="UTC")}
    return pa.schema([(f.name, types[f.name]) for f in fields(LlmRecord)])


def table(records: list[LlmRecord]) -> pa.Table:
    import pyarrow as pa

    columns = list(zip(*(astuple(r) for r in records), strict=True)) or [()] * len(schema())
    return pa.table({f.name: pa.array(list(values), f.type)
                     for f, values in zip(schema(), columns, strict=True)}, schema=schema())


def write(store: ObjectStoreClient, tenant: Tenant, records: list[LlmRecord]) -> str:
    """Append the tenant's records as one new parquet file; its key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wrong = {r.tenant for r in records} - {tenant.key}
    if wrong:
        raise ValueError(f"records of tenants {sorted(wrong)} in the LLM log of {tenant.key!r}")
    now = datetime.now(UTC)
    key = f"{LOG_DIR}/date={now:%Y-%m-%d}/{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(table(records), sink)
    store.put_bytes(tenant, key, sink.getvalue().to_pybytes())
    return key


def read(store: ObjectStoreClient, tenant: Tenant) -> pa.Table:
    """Every logged request of the tenant."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    files = [store.path(tenant, key) for key in store.list(tenant, LOG_DIR)
             if key.endswith(".parquet")]
    if not files:
        return schema().empty_table()
    return pa.Table.from_batches(
        ds.dataset(files, schema=schema(), format="parquet",
                   filesystem=store.filesystem()).to_batches(), schema=schema())
