"""Deterministic per-tenant churn source data: a customer activity table and a label table.

The label of a row depends on the customer's activity *as of the label time*, so a join that
leaks later activity scores differently from a point-in-time correct one. Knobs: size, class
balance and injected drift (a shift of every feature, in standard deviations).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml_assets import use_case
from ml_assets.data import sources
from ml_assets.schema import ENTITY, FEATURES, LABEL, LABEL_TIMESTAMP, TIMESTAMP
from ml_assets.tenants import Tenant

# (mean, std) of each feature before drift
_FEATURE_SCALE = {
    "tenure_days": (400.0, 250.0),
    "monthly_spend": (60.0, 25.0),
    "sessions_30d": (20.0, 8.0),
    "avg_session_minutes": (12.0, 5.0),
    "support_tickets_90d": (1.5, 1.2),
    "days_since_last_login": (8.0, 6.0),
    "payment_failures_90d": (0.4, 0.7),
    "plan_tier": (1.0, 0.8),
    "discount_pct": (10.0, 7.0),
    "nps_score": (30.0, 30.0),
}


@dataclass(frozen=True)
class ChurnDataSpec:
    """What to generate for one tenant."""

    customers: int = 2000
    snapshots_per_customer: int = 6
    labels_per_customer: int = 2
    churn_rate: float = 0.25
    drift: float = 0.0
    seed: int = 7
    start: str = "2026-01-01"
    days: int = 180

    def __post_init__(self) -> None:
        if self.customers < 10:
            raise ValueError(f"customers must be >= 10, got {self.customers}")
        if not 0.01 <= self.churn_rate <= 0.99:
            raise ValueError(f"churn_rate must be in [0.01, 0.99], got {self.churn_rate}")
        if self.snapshots_per_customer < 1 or self.labels_per_customer < 1:
            raise ValueError("snapshots_per_customer and labels_per_customer must be >= 1")


def _rng(tenant: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{tenant}:{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def churn_score(features: pd.DataFrame) -> np.ndarray:
    """The true log-odds contribution of features (non-linear, so an MLP has something to find)."""
    z = {c: (features[c] - m) / s for c, (m, s) in _FEATURE_SCALE.items()}
    return (
        0.6 * z["days_since_last_login"]
        - 0.5 * z["sessions_30d"]
        + 0.5 * z["payment_failures_90d"]
        - 0.4 * z["tenure_days"]
        + 1.5 * (z["support_tickets_90d"] * z["days_since_last_login"]).clip(-3, 3)
        + 2.0 * (z["monthly_spend"].abs() > 1.0)
        - 1.2 * (z["nps_score"] > 0.5)
    ).to_numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept_for_rate(score: np.ndarray, rate: float) -> float:
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(score + mid).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def generate(tenant: str, spec: ChurnDataSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(activity, labels) for a tenant; the same tenant and spec give the same frames."""
    rng = _rng(tenant, spec.seed)
    start = pd.Timestamp(spec.start, tz="UTC")
    span_s = spec.days * 86400
    n_rows = spec.customers * spec.snapshots_per_customer

    ids = np.repeat(np.arange(1, spec.customers + 1, dtype=np.int64), spec.snapshots_per_customer)
    base = {
        c: np.repeat(rng.normal(m, s, spec.customers), spec.snapshots_per_customer)
        for c, (m, s) in _FEATURE_SCALE.items()
    }
    activity = pd.DataFrame({ENTITY: ids})
    for c, (_, s) in _FEATURE_SCALE.items():
        # each snapshot wanders around the customer's own level; drift shifts everything
        activity[c] = base[c] + rng.normal(0.0, 0.5 * s, n_rows) + spec.drift * s
    activity["plan_tier"] = activity["plan_tier"].round().clip(0, 2)
    for c in ("tenure_days", "sessions_30d", "support_tickets_90d", "days_since_last_login",
              "payment_failures_90d", "discount_pct"):
        activity[c] = activity[c].clip(lower=0)
    offsets = rng.integers(0, span_s, n_rows)
    activity[TIMESTAMP] = start + pd.to_timedelta(offsets, unit="s")
    activity = activity.sort_values([ENTITY, TIMESTAMP], kind="stable").reset_index(drop=True)
    activity[FEATURES] = activity[FEATURES].astype("float64")

    n_labels = spec.customers * spec.labels_per_customer
    labels = pd.DataFrame(
        {
            ENTITY: np.repeat(np.arange(1, spec.customers + 1, dtype=np.int64),
                              spec.labels_per_customer),
            LABEL_TIMESTAMP: start
            + pd.to_timedelta(rng.integers(span_s // 10, span_s + 86400 * 14, n_labels), unit="s"),
        }
    ).sort_values(LABEL_TIMESTAMP, kind="stable").reset_index(drop=True)

    as_of = pd.merge_asof(
        labels.rename(columns={LABEL_TIMESTAMP: TIMESTAMP}),
        activity.sort_values(TIMESTAMP, kind="stable"),
        on=TIMESTAMP,
        by=ENTITY,
        direction="backward",
    )
    score = churn_score(as_of[FEATURES].fillna({c: m for c, (m, _) in _FEATURE_SCALE.items()}))
    score = score + rng.normal(0.0, 0.5, n_labels)
    p = _sigmoid(score + _intercept_for_rate(score, spec.churn_rate))
    labels[LABEL] = (rng.random(n_labels) < p).astype("int64")
    return activity, labels


def write(tenant: str, spec: ChurnDataSpec, raw_data_dir: Path) -> dict[str, Path]:
    """Write the tenant's churn source files under raw_data_dir/<tenant>/churn/, named as the
    churn declaration says; {source name: path}."""
    churn = use_case.load("churn")
    activity, labels = generate(tenant, spec)
    paths = {name: sources.source_path(raw_data_dir, Tenant(tenant), churn, name)
             for name in sources.source_names(churn)}
    paths[churn.label.name].parent.mkdir(parents=True, exist_ok=True)
    (view,) = churn.feature_views
    activity.to_parquet(paths[view.name], index=False)
    labels.to_parquet(paths[churn.label.name], index=False)
    return paths
