"""One consumer as a process: its sink built from the settings, run until SIGTERM or SIGINT,
which finish the batch in hand (a SIGKILL loses nothing either: see runner)."""

from __future__ import annotations

import logging
import signal
import threading

from ml_assets.consumers import NAMES, tables
from ml_assets.consumers.runner import Consumer, Sink
from ml_assets.events import TOPIC
from ml_assets.settings import Settings


def sink(name: str, settings: Settings) -> Sink:
    """The sink of the consumer called `name`."""
    if name == "audit":
        from ml_assets.consumers.audit import AuditSink

        return AuditSink()
    if name == "catalog":
        from ml_assets.consumers.catalog import CatalogSink

        return CatalogSink()
    if name == "notification":
        from ml_assets.consumers.notification import NotificationSink, receivers

        return NotificationSink(*receivers(settings))
    raise ValueError(f"no consumer {name!r}: one of {', '.join(NAMES)}")


def run(settings: Settings, name: str, topic: str = TOPIC, batch: int = 500,
        stop: threading.Event | None = None) -> int:
    """Run the consumer until stopped (SIGTERM/SIGINT in the main thread); events handled.
    It reads the broker of ML_ASSETS_KAFKA_BOOTSTRAP, or the outbox file when none is set."""
    # no broker configured (the embedded default): the outbox the relay would drain
    consumer = Consumer(sink(name, settings), tables.engine(settings.platform_db_url),
                        settings.kafka_bootstrap, topic=topic, batch=batch,
                        outbox=settings.outbox_path)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return consumer.run(stop)
