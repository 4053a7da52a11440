"""Lifecycle events: schema validated on write, durable, ordered, per tenant."""

import pytest
from pydantic import ValidationError

from ml_assets.events import EventType, LifecycleEvent, Outbox
from ml_assets.resources.events import LifecycleEvents
from ml_assets.tenants import Tenant


def test_envelope_fields():
    event = LifecycleEvent(type=EventType.MODEL_REGISTERED, tenant="acme", data={"version": "1"})
    body = event.model_dump(mode="json")
    assert set(body) == {"id", "type", "source", "time", "tenant", "data"}
    assert len(event.id) == 36
    assert body["time"].endswith("Z")


@pytest.mark.parametrize("bad, field", [
    (dict(type="MODEL_EXPLODED", tenant="acme"), "type"),
    (dict(type=EventType.MODEL_DEPLOYED, tenant="Not A Tenant"), "tenant"),
    (dict(type=EventType.MODEL_DEPLOYED, tenant="acme", data={"x": object()}), "data"),
])
def test_invalid_events_are_refused_naming_the_field(bad, field):
    with pytest.raises(ValidationError, match=field):
        LifecycleEvent(**bad)


def test_outbox_keeps_order_survives_reopen_and_filters_by_tenant(tmp_path):
    path = tmp_path / "outbox.db"
    events = LifecycleEvents(outbox_path=str(path))
    written = [
        events.emit(EventType.MODEL_TRAINING_STARTED, Tenant("acme"), run_id="r1"),
        events.emit(EventType.MODEL_TRAINING_STARTED, Tenant("globex"), run_id="r2"),
        events.emit(EventType.MODEL_TRAINING_COMPLETED, Tenant("acme"), run_id="r1"),
    ]
    reopened = Outbox(path)
    assert [e.id for e in reopened.events()] == [e.id for e in written]
    assert [e.data["run_id"] for e in reopened.events("acme")] == ["r1", "r1"]
    assert [e.type for e in reopened.events("globex")] == [EventType.MODEL_TRAINING_STARTED]
    with pytest.raises(ValueError, match="invalid tenant"):
        reopened.events("../acme")


def test_an_event_id_is_written_once(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db")
    event = LifecycleEvent(type=EventType.MODEL_DEPLOYED, tenant="acme")
    outbox.append(event)
    with pytest.raises(Exception, match="UNIQUE"):
        outbox.append(event)
    assert len(outbox.events()) == 1
