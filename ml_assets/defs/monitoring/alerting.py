"""Monitoring's verdicts delivered to people: one alert per breach, resolved once, through the
tenant's receivers (Alertmanager, webhooks)."""

from __future__ import annotations

import dagster as dg

from ml_assets import names
from ml_assets.alerts.receivers import Alert
from ml_assets.monitoring.statistics import Outcome
from ml_assets.resources.alerts import AlertReceivers
from ml_assets.tenants import Tenant


def alert_for(receivers: AlertReceivers, tenant: Tenant, outcome: Outcome,
              version: str | None, window: dict[str, str], summary: str,
              asset: str = names.MODEL_MONITORING, use_case: str = "churn") -> Alert:
    return Alert(tenant=tenant.key, name=outcome.check, summary=summary, use_case=use_case,
                 observed=outcome.observed, threshold=outcome.threshold,
                 window_start=window.get("window_start"), window_end=window.get("window_end"),
                 model_version=version,
                 links=receivers.links(asset, outcome.check, tenant.key,
                                       tenant.registered_model_name, version))


def summary_of(outcome: Outcome) -> str:
    """What failed, in a line a person can act on."""
    summary = f"{outcome.check} failed on {outcome.rows} rows"
    if reason := outcome.details.get("reason"):
        summary += f": {reason}"
    if drifted := sorted(outcome.details.get("drifted_features", ())):
        summary += f" (drifted: {', '.join(drifted)})"
    return summary


def deliver_alerts(receivers: AlertReceivers, instance: dg.DagsterInstance, tenant: Tenant,
                   outcomes: list[Outcome], version: str | None, window: dict[str, str],
                   log: dg.DagsterLogManager, asset: str = names.MODEL_MONITORING,
                   use_case: str = "churn") -> dict[str, str]:
    """Fire, resolve or retry each check's alert (the checks of `asset`, of the tenant's
    `use_case`); check -> what happened, for the metadata."""
    evaluations = [(alert_for(receivers, tenant, outcome, version, window, summary_of(outcome),
                              asset, use_case),
                    outcome.breached, outcome.passed and outcome.enough_data)
                   for outcome in outcomes]
    done = {}
    for outcome, delivery in zip(outcomes, receivers.deliver(instance, evaluations),
                                 strict=True):
        if delivery.failed:  # kept pending: the next evaluation retries these receivers
            log.warning(f"alert {outcome.check} for {tenant.key}: {delivery.failed}")
        if delivery.transition or delivery.sent or delivery.failed:
            done[outcome.check] = (f"{delivery.transition or 'retried'}: sent to "
                                   f"{', '.join(delivery.sent) or 'none'}"
                                   + (f"; pending {', '.join(delivery.failed)}"
                                      if delivery.failed else ""))
    return done
