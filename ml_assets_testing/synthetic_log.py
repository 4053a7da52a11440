"""Prediction logs with known properties (feature shift, prediction shift, errors, latency),
made from the churn data generator: what monitoring's tests and benchmark are run on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml_assets.data import churn_data
from ml_assets.schema import FEATURES
from ml_assets.serving import prediction_log

if TYPE_CHECKING:
    import pyarrow as pa

PREDICTION_MEAN, PREDICTION_STD = 0.3, 0.08
USE_CASE = "churn"  # the generators make churn's data


@dataclass(frozen=True)
class LogSpec:
    """One generated window of a tenant's log, one row per request."""

    requests: int = 2000
    version: str = "1"
    route: str = prediction_log.PRODUCTION_ROUTE
    seed: int = 11
    feature_shift: dict[str, float] = field(default_factory=dict)  # in feature std devs
    prediction_shift: float = 0.0  # in PREDICTION_STD
    error_share: float = 0.0  # requests answered 500, null features and prediction
    latency_ms: float = 8.0  # median; log-normal around it
    slow_share: float = 0.0  # requests taking 10x the median
    span_s: float = 600.0  # logged over the last span_s seconds before `end`
    end: datetime | None = None

    def __post_init__(self) -> None:
        unknown = set(self.feature_shift) - set(FEATURES)
        if unknown:
            raise ValueError(f"feature_shift names unknown features {sorted(unknown)}")
        if not 0 <= self.error_share <= 1 or not 0 <= self.slow_share <= 1:
            raise ValueError("error_share and slow_share must be in [0, 1]")


def feature_rows(tenant: str, rows: int, seed: int) -> pd.DataFrame:
    """`rows` feature rows of the tenant's generated customer activity."""
    customers = max(10, -(-rows // churn_data.ChurnDataSpec.snapshots_per_customer))
    activity, _ = churn_data.generate(tenant, churn_data.ChurnDataSpec(customers=customers,
                                                                      seed=seed))
    return activity[FEATURES].iloc[:rows].reset_index(drop=True)


def predictions(rows: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Churn probabilities around PREDICTION_MEAN (+ shift standard deviations)."""
    rng = np.random.default_rng(seed)
    mean = PREDICTION_MEAN + shift * PREDICTION_STD
    return np.clip(rng.normal(mean, PREDICTION_STD, rows), 0.0, 1.0)


def generate(tenant: str, spec: LogSpec) -> pa.Table:
    """The window as a table in the prediction log's schema."""
    import pyarrow as pa

    rng = np.random.default_rng(spec.seed)
    n = spec.requests
    frame = feature_rows(tenant, n, spec.seed)
    for name, shift in spec.feature_shift.items():
        frame[name] = frame[name] + shift * frame[name].std()
    frame["prediction"] = predictions(n, spec.seed + 1, spec.prediction_shift)
    failed = rng.random(n) < spec.error_share
    frame.loc[failed, ["prediction", *FEATURES]] = np.nan
    latency = spec.latency_ms * rng.lognormal(0.0, 0.25, n)
    latency[rng.random(n) < spec.slow_share] *= 10
    end = (spec.end or datetime.now(UTC)).timestamp()
    ts = np.sort(end - rng.random(n) * spec.span_s)
    columns = {
        "request_id": [uuid.UUID(int=int(x)).hex for x in rng.integers(0, 2**63, n)],
        "ts": pa.array((ts * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
        "tenant": [tenant] * n,
        "model_version": [spec.version] * n,
        "route": [spec.route] * n,
        "status": np.where(failed, 500, 200).astype(np.int16),
        "latency_ms": latency,
        "use_case": [USE_CASE] * n,
        prediction_log.ENTITY_KEY: [str(i) for i in range(n)],
        **{name: frame[name].to_numpy() for name in ["prediction", *FEATURES]},
    }
    return pa.Table.from_pydict(columns, schema=prediction_log.schema(USE_CASE))


def reference(tenant: str, rows: int = 3000, seed: int = 7) -> dict:
    """A reference profile from the same generators (other rows): a window generated with no
    shift is drawn from its distribution."""
    from ml_assets.monitoring.statistics import reference_profile

    return reference_profile(feature_rows(tenant, rows, seed), predictions(rows, seed + 1),
                             seed=seed)
