"""A consumer process: reads `ml.lifecycle` with assigned partitions and hands each polled batch
to its sink; the sink's rows and the group's next offsets commit in one database transaction.

So a crash before the commit re-reads the batch and a crash after it reads on from the stored
offsets: exactly-once rows without the broker's consumer groups (tansu's group subscribe
delivered nothing within 15 s, DESIGN.md). Sinks are idempotent by event id as well, for the
events the relay sends twice."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from ml_assets.consumers import tables
from ml_assets.events import TOPIC, LifecycleEvent

if TYPE_CHECKING:
    from kafka import KafkaConsumer

log = logging.getLogger(__name__)
OUTBOX_TOPIC = "outbox"


@dataclass(frozen=True)
class Delivered:
    """An event with where it was read from."""

    event: LifecycleEvent
    topic: str
    partition: int
    offset: int


class Sink(Protocol):
    """What a consumer writes to. `write` runs inside the offsets' transaction."""

    name: str

    def write(self, conn: Connection, batch: list[Delivered]) -> int:
        """Write the batch's rows; how many rows were new."""
        ...

    def after_commit(self, engine: Engine) -> None:
        """Work that must not hold the transaction open (e.g. sending notifications)."""
        ...


class Consumer:
    """One consumer group reading every partition of the topic into one sink."""

    def __init__(self, sink: Sink, engine: Engine, bootstrap: str | None, topic: str = TOPIC,
                 batch: int = 500, poll_s: float = 0.5, refresh_s: float = 30.0,
                 outbox: Path | None = None) -> None:
        if bootstrap is None and outbox is None:
            raise ValueError("a consumer needs a Kafka bootstrap or an outbox to read")
        self.sink, self.engine, self.bootstrap, self.outbox = sink, engine, bootstrap, outbox
        # the outbox's sequence numbers are not a topic's offsets: stored under their own name
        self.topic = topic if bootstrap else OUTBOX_TOPIC
        self.group = sink.name
        self.batch, self.poll_s, self.refresh_s = batch, poll_s, refresh_s
        self.handled = 0
        self.unmirrored: dict[int, int] = {}  # offsets the broker has not confirmed yet

    def _kafka(self) -> KafkaConsumer:
        if self.bootstrap is None:
            from ml_assets.consumers.outbox_reader import OutboxReader

            return OutboxReader(self.outbox)
        from kafka import KafkaConsumer

        # group_id only to mirror the offsets to the broker (visible to Kafka tooling):
        # assign() never joins the group, and the sink's table stays the source of truth
        return KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             client_id=f"ml-assets-{self.group}",
                             # back within seconds of a broker restart (default: up to 30 s)
                             reconnect_backoff_max_ms=5000)

    def _assign(self, kafka: KafkaConsumer, stop: threading.Event) -> bool:
        """Assign every partition of the topic (positions: `_seek_stored`); waits for the
        topic to exist. Whether it assigned (False: stopped while waiting)."""
        from kafka import TopicPartition

        while not stop.is_set():
            found = kafka.partitions_for_topic(self.topic)
            if found:
                kafka.assign([TopicPartition(self.topic, p) for p in sorted(found)])
                return True
            log.info("consumer %s: topic %s does not exist yet", self.group, self.topic)
            stop.wait(2.0)
        return False

    def _seek_stored(self, kafka: KafkaConsumer) -> None:
        with self.engine.connect() as conn:
            stored = tables.stored_offsets(conn, self.group, self.topic)
        for partition in kafka.assignment():
            if partition.partition in stored:
                kafka.seek(partition, stored[partition.partition])
            else:
                kafka.seek_to_beginning(partition)

    def poll_once(self, kafka: KafkaConsumer) -> int:
        """Read one batch and commit it with its offsets; how many events it held."""
        records = kafka.poll(timeout_ms=int(self.poll_s * 1000), max_records=self.batch)
        batch: list[Delivered] = []
        offsets: dict[int, int] = {}
        for partition, messages in records.items():
            for message in messages:
                offsets[partition.partition] = message.offset + 1
                try:
                    event = LifecycleEvent.model_validate_json(message.value)
                except ValidationError as exc:
                    # a message no reader can use must not stop every later one
                    log.warning("consumer %s: skipped malformed message %s:%d: %s", self.group,
                                partition.partition, message.offset, exc.errors()[:1])
                    continue
                batch.append(Delivered(event, partition.topic, partition.partition,
                                       message.offset))
        if not offsets:
            if self.unmirrored:  # a mirror that failed (e.g. a busy coordinator): again
                self._mirror(kafka, {})
            return 0
        with self.engine.begin() as conn:
            written = self.sink.write(conn, batch)
            tables.save_offsets(conn, self.group, self.topic, offsets)
        self._mirror(kafka, offsets)
        log.debug("consumer %s: %d events, %d new rows", self.group, len(batch), written)
        self.handled += len(batch)
        return len(batch)

    def _mirror(self, kafka: KafkaConsumer, offsets: dict[int, int]) -> None:
        """Copy the committed offsets to the broker's group, for Kafka tooling; what the
        broker does not confirm is sent again at the next idle poll."""
        from kafka import OffsetAndMetadata, TopicPartition

        self.unmirrored.update(offsets)
        sent = dict(self.unmirrored)

        def confirmed(_offsets, result) -> None:
            if isinstance(result, Exception):
                log.debug("consumer %s: broker offset commit failed: %r", self.group, result)
                return
            for partition, offset in sent.items():
                if self.unmirrored.get(partition) == offset:
                    del self.unmirrored[partition]

        kafka.commit_async({TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                            for p, o in sent.items()}, callback=confirmed)

    def run(self, stop: threading.Event) -> int:
        """Consume until `stop` is set, finishing the batch in hand; events handled."""
        kafka = self._kafka()
        try:
            if not self._assign(kafka, stop):
                return self.handled
            log.info("consumer %s: reading %s from %s", self.group, self.topic,
                     self.bootstrap or self.outbox)
            refreshed, failures, reseek = time.monotonic(), 0, True
            while not stop.is_set():
                try:
                    if time.monotonic() - refreshed > self.refresh_s:  # partitions added later
                        refreshed = time.monotonic()
                        found = kafka.partitions_for_topic(self.topic) or set()
                        if len(found) != len(kafka.assignment()):
                            reseek = self._assign(kafka, stop)
                    # at the start, after a reassignment, and after a failed batch (whose
                    # positions are past what was committed): from the stored offsets
                    if reseek:
                        self._seek_stored(kafka)
                        reseek = False
                    self.poll_once(kafka)
                    self.sink.after_commit(self.engine)
                    failures = 0
                except Exception:  # noqa: BLE001 - a down database or broker: retry, not exit
                    failures, reseek = failures + 1, True
                    log.exception("consumer %s: batch failed (%d in a row); re-reading from "
                                  "the stored offsets", self.group, failures)
                    stop.wait(min(30.0, 0.5 * 2 ** failures))
            return self.handled
        finally:
            kafka.close(autocommit=False)
