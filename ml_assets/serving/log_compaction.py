"""Compaction and retention of a (tenant, use case)'s prediction log.

The replica writes a small file every few seconds into the hour its rows belong to. Compaction
turns each closed hour into one file sorted by `ts`, so a read costs one file per past hour;
retention deletes whole days once every row in them is older than the retention.

Safe against a concurrent writer: a compaction reads, rewrites and deletes exactly the files it
listed, so a file landing meanwhile stays and is compacted on the next run. Safe against a crash:
the compacted file is written whole under a name derived from its inputs and names them in its
footer; readers leave out what it covers, and its inputs are deleted only after it is read back.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ml_assets.serving.prediction_log import (
    COMPACTED_PREFIX,
    COVERS_KEY,
    LOG_DIR,
    UseCaseRef,
    is_compacted,
    live_files,
    log_dir,
    parquet_bytes,
    read_files,
)
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    from ml_assets.data.object_store import ObjectStoreClient

# the folders below the tenant's prefix: <use_case>/predictions/date=D[/hour=H]
DATE_DIR = re.compile(rf"^[a-z_][a-z0-9_]*/{LOG_DIR}/date=(\d{{4}}-\d{{2}}-\d{{2}})$")
HOUR_DIR = re.compile(DATE_DIR.pattern.removesuffix("$") + r"/hour=(\d{2})$")


@dataclass
class Compaction:
    """What one run did to a (tenant, use case)'s log."""

    partitions: list[str] = field(default_factory=list)  # hour folders rewritten
    files_read: int = 0
    files_deleted: int = 0
    rows: int = 0
    expired: list[str] = field(default_factory=list)  # date folders deleted by retention


def hour_of(directory: str) -> datetime | None:
    """The hour an hour partition's folder stands for; None for any other key."""
    found = HOUR_DIR.match(directory)
    if not found:
        return None
    return datetime.fromisoformat(f"{found[1]}T{found[2]}:00:00+00:00")


def closed_partitions(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
                      now: datetime, lookback_days: int,
                      grace: timedelta) -> dict[str, list[tuple[str, int]]]:
    """The hour partitions of the last lookback_days days that ended at least `grace` ago,
    with their files: one listing per day."""
    partitions: dict[str, list[tuple[str, int]]] = {}
    for back in range(lookback_days, -1, -1):
        day = (now - timedelta(days=back)).astimezone(UTC)
        for key, size in store.list_sizes(tenant, log_dir(use_case), f"date={day:%Y-%m-%d}"):
            directory = key.rsplit("/", 1)[0]
            hour = hour_of(directory)
            if key.endswith(".parquet") and hour and hour + timedelta(hours=1) + grace <= now:
                partitions.setdefault(directory, []).append((key, size))
    return partitions


def compact_partition(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
                      directory: str,
                      files: list[tuple[str, int]]) -> tuple[str | None, int, int]:
    """Rewrite one hour partition's listed files as one compacted file, then delete exactly
    them; (the compacted key or None when there was nothing to do, rows, files deleted)."""
    import pyarrow.parquet as pq

    live = live_files(store, tenant, files)
    live_keys = {key for key, _ in live}
    superseded = [key for key, _ in files if key not in live_keys]
    if len(live) == 1 and is_compacted(live[0][0]):
        store.delete(tenant, superseded)  # what a run that stopped mid-way left behind
        return None, 0, len(superseded)
    table = read_files(store, tenant, use_case, live).sort_by("ts")
    # everything listed, live or superseded: whatever order the deletes happen in (or stop
    # in), no file this one holds the rows of is read beside it
    names = sorted(key.rsplit("/", 1)[-1] for key, _ in files)
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    key = f"{directory}/{COMPACTED_PREFIX}{digest}.parquet"
    store.put_bytes(tenant, key, parquet_bytes(table, {COVERS_KEY: json.dumps(names).encode()}))
    written = pq.read_metadata(store.path(tenant, key), filesystem=store.filesystem())
    if written.num_rows != table.num_rows:
        raise OSError(f"{key} holds {written.num_rows} rows, not {table.num_rows}: inputs kept")
    store.delete(tenant, [k for k, _ in files])
    return key, table.num_rows, len(files)


def compact(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
            now: datetime | None = None, lookback_days: int = 1,
            grace: timedelta = timedelta(minutes=5)) -> Compaction:
    """Compact every closed hour of the last lookback_days days (and today) that is not one
    compacted file yet."""
    now = now or datetime.now(UTC)
    done = Compaction()
    for directory, files in sorted(closed_partitions(store, tenant, use_case, now,
                                                     lookback_days, grace).items()):
        if len(files) == 1 and is_compacted(files[0][0]):
            continue
        key, rows, deleted = compact_partition(store, tenant, use_case, directory, files)
        done.files_read += len(files)
        done.files_deleted += deleted
        if key:
            done.partitions.append(directory)
            done.rows += rows
    return done


def expire(store: ObjectStoreClient, tenant: Tenant, use_case: UseCaseRef,
           retention_days: int, now: datetime | None = None) -> list[str]:
    """Delete the (tenant, use case)'s day partitions whose every row is older than
    retention_days; the folders deleted. Lists only the day folders, never another tenant's
    prefix."""
    if retention_days < 1:
        raise ValueError(f"retention_days={retention_days}: must be at least 1")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    expired = []
    for directory in store.list_dirs(tenant, log_dir(use_case)):
        found = DATE_DIR.match(directory)
        if found and datetime.fromisoformat(f"{found[1]}T00:00:00+00:00") + timedelta(
                days=1) <= cutoff:
            store.delete_dir(tenant, directory)
            expired.append(directory)
    return expired


def compact_logs(store: ObjectStoreClient, tenant: Tenant, logs: list[UseCaseRef],
                 now: datetime | None = None, lookback_days: int = 1,
                 grace: timedelta = timedelta(minutes=5)) -> Compaction:
    """compact() of each of the tenant's `logs` (use cases, or None: the UNROUTED log),
    summed."""
    done = Compaction()
    for use_case in logs:
        one = compact(store, tenant, use_case, now, lookback_days, grace)
        done.partitions += one.partitions
        done.files_read += one.files_read
        done.files_deleted += one.files_deleted
        done.rows += one.rows
    return done


def expire_logs(store: ObjectStoreClient, tenant: Tenant, logs: list[UseCaseRef],
                retention_days: int, now: datetime | None = None) -> list[str]:
    """expire() of each of the tenant's `logs`: every folder deleted."""
    return [directory for use_case in logs
            for directory in expire(store, tenant, use_case, retention_days, now)]
