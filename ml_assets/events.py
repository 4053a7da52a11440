"""Lifecycle events: a CloudEvents-style schema and a durable outbox they are written to first.

The outbox is a sqlite table in WAL mode; a relay (the Kafka issue) drains it to `ml.lifecycle`
and marks rows relayed, so a broker outage delays events and never loses them.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from contextlib import closing
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from ml_assets.tenants import Tenant

TOPIC = "ml.lifecycle"
SOURCE = "ml_assets"


class EventType(StrEnum):
    MODEL_TRAINING_STARTED = "MODEL_TRAINING_STARTED"
    MODEL_TRAINING_COMPLETED = "MODEL_TRAINING_COMPLETED"
    MODEL_REGISTERED = "MODEL_REGISTERED"
    MODEL_STAGE_CHANGED = "MODEL_STAGE_CHANGED"
    MODEL_DEPLOYED = "MODEL_DEPLOYED"
    MODEL_DRIFT_DETECTED = "MODEL_DRIFT_DETECTED"


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
    """Append-only, durable event log on sqlite (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn, conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def append(self, event: LifecycleEvent) -> LifecycleEvent:
        with closing(self._connect()) as conn, conn:
            conn.execute(
                "INSERT INTO outbox (id, tenant, type, body) VALUES (?, ?, ?, ?)",
                (event.id, event.tenant, event.type.value, event.model_dump_json()),
            )
        return event

    def events(self, tenant: str | None = None) -> list[LifecycleEvent]:
        """Events in the order written, optionally of one tenant only."""
        query, args = "SELECT body FROM outbox", ()
        if tenant is not None:
            query, args = query + " WHERE tenant = ?", (Tenant(tenant).key,)
        with closing(self._connect()) as conn:
            rows = conn.execute(query + " ORDER BY seq", args).fetchall()
        return [LifecycleEvent.model_validate_json(body) for (body,) in rows]
