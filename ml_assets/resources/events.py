"""The resource assets emit lifecycle events through."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ml_assets.events import EventType, LifecycleEvent, Outbox
from ml_assets.tenants import Tenant


class LifecycleEvents(dg.ConfigurableResource):
    """Writes each event to the durable outbox; the Kafka relay drains it."""

    outbox_path: str

    def outbox(self) -> Outbox:
        return Outbox(self.outbox_path)

    def emit(self, type: EventType, tenant: Tenant, **data: Any) -> LifecycleEvent:
        return self.outbox().append(LifecycleEvent(type=type, tenant=tenant.key, data=data))
