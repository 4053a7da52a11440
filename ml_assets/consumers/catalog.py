"""The catalog consumer: each tenant's model versions with their current stage, metrics and
lineage, built from registration, stage, deployment and training events
(`GET /v1/tenants/{tenant}/catalog`).

Order-safe: a stage is only replaced by one from a later event, so a late or re-sent event never
moves a version back; training runs are kept apart and joined by run id, so a run's metrics
reach its version whichever of the two events arrives first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, select
from sqlalchemy.engine import Connection

from ml_assets.consumers import tables
from ml_assets.consumers.runner import Delivered
from ml_assets.events import EventType, LifecycleEvent

VERSION_EVENTS = {EventType.MODEL_REGISTERED, EventType.MODEL_STAGE_CHANGED,
                  EventType.MODEL_STAGE_REVERTED, EventType.MODEL_DEPLOYED,
                  EventType.CANARY_ROLLED_BACK}
RUN_EVENTS = {EventType.MODEL_TRAINING_STARTED, EventType.MODEL_TRAINING_COMPLETED}
LATEST = ("deployed_at", "rolled_back_at")  # the newest time wins


def version_updates(event: LifecycleEvent) -> dict[str, dict[str, Any]]:
    """version -> what the event says about it."""
    data, at = event.data, tables.as_utc(event.time)
    version = str(data["version"]) if data.get("version") is not None else None
    if event.type == EventType.MODEL_REGISTERED and version:
        return {version: {"model": data.get("model"), "run_id": data.get("run_id"),
                          "registered_at": at, "stage": data.get("stage", "None"),
                          "lineage": data.get("lineage") or {}}}
    if event.type == EventType.MODEL_STAGE_CHANGED and version:
        return {version: {"model": data.get("model"), "stage": data["to_stage"]}}
    if event.type == EventType.MODEL_STAGE_REVERTED and data.get("restored_version"):
        # the refused version never had the stage in the catalog: the restored one keeps it
        return {str(data["restored_version"]): {"stage": data["stage"]}}
    if event.type == EventType.MODEL_DEPLOYED and version:
        return {version: {"deployed_at": at, "endpoint_url": data.get("url")}}
    if event.type == EventType.CANARY_ROLLED_BACK and version:
        return {version: {"rolled_back_at": at}}
    return {}


def merged(current: dict[str, Any] | None, update: dict[str, Any], event_id: str,
           at: datetime) -> dict[str, Any]:
    """The version's row after one event's update, whatever order events arrive in."""
    row = dict(current or {"lineage": {}})
    at = tables.as_utc(at)
    if "stage" in update:
        since = row.get("stage_since")
        if since is None or at >= tables.as_utc(tables.utc(since)):
            row.update(stage=update["stage"], stage_since=at, stage_event=event_id)
    for key in LATEST:
        if update.get(key) is not None:
            previous = row.get(key)
            if previous is None or update[key] >= tables.as_utc(tables.utc(previous)):
                row[key] = update[key]
                if key == "deployed_at":
                    row["endpoint_url"] = update.get("endpoint_url")
    for key in ("model", "run_id", "registered_at"):
        if update.get(key) is not None:
            row[key] = update[key]
    row["lineage"] = {**row.get("lineage", {}), **update.get("lineage", {})}
    return row


def run_update(event: LifecycleEvent) -> dict[str, Any]:
    """What a training event says about its run."""
    data = event.data
    if event.type == EventType.MODEL_TRAINING_STARTED:
        keys = ("experiment_name", "data_version")
    else:
        keys = ("model_uri",)
    lineage = {key: data[key] for key in keys if data.get(key) is not None}
    metrics = data.get("metrics") if event.type == EventType.MODEL_TRAINING_COMPLETED else None
    return {"lineage": lineage, "metrics": metrics or {}}


class CatalogSink:
    """Applies each registration, stage, deployment and training event once."""

    name = "catalog"

    def write(self, conn: Connection, batch: list[Delivered]) -> int:
        applied = 0
        for item in batch:
            event = item.event
            if event.type not in VERSION_EVENTS | RUN_EVENTS:
                continue
            if not tables.insert_new(conn, tables.catalog_events, {
                    "event_id": event.id, "tenant": event.tenant, "type": event.type.value,
                    "applied_at": tables.now()}, key="event_id"):
                continue  # applied before: a re-sent or re-read event
            applied += 1
            if event.type in RUN_EVENTS:
                self._apply_run(conn, event)
            for version, update in version_updates(event).items():
                self._apply_version(conn, event, version, update)
        return applied

    def _apply_version(self, conn: Connection, event: LifecycleEvent, version: str,
                       update: dict[str, Any]) -> None:
        table = tables.catalog_versions
        where = and_(table.c.tenant == event.tenant, table.c.version == version)
        current = conn.execute(select(table).where(where)).mappings().first()
        row = merged(dict(current) if current else None, update, event.id, event.time)
        row.update(tenant=event.tenant, version=version, updated_at=tables.now())
        if current is None:
            conn.execute(table.insert().values(row))
        else:
            conn.execute(table.update().where(where).values(row))

    def _apply_run(self, conn: Connection, event: LifecycleEvent) -> None:
        run_id = event.data.get("run_id")
        if not run_id:
            return
        table = tables.catalog_runs
        where = and_(table.c.tenant == event.tenant, table.c.run_id == run_id)
        current = conn.execute(select(table).where(where)).mappings().first()
        update = run_update(event)
        row = {"tenant": event.tenant, "run_id": run_id, "updated_at": tables.now(),
               "lineage": {**(current["lineage"] if current else {}), **update["lineage"]},
               "metrics": update["metrics"] or (current["metrics"] if current else {})}
        if current is None:
            conn.execute(table.insert().values(row))
        else:
            conn.execute(table.update().where(where).values(row))

    def after_commit(self, engine: Engine) -> None:
        pass


def versions(engine: Engine, tenant: str) -> list[dict[str, Any]]:
    """The tenant's versions, oldest first, with their run's metrics and lineage."""
    v, r = tables.catalog_versions, tables.catalog_runs
    query = (select(v, r.c.metrics.label("run_metrics"), r.c.lineage.label("run_lineage"))
             .select_from(v.outerjoin(r, and_(r.c.tenant == v.c.tenant,
                                              r.c.run_id == v.c.run_id)))
             .where(v.c.tenant == tenant))
    with engine.connect() as conn:
        rows = list(conn.execute(query).mappings())
    found = []
    for row in sorted(rows, key=lambda row: (len(row["version"]), row["version"])):
        lineage = {**(row["run_lineage"] or {}), **row["lineage"]}
        if row["run_id"]:
            lineage["run_id"] = row["run_id"]
        found.append({
            "version": row["version"], "model": row["model"], "stage": row["stage"],
            "stage_since": tables.utc(row["stage_since"]), "metrics": row["run_metrics"] or {},
            "lineage": lineage, "registered_at": tables.utc(row["registered_at"]),
            "deployed_at": tables.utc(row["deployed_at"]), "endpoint_url": row["endpoint_url"],
            "rolled_back_at": tables.utc(row["rolled_back_at"]),
        })
    return found
