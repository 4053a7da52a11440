"""The audit consumer: every lifecycle event, once, in an append-only table a tenant can query
(`GET /v1/tenants/{tenant}/audit`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from ml_assets.consumers import tables
from ml_assets.consumers.runner import Delivered


class AuditSink:
    """Appends each event; one already there (same id) is left as it is."""

    name = "audit"

    def write(self, conn: Connection, batch: list[Delivered]) -> int:
        consumed_at = tables.now()
        new = 0
        for item in batch:
            event = item.event
            new += tables.insert_new(conn, tables.audit_events, {
                "event_id": event.id, "type": event.type.value, "tenant": event.tenant,
                "time": tables.as_utc(event.time), "source": event.source, "data": event.data,
                "topic": item.topic, "partition": item.partition, "offset": item.offset,
                "consumed_at": consumed_at,
            }, key="event_id")
        return new

    def after_commit(self, engine: Engine) -> None:
        pass


def entries(engine: Engine, tenant: str, type: str | None = None,
            since: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The tenant's audited events, oldest first: of one type, at or after `since`."""
    table = tables.audit_events
    query = select(table).where(table.c.tenant == tenant)
    if type is not None:
        query = query.where(table.c.type == type)
    if since is not None:
        query = query.where(table.c.time >= tables.as_utc(since))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(table.c.time, table.c.seq).limit(limit)).mappings()
        return [{"id": row["event_id"], "type": row["type"], "tenant": row["tenant"],
                 "time": tables.utc(row["time"]), "source": row["source"], "data": row["data"],
                 "partition": row["partition"], "offset": row["offset"],
                 "consumed_at": tables.utc(row["consumed_at"])} for row in rows]
