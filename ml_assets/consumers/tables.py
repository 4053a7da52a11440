"""The platform database the consumers write and the ML Service reads: every sink's tables, the
consumers' offsets beside them, and the one insert that makes a redelivered event a no-op."""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

METADATA = MetaData()
# sqlite only autoincrements an INTEGER primary key
SEQ = BigInteger().with_variant(Integer(), "sqlite")


def _time() -> DateTime:
    return DateTime(timezone=True)


# where each consumer group is in each partition: written in the transaction of its rows
consumer_offsets = Table(
    "consumer_offsets", METADATA,
    Column("group_id", String(64), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", _time(), nullable=False),
)

audit_events = Table(
    "audit_events", METADATA,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("tenant", String(40), nullable=False),
    Column("time", _time(), nullable=False),
    Column("source", String(255), nullable=False),
    Column("data", JSON, nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("consumed_at", _time(), nullable=False),
    Index("audit_events_tenant_time", "tenant", "time"),
)

# the events the catalog applied: its idempotency by event id
catalog_events = Table(
    "catalog_events", METADATA,
    Column("event_id", String(64), primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("applied_at", _time(), nullable=False),
)

catalog_versions = Table(
    "catalog_versions", METADATA,
    Column("tenant", String(40), primary_key=True),
    Column("version", String(20), primary_key=True),
    Column("model", String(255)),
    Column("stage", String(20)),
    Column("stage_since", _time()),  # time of the event that set `stage`: older ones lose
    Column("stage_event", String(64)),
    Column("run_id", String(64)),
    Column("lineage", JSON, nullable=False),
    Column("registered_at", _time()),
    Column("deployed_at", _time()),
    Column("endpoint_url", Text),
    Column("rolled_back_at", _time()),
    Column("updated_at", _time(), nullable=False),
)

# what training events say about a run; versions join it by run_id (either may come first)
catalog_runs = Table(
    "catalog_runs", METADATA,
    Column("tenant", String(40), primary_key=True),
    Column("run_id", String(64), primary_key=True),
    Column("metrics", JSON, nullable=False),
    Column("lineage", JSON, nullable=False),
    Column("updated_at", _time(), nullable=False),
)

notifications = Table(
    "notifications", METADATA,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("tenant", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("time", _time(), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("summary", Text, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", _time(), nullable=False),
    # pending, delivered (every receiver of the tenant took it) or stale (too old when read)
    Column("status", String(16), nullable=False),
    Column("delivered_at", _time()),
    Column("delivered_to", JSON, nullable=False),  # the receivers that took it so far
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", _time()),
    Column("last_error", Text),
    Index("notifications_pending", "status", "seq"),
)


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A time to store or compare: UTC (sqlite keeps the wall time and drops the offset)."""
    return value.astimezone(UTC) if value.tzinfo is not None else value


def utc(value: datetime | None) -> datetime | None:
    """A time read back as aware UTC (sqlite hands back naive values)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@functools.cache
def engine(url: str) -> Engine:
    """One pooled engine per URL and process, its tables created on first use."""
    created = create_engine(url, pool_pre_ping=True)
    if created.dialect.name == "sqlite":
        from sqlalchemy import event

        @event.listens_for(created, "connect")
        def _wal(connection, _record) -> None:
            # the API reads while a consumer writes: WAL, and wait for the writer's lock
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA busy_timeout=30000")

    try:
        METADATA.create_all(created)
    except DBAPIError:
        # two processes creating the tables at once: the other one won, the tables are there
        log.info("platform tables created concurrently; checking again")
        METADATA.create_all(created)
    return created


def insert_new(conn: Connection, table: Table, row: dict[str, Any], key: str) -> bool:
    """Insert the row unless one with the same `key` value exists; whether it was new. The
    unique constraint decides, so a redelivered event is a no-op even across processes."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = (insert(table).values(row).on_conflict_do_nothing(index_elements=[key])
                 .returning(table.c[key]))
    return conn.execute(statement).first() is not None


def stored_offsets(conn: Connection, group: str, topic: str) -> dict[int, int]:
    """partition -> the next offset the group reads."""
    rows = conn.execute(select(consumer_offsets.c.partition, consumer_offsets.c.next_offset)
                        .where(consumer_offsets.c.group_id == group,
                               consumer_offsets.c.topic == topic))
    return {partition: offset for partition, offset in rows}


def save_offsets(conn: Connection, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Upsert the group's next offsets (inside the caller's transaction)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    for partition, next_offset in offsets.items():
        statement = insert(consumer_offsets).values(
            group_id=group, topic=topic, partition=partition, next_offset=next_offset,
            updated_at=now())
        conn.execute(statement.on_conflict_do_update(
            index_elements=["group_id", "topic", "partition"],
            set_={"next_offset": statement.excluded.next_offset,
                  "updated_at": statement.excluded.updated_at}))


def progress(conn: Connection) -> list[str]:
    """One line per consumer group and topic (its next offsets summed over its partitions,
    when it last committed), and the notifications by status: `ml-assets consumer status`."""
    from sqlalchemy import func

    o, n = consumer_offsets, notifications
    lines = [f"{group:<13} {topic:<20} at {int(read):>9} ({count} partitions), committed "
             f"{utc(last):%Y-%m-%d %H:%M:%S}Z"
             for group, topic, read, count, last in conn.execute(
                 select(o.c.group_id, o.c.topic, func.sum(o.c.next_offset), func.count(),
                        func.max(o.c.updated_at))
                 .group_by(o.c.group_id, o.c.topic).order_by(o.c.group_id, o.c.topic))]
    statuses = dict(conn.execute(select(n.c.status, func.count()).group_by(n.c.status)).all())
    if statuses:
        lines.append("notifications " + ", ".join(f"{statuses[s]} {s}" for s in sorted(statuses)))
    return lines or ["no consumer has read anything yet"]
