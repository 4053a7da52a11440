"""The tenant's live model watched through its prediction log: drift, latency, errors."""

import json
import tempfile
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np

from ml_assets import monitoring, prediction_log
from ml_assets.churn_data import FEATURES
from ml_assets.defs.monitoring import canary as canary_guard
from ml_assets.defs.monitoring import drift_views
from ml_assets.events import EventType
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.monitoring import MonitoringPolicy, MonitoringThresholds
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.ray import RayCluster
from ml_assets.tenants import Tenant, tenant_partitions

if TYPE_CHECKING:
    import pyarrow as pa

MONITORED_ASSET = "model_monitoring"
LOG_COLUMNS = ["request_id", "ts", "model_version", "route", "status", "latency_ms",
               "prediction", *FEATURES]
ALERTS = {**dict.fromkeys(monitoring.DRIFT_CHECKS, EventType.MODEL_DRIFT_DETECTED),
          **dict.fromkeys(monitoring.QUALITY_CHECKS, EventType.MODEL_QUALITY_DEGRADED)}
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
}

# Partitioned checks are a preview in Dagster 1.13, but without them a check result belongs to
# no tenant: neither the UI nor the retrain sensor could tell whose check failed.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)
    CHECK_SPECS = [dg.AssetCheckSpec(name, asset=MONITORED_ASSET, description=description,
                                     partitions_def=tenant_partitions)
                   for name, description in CHECK_DESCRIPTIONS.items()]


def load_profile(mlflow: MlflowRegistry, tenant: Tenant, version: str) -> dict[str, Any] | None:
    """The reference profile logged with the tenant's model version, None if it has none."""
    from mlflow.exceptions import MlflowException

    from ml_assets.defs.registry import stages

    run_id = stages.model_version(mlflow.client(), tenant, version).run_id
    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as directory:
        try:
            path = mlflow.client().download_artifacts(run_id, monitoring.PROFILE_ARTIFACT,
                                                      directory)
        except (MlflowException, OSError):
            return None
        return monitoring.validate_profile(json.loads(Path(path).read_text()))


def newest_version(table: "pa.Table", route: str) -> str | None:
    """The version of the newest request the route answered in the window."""
    import pyarrow.compute as pc

    production = table.filter(pc.and_(pc.equal(table["route"], route),
                                      pc.is_valid(table["model_version"])))
    if not len(production):
        return None
    newest = pc.index(production["ts"], pc.max(production["ts"])).as_py()
    return production["model_version"][newest].as_py()


def scored_columns(table: "pa.Table", version: str) -> dict[str, np.ndarray]:
    """Prediction and feature columns of the version's successful rows."""
    import pyarrow.compute as pc

    rows = table.filter(pc.and_(pc.equal(table["model_version"], version),
                                pc.is_valid(table["prediction"])))
    return {name: rows[name].to_numpy().astype(np.float64) for name in ["prediction", *FEATURES]}


def evaluate(table: "pa.Table", profile: dict[str, Any] | None, version: str | None,
             limits: MonitoringThresholds) -> tuple[monitoring.Requests, list[monitoring.Outcome]]:
    """The requests of a log window and the four checks' outcomes on it."""
    requests = monitoring.Requests.from_log(table)
    outcomes = [
        monitoring.latency_p95(requests, limits.latency_p95_sla_ms, limits.min_requests),
        monitoring.error_rate(requests, limits.max_error_rate, limits.min_requests),
    ]
    if profile is None:
        reason = (f"version {version} has no reference profile" if version
                  else "no request answered by the production route in the window")
        outcomes += [monitoring.Outcome(check, passed=False, observed=None, threshold=threshold,
                                        rows=0, enough_data=False, details={"reason": reason})
                     for check, threshold in ((monitoring.PREDICTION_DRIFT,
                                               limits.prediction_shift_sigmas),
                                              (monitoring.FEATURE_DRIFT,
                                               limits.feature_drift_alpha))]
        return requests, outcomes
    columns = scored_columns(table, version)
    predictions = columns.pop("prediction")
    outcomes += [
        monitoring.prediction_drift(predictions, profile["prediction"],
                                    limits.prediction_shift_sigmas, limits.min_rows),
        monitoring.feature_drift(columns, profile["features"], limits.feature_drift_alpha,
                                 limits.feature_drift_min_psi, limits.min_rows),
    ]
    return requests, outcomes


def canary_outcome(requests: monitoring.Requests, production: str | None, canary: str | None,
                   limits: MonitoringThresholds) -> monitoring.Outcome:
    if canary is None or production is None:
        return monitoring.Outcome(monitoring.CANARY_HEALTH, passed=True, observed=None,
                                  threshold=limits.max_error_rate, rows=0, details={
                                      "reason": "no canary took traffic in the window"})
    return monitoring.canary_health(requests, production, canary, limits.max_error_rate,
                                    limits.latency_p95_sla_ms, limits.min_requests)


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
    """The model version the check's previous evaluation failed on with severity ERROR, if the
    previous evaluation of it for this tenant was such a breach."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import (
        COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    )

    key = dg.AssetCheckKey(dg.AssetKey(MONITORED_ASSET), check)
    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status=set(COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES),
        partition_filter=PartitionKeyFilter(key=tenant.key))
    evaluation = records[0].event.asset_check_evaluation if records and records[0].event else None
    if evaluation is None or evaluation.passed or (
            evaluation.severity != dg.AssetCheckSeverity.ERROR):
        return None
    return str(evaluation.metadata["model_version"].value)


def alert(events: LifecycleEvents, instance: dg.DagsterInstance, tenant: Tenant,
          outcome: monitoring.Outcome, version: str | None, window: dict[str, str]) -> bool:
    """Publish the breach's event once per breach: not again while the check keeps failing on
    the same version (a re-run of a window, or drift that persists). Whether it published."""
    if not outcome.breached or previous_breach_version(instance, outcome.check,
                                                       tenant) == (version or ""):
        return False
    events.emit(ALERTS[outcome.check], tenant, check=outcome.check, model_version=version,
                observed=outcome.observed, threshold=outcome.threshold, rows=outcome.rows,
                **window)
    return True


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="monitoring",
    kinds={"numpy", "parquet", "kafka"},  # kafka: drift and quality alerts
    deps=["deployed_endpoint"],  # reads the log the endpoint writes, not its output
    check_specs=CHECK_SPECS,
)
def model_monitoring(
    context: dg.AssetExecutionContext,
    object_store: ObjectStore,
    mlflow: MlflowRegistry,
    events: LifecycleEvents,
    monitoring_policy: MonitoringPolicy,
    ray: RayCluster,
):
    """The last window of the tenant's prediction log (latency percentiles, throughput, error
    rate, mean prediction) held to its thresholds and to the served version's reference
    profile. A breach publishes MODEL_DRIFT_DETECTED or MODEL_QUALITY_DEGRADED once; a canary
    worse than Production is rolled back."""
    tenant = Tenant.from_context(context)
    limits = monitoring_policy.for_tenant(tenant)
    object_store.check()
    end = datetime.now(UTC)
    start = end - timedelta(minutes=monitoring_policy.window_minutes)
    table = prediction_log.read(object_store, tenant, LOG_COLUMNS, since=start)
    version = newest_version(table, prediction_log.PRODUCTION_ROUTE)
    profile = load_profile(mlflow, tenant, version) if version else None
    requests, outcomes = evaluate(table, profile, version, limits)
    window = {"window_start": start.isoformat(), "window_end": end.isoformat()}
    canary = newest_version(table, prediction_log.CANARY_ROUTE)
    verdict = canary_outcome(requests, version, canary, limits)
    rolled_back = verdict.breached and canary_guard.roll_back(ray, mlflow, events, tenant,
                                                              canary, verdict)

    published = [o.check for o in outcomes
                 if alert(events, context.instance, tenant, o, version, window)]
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
        "canary_rolled_back": canary if rolled_back else None,
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
        "canary_rolled_back": summary["canary_rolled_back"] or "none",
        **window,
    })
    for outcome in outcomes:
        yield check_result(outcome, window, version)
    yield check_result(verdict, window, version)
