"""The embedded default's source: with no broker configured (`make dev`, `make demo`) the
consumers read the outbox file itself, one partition whose offsets are the outbox's sequence
numbers, through the same calls the runner makes on a KafkaConsumer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ml_assets.events import Outbox

PARTITION = 0


@dataclass(frozen=True)
class Record:
    offset: int
    value: bytes


class OutboxReader:
    """The KafkaConsumer calls the runner uses, answered from the outbox (sqlite, WAL: reads
    never block the writer)."""

    def __init__(self, path: Path) -> None:
        self.outbox = Outbox(path)
        self.position = 0
        self._assigned: list = []

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {PARTITION}

    def assign(self, partitions: list) -> None:
        self._assigned = list(partitions)

    def assignment(self) -> set:
        return set(self._assigned)

    def seek(self, partition, offset: int) -> None:
        self.position = offset

    def seek_to_beginning(self, partition) -> None:
        self.position = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        rows = self.outbox.raw_from(self.position, max_records)
        if not rows:
            time.sleep(timeout_ms / 1000)
            return {}
        self.position = rows[-1][0] + 1
        return {self._assigned[0]: [Record(seq, body.encode()) for seq, body in rows]}

    def commit_async(self, offsets: dict, callback=None) -> None:
        if callback is not None:  # no broker to mirror the offsets to: nothing is pending
            callback(offsets, None)

    def close(self, autocommit: bool = False) -> None:
        pass
