"""Lifecycle events through the outbox to a real Kafka-protocol broker: nothing lost."""

import threading
import time
from collections import defaultdict

import dagster as dg
import pytest

from ml_assets.defs.lifecycle.sensors import outbox_relay_sensor
from ml_assets.events import EventType, Outbox, read_events
from ml_assets.resources.events import LifecycleEvents
from ml_assets.tenants import Tenant
from ml_assets_tests.conftest import materialize

TENANTS = [Tenant("acme"), Tenant("globex"), Tenant("initech")]


@pytest.fixture
def running_broker(broker):
    broker.start()
    yield broker
    broker.kill()


def events_resource(tmp_path, broker, topic: str) -> LifecycleEvents:
    return LifecycleEvents(outbox_path=str(tmp_path / "outbox.db"),
                           kafka_bootstrap=broker.bootstrap, topic=topic,
                           step_relay_timeout_s=1.0)


def emit_many(events: LifecycleEvents, n: int) -> None:
    for i in range(n):
        events.emit(EventType.MODEL_TRAINING_COMPLETED, TENANTS[i % len(TENANTS)], seq=i)


def assert_exactly_once_in_tenant_order(events: LifecycleEvents) -> None:
    written = events.outbox().events()
    published = read_events(events.kafka_bootstrap, events.topic)
    assert len(published) == len(written)
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for event in published:
        by_tenant[event.tenant].append(event.id)
    for tenant in {e.tenant for e in written}:
        assert by_tenant[tenant] == [e.id for e in written if e.tenant == tenant]
    assert events.outbox().pending() == []


def test_relay_publishes_every_event_once_in_tenant_order(running_broker, tmp_path):
    events = events_resource(tmp_path, running_broker, "t-roundtrip")
    emit_many(events, 300)
    assert events.relay_pending() == 300
    assert events.relay_pending() == 0
    assert_exactly_once_in_tenant_order(events)


def test_assets_succeed_while_the_broker_is_down_and_events_arrive_later(
        graph, instance, resources, broker, tmp_path):
    events = events_resource(tmp_path, broker, "t-outage")  # the broker is not running
    result = materialize(instance, {**resources, "events": events}, "acme",
                         selection=["registered_model"])
    assert result.success
    waiting = [e.type for _, e in events.outbox().pending()]
    assert waiting == [EventType.MODEL_REGISTERED, EventType.MODEL_STAGE_CHANGED]
    with dg.instance_for_test() as sensor_instance, dg.build_sensor_context(
            instance=sensor_instance, resources={"events": events}) as context:
        assert "unavailable" in outbox_relay_sensor(context).skip_message
        broker.start()
        try:
            assert "published 2 events" in outbox_relay_sensor(context).skip_message
            assert_exactly_once_in_tenant_order(events)
        finally:
            broker.kill()


def test_broker_killed_mid_relay_loses_and_duplicates_nothing(broker, tmp_path):
    broker.start()
    try:
        events = events_resource(tmp_path, broker, "t-crash")
        emit_many(events, 1500)
        outbox = Outbox(events.outbox_path)
        errors: list[BaseException] = []
        killed = threading.Event()

        def slow_relay() -> None:
            from ml_assets.events import producer, relay

            kafka = producer(broker.bootstrap, timeout_s=3)
            while True:
                try:
                    relay(outbox, kafka, events.topic, batch=10, timeout_s=3)
                    return
                except BaseException as exc:  # noqa: BLE001 - the kill is the point
                    if killed.is_set():
                        errors.append(exc)
                        return
                    # before the kill: a broker still settling (a new topic's metadata)

        from ml_assets.events import ensure_topic

        ensure_topic(broker.bootstrap, events.topic)
        worker = threading.Thread(target=slow_relay, daemon=True)
        worker.start()
        deadline = time.monotonic() + 120
        while len(outbox.pending(1500)) > 1000:
            assert worker.is_alive() and time.monotonic() < deadline, "the relay stopped"
            time.sleep(0.005)
        killed.set()
        broker.kill()
        worker.join(timeout=60)
        left = len(outbox.pending(1500))
        assert errors and 0 < left < 1500  # it really died mid-relay
        broker.start()
        assert events.relay_pending() == left
        assert_exactly_once_in_tenant_order(events)
    finally:
        broker.kill()


def test_a_cli_action_relays_its_events_at_once_and_never_waits_past_its_budget(
        broker, tmp_path):
    from ml_assets.cli import relay_events
    from ml_assets.resources import build_resources
    from ml_assets.settings import load_settings

    broker.kill()  # down, whatever an earlier test left
    settings = load_settings({"ML_ASSETS_STATE_DIR": str(tmp_path),
                              "ML_ASSETS_KAFKA_BOOTSTRAP": broker.bootstrap})
    events = build_resources(settings)["events"]
    emitted = events.emit(EventType.MODEL_STAGE_CHANGED, TENANTS[0], version="3")
    started = time.monotonic()
    relay_events(settings)  # the broker is down: the event waits in the outbox
    waited = time.monotonic() - started
    assert waited < events.step_relay_timeout_s + 5, waited  # not kafka-python's 30 s
    assert [e.id for _, e in events.outbox().pending()] == [emitted.id]
    broker.start()
    try:
        relay_events(settings)
        assert events.outbox().pending() == []
        assert emitted.id in {e.id for e in read_events(broker.bootstrap)}
    finally:
        broker.kill()
