"""The resource monitoring delivers its alerts through."""

from __future__ import annotations

import dagster as dg

from ml_assets.alerts.delivery import AlertBook, Delivery, evaluate
from ml_assets.alerts.receivers import Alert, ReceiverConfig


class AlertReceivers(dg.ConfigurableResource):
    """Alertmanager and Slack-compatible webhooks, per tenant (a JSON file of tenants' own
    receivers beside the platform's), with links back to Dagster and MLflow in every alert."""

    alertmanager_url: str | None = None
    webhook_url: str | None = None
    receivers_file: str | None = None
    dagster_url: str = "http://127.0.0.1:3000"
    mlflow_ui_url: str | None = None

    def config(self) -> ReceiverConfig:
        from pathlib import Path

        return ReceiverConfig.load(Path(self.receivers_file) if self.receivers_file else None,
                                   self.alertmanager_url, self.webhook_url)

    def links(self, asset: str, check: str, tenant: str, model_name: str,
              version: str | None) -> dict[str, str]:
        links = {"dagster": f"{self.dagster_url.rstrip('/')}/assets/{asset}"
                            f"?view=checks&checkDetail={check}&partition={tenant}"}
        if self.mlflow_ui_url and version:
            links["mlflow"] = (f"{self.mlflow_ui_url.rstrip('/')}/#/models/{model_name}"
                               f"/versions/{version}")
        return links

    def deliver(self, instance: dg.DagsterInstance,
                evaluations: list[tuple[Alert, bool, bool]]) -> list[Delivery]:
        """Fire, resolve or retry each (alert, breached, passed), the receivers read once and
        the states kept in the instance's key-value store (so every step and the daemon share
        them)."""
        config = self.config()
        book = AlertBook(instance.run_storage.get_cursor_values,
                         instance.run_storage.set_cursor_values)
        return [evaluate(config, book, alert, breached, passed)
                for alert, breached, passed in evaluations]
