"""The consumers on the embedded default (no broker, sqlite platform database): they read the
outbox itself, and a consumer started again reads on from its stored offset."""

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from ml_assets.consumers import catalog, tables
from ml_assets.consumers.audit import AuditSink
from ml_assets.consumers.catalog import CatalogSink
from ml_assets.consumers.runner import OUTBOX_TOPIC, Consumer
from ml_assets.events import Outbox
from ml_assets_testing.lifecycle import interleaved


def run_until(consumer: Consumer, done) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=consumer.run, args=(stop,))
    worker.start()
    try:
        for _ in range(400):
            if done():
                return
            stop.wait(0.025)
        raise AssertionError("the consumer did not catch up within 10 s")
    finally:
        stop.set()
        worker.join(timeout=10)


def test_consumers_read_the_outbox_when_no_broker_is_configured(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db")
    events = interleaved(["acme", "globex"], 5)
    for event in events[:30]:
        outbox.append(event)
    engine = tables.engine(f"sqlite:///{tmp_path / 'platform.db'}")

    def audited() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(tables.audit_events)
                                ).scalar_one()

    def consumer(sink) -> Consumer:
        return Consumer(sink, engine, None, batch=7, poll_s=0.05, outbox=outbox.path)

    run_until(consumer(AuditSink()), lambda: audited() == 30)
    for event in events[30:]:
        outbox.append(event)
    run_until(consumer(AuditSink()), lambda: audited() == len(events))  # on from offset 30
    run_until(consumer(CatalogSink()), lambda: len(catalog.versions(engine, "globex")) == 5)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(select(tables.audit_events.c.event_id))]
        offsets = tables.stored_offsets(conn, "audit", OUTBOX_TOPIC)
    assert sorted(ids) == sorted(e.id for e in events)  # each once
    assert offsets == {0: len(events) + 1}  # the next outbox seq (seq starts at 1)
    assert catalog.versions(engine, "globex")[-1]["stage"] == "Production"


def test_a_notification_a_receiver_missed_is_sent_again_later(tmp_path):
    """Recorded once; the tenant's webhook down: kept pending with the error and a wait; the
    tenant's receiver changed (file) and the wait over: sent once and marked delivered. An
    event days old when read (a first start, a replay) is recorded and never sent."""
    import json
    import time

    from ml_assets.consumers.notification import NotificationSink, receivers
    from ml_assets.consumers.runner import Delivered
    from ml_assets.settings import load_settings
    from ml_assets_testing.alert_servers import WebhookReceiver
    from ml_assets_testing.servers import free_port

    settings = load_settings({"ML_ASSETS_STATE_DIR": str(tmp_path),
                              "ML_ASSETS_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}"})
    engine = tables.engine(settings.platform_db_url)
    sink = NotificationSink(*receivers(settings))
    recent = interleaved(["acme"], 1, start=datetime.now(UTC) - timedelta(minutes=5))
    promoted = [e for e in recent if e.data.get("to_stage") == "Production"]
    batch = [Delivered(e, "t", 0, i) for i, e in enumerate(promoted * 2)]  # sent twice
    replayed = interleaved(["acme"], 1, start=datetime.now(UTC) - timedelta(days=3))[-1]
    with engine.begin() as conn:
        assert sink.write(conn, batch) == 1
        assert sink.write(conn, [Delivered(replayed, "t", 0, 9)]) == 1  # a replayed deployment

    def row() -> dict:
        with engine.connect() as conn:
            return dict(conn.execute(select(tables.notifications).where(
                tables.notifications.c.event_id == promoted[0].id)).mappings().one())
    assert sink.deliver_pending(engine) == 0

    failed = row()
    assert failed["delivered_at"] is None and failed["attempts"] == 1
    assert failed["last_error"].startswith("webhook: <webhook URL>: ")
    assert settings.alert_webhook_url not in failed["last_error"]
    assert failed["delivered_to"] == []
    receiver = WebhookReceiver()
    try:
        settings.alert_receivers_path.write_text(json.dumps(
            {"tenants": {"acme": {"webhook_url": receiver.url + "/acme"}}}))
        assert sink.deliver_pending(engine) == 0  # still waiting out its backoff
        time.sleep(1.1)
        assert sink.deliver_pending(engine) == 1
        assert sink.deliver_pending(engine) == 0  # delivered: never again
        (body,) = receiver.bodies("/acme")
        assert body["alert"]["event_id"] == promoted[0].id
        assert "promoted to Production" in body["text"]
        delivered = row()
        assert delivered["delivered_to"] == ["webhook"] and delivered["delivered_at"]
        assert delivered["status"] == "delivered"
        with engine.connect() as conn:  # the replayed one: recorded, never sent
            stale = conn.execute(select(tables.notifications).where(
                tables.notifications.c.event_id == replayed.id)).mappings().one()
        assert (stale["status"], stale["attempts"], stale["delivered_at"]) == ("stale", 0, None)
    finally:
        receiver.close()


def test_consumer_status_shows_what_each_group_read(tmp_path, monkeypatch, capsys):
    from ml_assets.cli import main

    outbox = Outbox(tmp_path / "outbox.db")
    events = interleaved(["acme"], 2)
    for event in events:
        outbox.append(event)
    monkeypatch.setenv("ML_ASSETS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("ML_ASSETS_PLATFORM_DB", raising=False)
    assert main(["consumer", "status"]) == 0
    assert "no consumer has read anything yet" in capsys.readouterr().out
    engine = tables.engine(f"sqlite:///{tmp_path / 'platform.db'}")

    def committed() -> dict[int, int]:
        with engine.connect() as conn:
            return tables.stored_offsets(conn, "audit", OUTBOX_TOPIC)

    run_until(Consumer(AuditSink(), engine, None, poll_s=0.05, outbox=outbox.path), committed)
    assert main(["consumer", "status"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    # the outbox's next sequence number: it starts at 1
    assert line.split()[:5] == ["audit", "outbox", "at", str(len(events) + 1), "(1"]
