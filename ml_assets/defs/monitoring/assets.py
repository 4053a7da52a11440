"""The tenant's live model watched through its prediction log: drift, latency, errors."""

import warnings
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np

from ml_assets import names
from ml_assets.defs.monitoring import health
from ml_assets.defs.monitoring.alerting import deliver_alerts
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.defs.scope import key, tenant_of, use_case_asset
from ml_assets.events import EventType
from ml_assets.monitoring import check_history, drift_views, liveness, realized
from ml_assets.monitoring import statistics as monitoring
from ml_assets.monitoring.window import (
    canary_outcome,
    evaluate,
    load_profile,
    log_columns,
    newest_version,
    rollout_traffic,
    served_traffic,
)
from ml_assets.registry import actions, rollout
from ml_assets.resources.alerts import AlertReceivers
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.feast import FeastStore
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.monitoring import MonitoringPolicy
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.ray import RayCluster, ServeEndpoint
from ml_assets.resources.rollout import RolloutPolicy, RolloutSteps
from ml_assets.serving import prediction_log
from ml_assets.serving.routing import get_route
from ml_assets.tenants import Tenant
from ml_assets.use_case import UseCase

if TYPE_CHECKING:
    import pyarrow as pa

ALERTS = {**dict.fromkeys(monitoring.DRIFT_CHECKS, EventType.MODEL_DRIFT_DETECTED),
          **dict.fromkeys((*monitoring.QUALITY_CHECKS, liveness.SERVING_ALIVE,
                           realized.REALIZED_QUALITY), EventType.MODEL_QUALITY_DEGRADED)}
CHECK_DESCRIPTIONS = {
    monitoring.PREDICTION_DRIFT: "The window's mean prediction is within N (default 2) "
    "standard deviations of the reference predictions; KS p-value alongside.",
    monitoring.FEATURE_DRIFT: "No feature drifted from its training distribution: per-feature "
    "KS (Benjamini-Hochberg adjusted) and PSI against the version's reference profile.",
    monitoring.LATENCY_P95: "p95 request latency within the tenant's SLA (default 50 ms).",
    monitoring.ERROR_RATE: "Share of failed (5xx) requests at most the tenant's limit "
    "(default 1 %).",
    monitoring.CANARY_HEALTH: "While a canary takes traffic: its error rate and p95 are no worse "
    "than Production's on the same window (beyond the limits); on breach it is rolled back.",
    liveness.SERVING_ALIVE: "The production route answered a request in the last N minutes "
    "(default 5); when it was quiet, a probe request got a 200 with a prediction.",
    realized.REALIZED_QUALITY: "Once labels arrive for scored customers: the gate metric on "
    "them is no more than the allowed drop (default 0.05) below the version's holdout value; "
    "the CBPE estimate from the probabilities alone is metadata.",
}



def check_specs(use_case: UseCase) -> list[dg.AssetCheckSpec]:
    # Partitioned checks are a preview in Dagster 1.13, but without them a check result
    # belongs to no tenant: neither the UI nor the retrain sensor could tell whose failed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [dg.AssetCheckSpec(name, asset=key(use_case.name, names.MODEL_MONITORING),
                                  description=description, partitions_def=tenant_partitions)
                for name, description in CHECK_DESCRIPTIONS.items()]


def _metadata_value(value: Any) -> Any:
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | float | np.integer | np.floating):
        return dg.MetadataValue.float(float(value))
    return dg.MetadataValue.json(value)


def check_result(outcome: monitoring.Outcome, window: dict[str, str],
                 version: str | None) -> dg.AssetCheckResult:
    """ERROR on a breach; WARN (still not passed) when there was too little data to judge."""
    severity = dg.AssetCheckSeverity.ERROR if outcome.enough_data else (
        dg.AssetCheckSeverity.WARN)
    return dg.AssetCheckResult(
        check_name=outcome.check,
        passed=outcome.passed,
        severity=severity,
        description=outcome.details.get("reason"),
        metadata={
            "observed": _metadata_value(outcome.observed),
            "threshold": dg.MetadataValue.float(outcome.threshold),
            "rows": outcome.rows,
            "enough_data": outcome.enough_data,
            "model_version": version or "",
            **window,
            **{k: _metadata_value(v) for k, v in outcome.details.items()
               if k not in ("reason", "histogram", "features")},
            **drift_views_metadata(outcome),
        },
    )


def drift_views_metadata(outcome: monitoring.Outcome) -> dict[str, dg.MetadataValue]:
    """The prediction histogram and the per-feature drift table, as markdown."""
    views = {}
    if "histogram" in outcome.details:
        views["prediction_histogram"] = dg.MetadataValue.md(
            drift_views.histogram_markdown(**outcome.details["histogram"]))
    if "features" in outcome.details:
        views["feature_drift_table"] = dg.MetadataValue.md(drift_views.feature_table_markdown(
            outcome.details["features"], set(outcome.details["drifted_features"])))
    return views


def previous_breach_version(instance: dg.DagsterInstance, check: str,
                            tenant: Tenant) -> str | None:
    """The model version the check's previous evaluation for this tenant failed on with
    severity ERROR, if that previous evaluation was such a breach."""
    found = check_history.evaluations(instance, check, tenant, limit=1)
    if not found or not check_history.is_breach(found[0][1]):
        return None
    return str(found[0][1].metadata["model_version"].value)


def alert(events: LifecycleEvents, instance: dg.DagsterInstance, tenant: Tenant,
          outcome: monitoring.Outcome, version: str | None, window: dict[str, str]) -> bool:
    """Publish the breach's event once per breach: not again while the check keeps failing on
    the same version (a re-run of a window, or drift that persists). Whether it published."""
    if not outcome.breached or previous_breach_version(instance, outcome.check,
                                                       tenant) == (version or ""):
        return False
    drifted = sorted(outcome.details.get("drifted_features", ()))
    events.emit(ALERTS[outcome.check], tenant, check=outcome.check, model_version=version,
                observed=outcome.observed, threshold=outcome.threshold, rows=outcome.rows,
                **({"drifted_features": drifted} if drifted else {}), **window)
    return True


def rollout_step(ray: RayCluster, mlflow: MlflowRegistry, events: LifecycleEvents,
                 tenant: Tenant, steps: RolloutSteps, logged: "pa.Table",
                 verdict: monitoring.Outcome) -> str | None:
    """The rollout's next step on the live route (None when no Staging version is routed)."""
    if not steps.enabled:
        return None
    ray.connect()
    route = get_route(tenant)
    if route is None or route.staging is None or route.primary is None:
        return None
    traffic = rollout_traffic(logged, route, verdict)
    return rollout.advance(mlflow.client(), events, tenant, route, steps, traffic)


def model_monitoring(
    context: dg.AssetExecutionContext,
    object_store: ObjectStore,
    mlflow: MlflowRegistry,
    events: LifecycleEvents,
    monitoring_policy: MonitoringPolicy,
    rollout_policy: RolloutPolicy,
    ray: RayCluster,
    serve_endpoint: ServeEndpoint,
    feast: FeastStore,
    alert_receivers: AlertReceivers,
):
    """The last window of the tenant's prediction log (latency percentiles, throughput, error
    rate, mean prediction) held to its thresholds and to the served version's reference
    profile. A breach publishes MODEL_DRIFT_DETECTED or MODEL_QUALITY_DEGRADED once; a canary
    worse than Production is rolled back; else a Staging version's rollout takes its next
    step (shadow, canary shares, promotion)."""
    tenant = tenant_of(context)
    limits = monitoring_policy.for_tenant(tenant)
    object_store.check()
    end = datetime.now(UTC)
    start = end - timedelta(minutes=monitoring_policy.window_minutes)
    logged = prediction_log.read(object_store, tenant, tenant.use_case,
                                 log_columns(tenant.use_case), since=start)
    table = served_traffic(logged)  # what callers got: no shadow, no pre-production route
    version = newest_version(table, prediction_log.PRODUCTION_ROUTE)
    profile = load_profile(mlflow, tenant, version) if version else None
    requests, outcomes = evaluate(table, profile, version, limits)
    outcomes += [health.serving_alive(ray, serve_endpoint, tenant, table, end, limits),
                 health.realized_quality(feast, mlflow, tenant, table, version, limits)]
    window = {"window_start": start.isoformat(), "window_end": end.isoformat()}
    canary = newest_version(table, prediction_log.CANARY_ROUTE)
    verdict = canary_outcome(requests, version, canary, limits)
    rolled_back = verdict.breached and actions.abort_canary(
        ray, mlflow, events, tenant, canary,
        reason=f"canary worse than Production on {', '.join(verdict.details['breached'])}",
        observed={"canary": verdict.details["canary"],
                  "production": verdict.details["production"]})
    step = None if rolled_back else rollout_step(ray, mlflow, events, tenant,
                                                 rollout_policy.for_tenant(tenant), logged,
                                                 verdict)

    published = [o.check for o in outcomes
                 if alert(events, context.instance, tenant, o, version, window)]
    delivered = deliver_alerts(alert_receivers, context.instance, tenant, [*outcomes, verdict],
                               version, window, context.log)
    latency = requests.latency_percentiles()
    summary = {
        "tenant": tenant.key, "model_version": version, **window,
        "rows": len(table), "requests": len(requests),
        "throughput_rps": requests.throughput(),
        "error_rate": float(np.mean(requests.failed)) if len(requests) else None,
        **{f"latency_{k}_ms": v for k, v in latency.items()},
        "checks": {o.check: {"passed": o.passed, "enough_data": o.enough_data,
                             "observed": o.observed} for o in outcomes},
        "alerts_published": published,
        "alerts_delivered": delivered,
        "canary_rolled_back": canary if rolled_back else None,
        "rollout_step": step,
    }
    yield dg.Output(summary, metadata={
        "model_version": version or "",
        "rows": len(table),
        "requests": len(requests),
        "throughput_rps": dg.MetadataValue.float(summary["throughput_rps"]),
        **{f"latency_{k}_ms": dg.MetadataValue.float(v) for k, v in latency.items()},
        **({"error_rate": dg.MetadataValue.float(summary["error_rate"])}
           if summary["error_rate"] is not None else {}),
        "alerts_published": ", ".join(published) or "none",
        "alerts_delivered": dg.MetadataValue.json(delivered),
        "canary_rolled_back": summary["canary_rolled_back"] or "none",
        "rollout_step": step or "none",
        **window,
    })
    for outcome in outcomes:
        yield check_result(outcome, window, version)
    yield check_result(verdict, window, version)


def build(use_case: UseCase) -> list[dg.AssetsDefinition]:
    return [use_case_asset(use_case, model_monitoring, names.MODEL_MONITORING, "monitoring",
                           {"numpy", "parquet", "kafka"},  # kafka: drift and quality alerts
                           # reads the log the endpoint writes, not its output
                           deps=(names.DEPLOYED_ENDPOINT,), check_specs=check_specs(use_case))]
