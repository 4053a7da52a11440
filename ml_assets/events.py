"""Lifecycle events: a CloudEvents-style schema and a durable outbox they are written to first.

The outbox is a sqlite table in WAL mode; a relay (the Kafka issue) drains it to `ml.lifecycle`
and marks rows relayed, so a broker outage delays events and never loses them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_validator

from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    from kafka import KafkaProducer

TOPIC = "ml.lifecycle"
SOURCE = "ml_assets"


class EventType(StrEnum):
    MODEL_TRAINING_STARTED = "MODEL_TRAINING_STARTED"
    MODEL_TRAINING_COMPLETED = "MODEL_TRAINING_COMPLETED"
    MODEL_REGISTERED = "MODEL_REGISTERED"
    MODEL_STAGE_CHANGED = "MODEL_STAGE_CHANGED"
    MODEL_DEPLOYED = "MODEL_DEPLOYED"
    MODEL_TRAFFIC_ROUTED = "MODEL_TRAFFIC_ROUTED"
    MODEL_DRIFT_DETECTED = "MODEL_DRIFT_DETECTED"
    MODEL_QUALITY_DEGRADED = "MODEL_QUALITY_DEGRADED"  # latency or error rate over its limit
    CANARY_ROLLED_BACK = "CANARY_ROLLED_BACK"
    MODEL_STAGE_REVERTED = "MODEL_STAGE_REVERTED"  # an alias moved outside onto a refused version


class LifecycleEvent(BaseModel):
    """One event; `id` is what consumers de-duplicate on."""

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: EventType
    source: str = SOURCE
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    tenant: str
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tenant")
    @classmethod
    def _valid_tenant(cls, value: str) -> str:
        return Tenant(value).key

    @field_validator("data")
    @classmethod
    def _json_data(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value)  # fail here, on write, rather than in the relay
        except TypeError as exc:
            raise ValueError(f"event data must be JSON-serializable: {exc}") from exc
        return value


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    relayed_at TEXT
)
"""


class Outbox:
    """Append-only, durable event log on sqlite (WAL, synchronous=FULL: each append is on disk
    when it returns). One connection per Outbox, shared by its threads under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._conn:
            self._conn.execute(_SCHEMA)

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()

    def _write(self, sql: str, rows: list[tuple]) -> None:
        with self._lock, self._conn:
            self._conn.executemany(sql, rows)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def append(self, event: LifecycleEvent) -> LifecycleEvent:
        self._write("INSERT INTO outbox (id, tenant, type, body) VALUES (?, ?, ?, ?)",
                    [(event.id, event.tenant, event.type.value, event.model_dump_json())])
        return event

    def pending_raw(self, limit: int = 500) -> list[tuple[int, str, str]]:
        """(seq, tenant, JSON body) of the oldest events the broker has not acknowledged."""
        return self._read("SELECT seq, tenant, body FROM outbox WHERE relayed_at IS NULL "
                          "ORDER BY seq LIMIT ?", (limit,))

    def pending(self, limit: int = 500) -> list[tuple[int, LifecycleEvent]]:
        return [(seq, LifecycleEvent.model_validate_json(body))
                for seq, _, body in self.pending_raw(limit)]

    def raw_from(self, seq: int, limit: int = 500) -> list[tuple[int, str]]:
        """(seq, JSON body) of events from `seq` on, relayed or not: the consumers' source
        when no broker is configured."""
        return self._read("SELECT seq, body FROM outbox WHERE seq >= ? ORDER BY seq LIMIT ?",
                          (seq, limit))

    def mark_relayed(self, seqs: list[int]) -> None:
        now = datetime.now(UTC).isoformat()
        self._write("UPDATE outbox SET relayed_at = ? WHERE seq = ?", [(now, q) for q in seqs])

    def events(self, tenant: str | None = None) -> list[LifecycleEvent]:
        """Events in the order written, optionally of one tenant only."""
        query, args = "SELECT body FROM outbox", ()
        if tenant is not None:
            query, args = query + " WHERE tenant = ?", (Tenant(tenant).key,)
        rows = self._read(query + " ORDER BY seq", args)
        return [LifecycleEvent.model_validate_json(body) for (body,) in rows]


def producer(bootstrap: str, timeout_s: float = 10.0) -> KafkaProducer:
    """An idempotent producer that waits for every in-sync replica (acks=all)."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_block_ms=int(timeout_s * 1000),
        request_timeout_ms=int(timeout_s * 1000),
    )


def ensure_topic(bootstrap: str, topic: str = TOPIC, partitions: int = 6,
                 timeout_s: float = 10.0) -> None:
    """Create the topic if it is missing (tests, single-machine servers; Strimzi in deploy/)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    # kafka-python's admin client waits 30 s to bootstrap by default: with the broker down a
    # step's relay would stall that long whatever its own budget
    admin = KafkaAdminClient(bootstrap_servers=bootstrap,
                             bootstrap_timeout_ms=int(timeout_s * 1000),
                             request_timeout_ms=int(timeout_s * 1000))
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                          replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def relay(outbox: Outbox, kafka: KafkaProducer, topic: str = TOPIC, batch: int = 500,
          timeout_s: float = 10.0) -> int:
    """Publish pending events in outbox order (key = tenant, so per-tenant order holds) and mark
    each batch relayed only once the broker acknowledged all of it. A crash between the two
    re-sends the batch: consumers de-duplicate by id. Returns how many were published."""
    total = 0
    while pending := outbox.pending_raw(batch):  # validated on write: sent as stored
        futures = [kafka.send(topic, key=tenant.encode(), value=body.encode())
                   for _, tenant, body in pending]
        kafka.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)
        outbox.mark_relayed([seq for seq, _, _ in pending])
        total += len(pending)
    return total


def read_events(bootstrap: str, topic: str = TOPIC, tenant: str | None = None,
                idle_s: float = 2.0) -> list[LifecycleEvent]:
    """Every event on the topic (assigned partitions, from offset 0 until nothing arrives for
    idle_s), de-duplicated by id, optionally one tenant's only, in each partition's order.

    Reads to idle rather than to the end offsets: the tests' broker (tansu 0.6) reports
    end offsets per record batch, not per record."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=int(idle_s * 1000))
    try:
        partitions = [TopicPartition(topic, p)
                      for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        seen: set[str] = set()
        events: list[LifecycleEvent] = []
        for message in consumer:
            event = LifecycleEvent.model_validate_json(message.value)
            if event.id not in seen and (tenant is None or event.tenant == tenant):
                seen.add(event.id)
                events.append(event)
        return events
    finally:
        consumer.close()
