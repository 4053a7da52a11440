"""The resource assets emit lifecycle events through."""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from ml_assets.events import TOPIC, EventType, LifecycleEvent, Outbox, ensure_topic, producer, relay
from ml_assets.tenants import Tenant

log = logging.getLogger(__name__)


class LifecycleEvents(dg.ConfigurableResource):
    """Writes each event to the durable outbox first; relays the outbox to Kafka when a broker
    is configured. A broker outage delays events, it never fails an asset or loses one."""

    outbox_path: str
    kafka_bootstrap: str | None = None
    topic: str = TOPIC
    step_relay_timeout_s: float = 3.0  # after a step: short, the sensor retries the rest

    _outbox: Outbox | None = PrivateAttr(default=None)

    def outbox(self) -> Outbox:
        """One outbox (one sqlite connection) per resource, not one per event."""
        if self._outbox is None:
            self._outbox = Outbox(self.outbox_path)
        return self._outbox

    def emit(self, type: EventType, tenant: Tenant, **data: Any) -> LifecycleEvent:
        return self.outbox().append(LifecycleEvent(type=type, tenant=tenant.key, data=data))

    def relay_pending(self, timeout_s: float = 10.0) -> int:
        """Publish what the outbox holds; raises if the broker cannot be reached."""
        if not self.kafka_bootstrap:
            return 0
        outbox = self.outbox()
        if not outbox.pending(1):
            return 0
        ensure_topic(self.kafka_bootstrap, self.topic, timeout_s=timeout_s)
        kafka = producer(self.kafka_bootstrap, timeout_s)
        try:
            return relay(outbox, kafka, self.topic, timeout_s=timeout_s)
        finally:
            kafka.close(timeout=timeout_s)

    def relay_soon(self) -> int:
        """Relay within the short step budget, never raising: after a step, a CLI action or
        an API call. What the broker did not take waits in the outbox for the relay sensor."""
        try:
            return self.relay_pending(self.step_relay_timeout_s)
        except Exception as exc:  # noqa: BLE001 - the relay sensor drains it later
            log.warning("lifecycle events stay in the outbox for now: %s", exc)
            return 0

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.relay_soon()
