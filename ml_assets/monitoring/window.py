"""A window of a (tenant, use case)'s prediction log held to the served version's reference
profile and the tenant's limits: the numbers every monitoring check reports."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml_assets import use_case
from ml_assets.monitoring import statistics as monitoring
from ml_assets.registry import stages
from ml_assets.serving.prediction_log import ENTITY_KEY, UseCaseRef, features_of, schema
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    import pyarrow as pa

    from ml_assets.resources.mlflow import MlflowRegistry
    from ml_assets.resources.monitoring import MonitoringThresholds

REQUEST_COLUMNS = ["request_id", "ts", "model_version", "route", "status", "latency_ms",
                   ENTITY_KEY, "prediction"]


def log_columns(use_case: UseCaseRef) -> list[str]:
    """The columns of the use case's log that monitoring reads: requests and its features."""
    return [*REQUEST_COLUMNS, *features_of(use_case)]


def load_profile(mlflow: MlflowRegistry, tenant: Tenant, version: str) -> dict[str, Any] | None:
    """The reference profile logged with the tenant's model version, None if it has none."""
    from mlflow.exceptions import MlflowException

    run_id = stages.model_version(mlflow.client(), tenant, version).run_id
    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as directory:
        try:
            path = mlflow.client().download_artifacts(run_id, monitoring.PROFILE_ARTIFACT,
                                                      directory)
        except (MlflowException, OSError):
            return None
        features = use_case.load(tenant.use_case).features
        return monitoring.validate_profile(json.loads(Path(path).read_text()), features)


def newest_version(table: pa.Table, route: str) -> str | None:
    """The version of the newest request the route answered in the window."""
    import pyarrow.compute as pc

    production = table.filter(pc.and_(pc.equal(table["route"], route),
                                      pc.is_valid(table["model_version"])))
    if not len(production):
        return None
    newest = pc.index(production["ts"], pc.max(production["ts"])).as_py()
    return production["model_version"][newest].as_py()


def scored_columns(table: pa.Table, version: str) -> dict[str, np.ndarray]:
    """Prediction and feature columns (every column but the request's: the use case's
    features, as read) of the version's successful rows."""
    import pyarrow.compute as pc

    rows = table.filter(pc.and_(pc.equal(table["model_version"], version),
                                pc.is_valid(table["prediction"])))
    request = set(schema(None).names) - {"prediction"}
    return {name: rows[name].to_numpy().astype(np.float64) for name in rows.column_names
            if name not in request}


def evaluate(table: pa.Table, profile: dict[str, Any] | None, version: str | None,
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
                                              (monitoring.FEATURE_DRIFT, 0.0))]
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
    if canary is None or production is None:  # not a pass: nothing was compared
        return monitoring.Outcome(monitoring.CANARY_HEALTH, passed=False, observed=None,
                                  threshold=limits.max_error_rate, rows=0, enough_data=False,
                                  details={"reason": "no canary took traffic in the window: "
                                                     "nothing was compared"})
    return monitoring.canary_health(requests, production, canary, limits.max_error_rate,
                                    limits.latency_p95_sla_ms, limits.min_requests)


def served_traffic(table: pa.Table) -> pa.Table:
    """The requests callers got answers to from the production route (Production or its canary
    share, and refusals before routing): not shadow answers, not the pre-production route."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ml_assets.serving.prediction_log import SHADOW_ROUTE, STAGING_ROUTE

    aside = pc.is_in(table["route"], value_set=pa.array([SHADOW_ROUTE, STAGING_ROUTE]))
    return table.filter(pc.invert(pc.fill_null(aside, False)))


def rollout_traffic(table: pa.Table, route, verdict: monitoring.Outcome):
    """What the rollout step needs from the window: Staging's shadow answers and canary
    requests since the route's step began, and whether the canary check passed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ml_assets.registry.rollout import Traffic
    from ml_assets.serving.prediction_log import CANARY_ROUTE, SHADOW_ROUTE

    since = pa.scalar(int((route.since or 0) * 1_000_000), pa.timestamp("us", tz="UTC"))
    recent = table.filter(pc.and_(pc.greater_equal(table["ts"], since),
                                  pc.equal(table["model_version"], route.staging)))

    def requests_on(name: str) -> pa.Table:
        rows = recent.filter(pc.equal(recent["route"], name))
        return rows.group_by("request_id").aggregate([("status", "max")])

    shadow, canary = requests_on(SHADOW_ROUTE), requests_on(CANARY_ROUTE)
    errors = pc.sum(pc.greater_equal(shadow["status_max"], 500)).as_py() or 0
    return Traffic(shadow_answers=len(shadow), shadow_errors=errors,
                   canary_requests=len(canary),
                   canary_check_passed=verdict.passed and verdict.enough_data)
