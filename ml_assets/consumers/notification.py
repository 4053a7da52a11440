"""The notification consumer: deployments, promotions and rollbacks, told to the tenant's alert
receivers.

Two halves: a `notifications` row is written once per event in the offsets' transaction (the
durable part, exactly once), then pending rows are sent after the commit and marked delivered
per receiver. A crash between a send and its mark sends that one again: receivers get each
notification at least once, the table has it exactly once. An event over a day old when read
(a first start on a topic with history) is recorded as stale and not sent."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from ml_assets.consumers import tables
from ml_assets.consumers.runner import Delivered
from ml_assets.events import EventType, LifecycleEvent

log = logging.getLogger(__name__)

PRODUCTION = "Production"
PENDING, DELIVERED, STALE = "pending", "delivered", "stale"
STALE_AFTER = timedelta(hours=24)
# (receivers that took it, {receiver: why it failed}) for one notification row
Send = Callable[[dict[str, Any], set[str]], tuple[list[str], dict[str, str]]]
Targets = Callable[[str], set[str]]


def notice(event: LifecycleEvent) -> tuple[str, str] | None:
    """(severity, summary) of an event people are told about; None for the others."""
    data, who = event.data, event.data.get("actor", "?")
    version = data.get("version")
    if event.type == EventType.MODEL_DEPLOYED:
        return "info", (f"version {version} deployed as {data.get('stage')} at "
                        f"{data.get('url')}")
    if event.type == EventType.MODEL_STAGE_CHANGED and data.get("to_stage") == PRODUCTION:
        if str(data.get("reason", "")).startswith("rollback"):
            return "warning", f"Production rolled back to version {version} by {who}"
        return "info", (f"version {version} promoted to Production by {who}: "
                        f"{data.get('reason', '')}")
    if event.type == EventType.CANARY_ROLLED_BACK:
        return "warning", (f"canary version {version} rolled back (Production stays "
                           f"{data.get('production_version')}): {data.get('reason', '')}")
    if event.type == EventType.MODEL_STAGE_REVERTED:
        return "warning", (f"{data.get('stage')} alias moved outside ml_assets onto version "
                           f"{version} was put back on {data.get('restored_version')}")
    return None


class NotificationSink:
    """Records each notifiable event once; sends pending ones after each commit, retrying a
    receiver that failed with a growing wait."""

    name = "notification"

    def __init__(self, send: Send, targets: Targets, batch: int = 100,
                 max_wait_s: float = 300.0, budget_s: float = 2.0,
                 stale_after: timedelta = STALE_AFTER) -> None:
        self.send, self.targets = send, targets
        self.batch, self.max_wait_s, self.stale_after = batch, max_wait_s, stale_after
        # sending holds up consuming: a slow receiver costs a round this much (plus a timeout)
        self.budget_s = budget_s

    def write(self, conn: Connection, batch: list[Delivered]) -> int:
        new = 0
        for item in batch:
            event = item.event
            found = notice(event)
            if found is None:
                continue
            severity, summary = found
            now = tables.now()
            # a first start (or a replay) reads up to 30 days back: record, don't announce
            stale = now - event.time > self.stale_after
            new += tables.insert_new(conn, tables.notifications, {
                "event_id": event.id, "tenant": event.tenant, "type": event.type.value,
                "time": tables.as_utc(event.time), "severity": severity, "summary": summary,
                "data": event.data, "created_at": now, "delivered_to": [], "attempts": 0,
                "status": STALE if stale else PENDING,
                "last_error": f"older than {self.stale_after} when read: not sent"
                if stale else None}, key="event_id")
        return new

    def after_commit(self, engine: Engine) -> None:
        self.deliver_pending(engine)

    def deliver_pending(self, engine: Engine) -> int:
        """Send the rows due now; how many reached every receiver."""
        table, now = tables.notifications, tables.now()
        with engine.connect() as conn:
            due = [dict(row) for row in conn.execute(
                select(table).where(table.c.status == PENDING,
                                    (table.c.next_attempt_at.is_(None))
                                    | (table.c.next_attempt_at <= now))
                .order_by(table.c.seq).limit(self.batch)).mappings()]
        done, deadline = 0, time.monotonic() + self.budget_s
        for row in due:
            if time.monotonic() > deadline:
                break  # the rest next round
            missing = self.targets(row["tenant"]) - set(row["delivered_to"])
            sent, failed = self.send(row, missing) if missing else ([], {})
            delivered = sorted(set(row["delivered_to"]) | set(sent))
            update: dict[str, Any] = {"delivered_to": delivered, "attempts": row["attempts"] + 1}
            if failed:
                wait = min(self.max_wait_s, 2.0 ** row["attempts"])
                update.update(last_error="; ".join(f"{k}: {v}" for k, v in failed.items()),
                              next_attempt_at=tables.now() + timedelta(seconds=wait))
                log.warning("notification %s for %s not delivered to %s", row["event_id"],
                            row["tenant"], sorted(failed))
            else:
                update.update(status=DELIVERED, delivered_at=tables.now(), last_error=None)
                done += 1
            with engine.begin() as conn:
                conn.execute(table.update().where(table.c.seq == row["seq"]).values(update))
        return done


def receivers(settings) -> tuple[Send, Targets]:
    """(send, targets) through the tenant's alert receivers (ml_assets.alerts): the platform's
    Alertmanager and webhook, or the tenant's own from the receivers file."""
    from ml_assets.alerts.receivers import Alert, ReceiverConfig
    from ml_assets.alerts.receivers import send as send_alert

    class Notification(Alert):
        event_id: str

        def labels(self) -> dict[str, str]:
            # an event, not a state: its own identity, so Alertmanager does not fold two
            # deployments of a tenant into one alert
            return {**super().labels(), "event_id": self.event_id}

    def config() -> ReceiverConfig:  # read each round: a tenant's receivers may change
        return ReceiverConfig.load(settings.alert_receivers_path, settings.alertmanager_url,
                                   settings.alert_webhook_url)

    def targets(tenant: str) -> set[str]:
        return set(config().targets(tenant))

    def send(row: dict[str, Any], only: set[str]) -> tuple[list[str], dict[str, str]]:
        data, version = row["data"], row["data"].get("version")
        links = {}
        if settings.mlflow_ui_url and version and data.get("model"):
            links["mlflow"] = (f"{settings.mlflow_ui_url.rstrip('/')}/#/models/"
                               f"{data['model']}/versions/{version}")
        alert = Notification(event_id=row["event_id"], tenant=row["tenant"], name=row["type"],
                             severity=row["severity"],
                             summary=row["summary"], model_version=version, links=links,
                             starts_at=tables.utc(row["time"]))
        receivers = config()
        sent, failed = send_alert(receivers, alert, only)
        urls = receivers.targets(alert.tenant)
        # a webhook URL is a credential (Slack's): the stored error names the receiver instead
        return sent, {name: why.replace(urls[name], f"<{name} URL>") if name in urls else why
                      for name, why in failed.items()}

    return send, targets
