"""Monitoring statistics: a model version's reference profile, and the checks a window of its
prediction log is held to (prediction drift, feature drift, p95 latency, error rate, canary).

Pure numpy/scipy over arrays: the Dagster asset reads the log and the profile, this module
decides. Each column of a window is sorted once; KS, PSI and quantiles all come from that sort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

PROFILE_ARTIFACT = "reference_profile.json"
PROFILE_FORMAT = 1
SAMPLE_SIZE = 5000  # reference values kept per column: the KS test's second sample
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PSI_BINS = 10
PSI_FLOOR = 1e-4  # an empty bin's share, so PSI stays finite

PREDICTION_DRIFT = "prediction_drift_within_2_sigma"
FEATURE_DRIFT = "feature_drift"
LATENCY_P95 = "latency_p95_within_sla"
ERROR_RATE = "error_rate_below_1_percent"
CANARY_HEALTH = "canary_no_worse_than_production"
DRIFT_CHECKS = (PREDICTION_DRIFT, FEATURE_DRIFT)
QUALITY_CHECKS = (LATENCY_P95, ERROR_RATE)


class ProfileError(ValueError):
    """A reference profile that is missing, of another format, or lacks a column."""


def column_profile(values: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Count, nulls, mean, std, quantiles, PSI bins and a sorted sample of one column."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    if present.size == 0:
        raise ProfileError("a reference column has no non-null values")
    sample = present if present.size <= SAMPLE_SIZE else rng.choice(present, SAMPLE_SIZE,
                                                                    replace=False)
    edges = np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    return {
        "count": int(present.size),
        "null_fraction": float(1 - present.size / values.size),
        "mean": float(present.mean()),
        "std": float(present.std(ddof=1)) if present.size > 1 else 0.0,
        "quantiles": dict(zip(map(str, QUANTILES), np.quantile(present, QUANTILES).tolist(),
                              strict=True)),
        "psi_edges": edges.tolist(),
        "psi_shares": _bin_shares(np.sort(present), edges).tolist(),
        "sample": np.sort(sample).tolist(),
    }


def reference_profile(features: pd.DataFrame, predictions: np.ndarray,
                      seed: int = 0) -> dict[str, Any]:
    """The profile logged with a model version: its training rows' features (every column of
    `features`: the use case's features) and its own predictions on them, so monitoring never
    re-reads training data."""
    if not len(features.columns):
        raise ProfileError("reference rows have no feature columns")
    if len(predictions) != len(features):
        raise ProfileError(f"{len(predictions)} predictions for {len(features)} rows")
    rng = np.random.default_rng(seed)
    return {
        "format": PROFILE_FORMAT,
        "rows": len(features),
        "features": {name: column_profile(features[name].to_numpy(), rng)
                     for name in features.columns},
        "prediction": column_profile(np.asarray(predictions), rng),
    }


def validate_profile(profile: dict[str, Any], features: list[str]) -> dict[str, Any]:
    """The profile, if it has the format and every one of the use case's `features`."""
    if profile.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"reference profile format {profile.get('format')!r}, "
                           f"expected {PROFILE_FORMAT}")
    missing = [name for name in features if name not in profile.get("features", {})]
    if missing or "prediction" not in profile:
        raise ProfileError(f"reference profile lacks columns {missing or ['prediction']}")
    return profile


def _bin_shares(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values in each bin (-inf, e1], (e1, e2], ..., (ek, inf)."""
    cuts = np.searchsorted(sorted_values, edges, side="right")
    counts = np.diff(np.concatenate([[0], cuts, [sorted_values.size]]))
    return counts / max(sorted_values.size, 1)


def psi(sorted_values: np.ndarray, reference: dict[str, Any]) -> float:
    """Population stability index of a window against the reference's decile bins."""
    expected = np.maximum(np.asarray(reference["psi_shares"]), PSI_FLOOR)
    actual = np.maximum(_bin_shares(sorted_values, np.asarray(reference["psi_edges"])),
                        PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_2samp_sorted(window: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value (scipy's ks_2samp, method="asymp") for
    two sorted samples, in O(m log n) once sorted: the CDF gap's extremes lie at the reference
    points (just before one, or at one), so only those are looked up in the window."""
    from scipy.stats import kstwo

    n, m = window.size, reference.size
    if n == 0 or m == 0:
        raise ValueError("KS needs two non-empty samples")
    points = np.unique(reference)
    ref_at = np.searchsorted(reference, points, side="right") / m  # F_ref(r)
    ref_before = np.searchsorted(reference, points, side="left") / m  # F_ref(r-)
    win_at = np.searchsorted(window, points, side="right") / n
    win_before = np.searchsorted(window, points, side="left") / n
    # F_ref steps up at each reference point: F_win - F_ref peaks just before one,
    # F_ref - F_win at one
    above = np.max(win_before - ref_before)
    below = np.max(ref_at - win_at)
    statistic = float(max(above, below, 0.0))
    en = m * n / (m + n)
    return statistic, float(np.clip(kstwo.sf(statistic, np.round(en)), 0, 1))


@dataclass
class Outcome:
    """One check's verdict: passed, failed, or not decidable (too little data: a warning)."""

    check: str
    passed: bool
    observed: float | None
    threshold: float
    rows: int
    enough_data: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def breached(self) -> bool:
        """Failed on enough data: what alerts and retrains act on (not a too-few-rows warning)."""
        return self.enough_data and not self.passed


def _too_few(check: str, rows: int, needed: int, threshold: float, unit: str) -> Outcome:
    return Outcome(check, passed=False, observed=None, threshold=threshold, rows=rows,
                   enough_data=False,
                   details={"reason": f"too few {unit} in the window: {rows} < {needed}"})


def prediction_drift(predictions: np.ndarray, reference: dict[str, Any], max_sigmas: float,
                     min_rows: int) -> Outcome:
    """Fails when the window's mean prediction moved more than max_sigmas reference standard
    deviations (of single predictions, not standard errors) from the reference mean."""
    values = np.sort(predictions[~np.isnan(predictions)])
    if values.size < min_rows:
        return _too_few(PREDICTION_DRIFT, values.size, min_rows, max_sigmas, "predictions")
    mean, ref_mean, ref_std = float(values.mean()), reference["mean"], reference["std"]
    if ref_std > 0:
        shift = abs(mean - ref_mean) / ref_std
    else:
        shift = 0.0 if mean == ref_mean else math.inf
    standard_error = ref_std * math.sqrt(1 / values.size + 1 / reference["count"])
    statistic, p_value = ks_2samp_sorted(values, np.asarray(reference["sample"]))
    return Outcome(PREDICTION_DRIFT, passed=bool(shift <= max_sigmas), observed=float(shift),
                   threshold=max_sigmas, rows=int(values.size), details={
                       "basis": "reference prediction std (sigma), not the standard error",
                       "window_mean": mean, "reference_mean": ref_mean,
                       "reference_std": ref_std,
                       "shift_in_standard_errors": abs(mean - ref_mean) / standard_error
                       if standard_error > 0 else 0.0,
                       "ks_statistic": statistic, "ks_p_value": p_value,
                       "histogram": {"edges": reference["psi_edges"],
                                     "reference": reference["psi_shares"],
                                     "window": _bin_shares(values, np.asarray(
                                         reference["psi_edges"])).tolist()},
                   })


def feature_drift(columns: dict[str, np.ndarray], reference: dict[str, dict[str, Any]],
                  alpha: float, min_psi: float, min_rows: int) -> Outcome:
    """A feature drifted when its KS test is significant after Benjamini-Hochberg across the
    features (adjusted p < alpha) and the shift is material (PSI >= min_psi): with many rows
    KS alone flags shifts too small to matter."""
    from scipy.stats import false_discovery_control

    rows = min(int(np.count_nonzero(~np.isnan(v))) for v in columns.values())
    if rows < min_rows:
        return _too_few(FEATURE_DRIFT, rows, min_rows, 0.0, "feature rows")
    stats = {}
    for name, values in columns.items():
        present = np.sort(values[~np.isnan(values)])
        statistic, p_value = ks_2samp_sorted(present, np.asarray(reference[name]["sample"]))
        stats[name] = {"ks_statistic": statistic, "ks_p_value": p_value,
                       "psi": psi(present, reference[name]),
                       "window_mean": float(present.mean()),
                       "reference_mean": reference[name]["mean"]}
    adjusted = false_discovery_control([s["ks_p_value"] for s in stats.values()], method="bh")
    for s, p in zip(stats.values(), adjusted, strict=True):
        s["ks_p_adjusted"] = float(p)
    drifted = {name: s for name, s in stats.items()
               if s["ks_p_adjusted"] < alpha and s["psi"] >= min_psi}
    # observed and threshold in one unit: drifted features, of which none are allowed
    return Outcome(FEATURE_DRIFT, passed=not drifted, observed=float(len(drifted)),
                   threshold=0.0, rows=rows, details={
                       "drifted_features": drifted, "alpha": alpha, "min_psi": min_psi,
                       "correction": "Benjamini-Hochberg over the features' KS p-values",
                       "max_psi": max(s["psi"] for s in stats.values()),
                       "features": stats,
                   })


@dataclass
class Requests:
    """One entry per request of a window (a request may have scored many rows)."""

    latency_ms: np.ndarray
    status: np.ndarray
    version: np.ndarray  # object array of str | None
    first_ts: float
    last_ts: float

    @classmethod
    def from_log(cls, table: pa.Table) -> Requests:
        """Requests of log rows (columns request_id, ts, latency_ms, status, model_version):
        each request_id's first row."""
        ids = table["request_id"].combine_chunks().dictionary_encode().indices.to_numpy()
        _, first = np.unique(ids, return_index=True)
        ts = table["ts"].combine_chunks().cast("int64").to_numpy() / 1e6 if len(table) else []

        def column(name: str, dtype=None) -> np.ndarray:
            values = table[name].to_numpy(zero_copy_only=False)
            return values[first] if dtype is None else values[first].astype(dtype)

        return cls(latency_ms=column("latency_ms", np.float64), status=column("status", np.int64),
                   version=column("model_version"),
                   first_ts=float(np.min(ts)) if len(ts) else 0.0,
                   last_ts=float(np.max(ts)) if len(ts) else 0.0)

    def __len__(self) -> int:
        return self.status.size

    def subset(self, mask: np.ndarray) -> Requests:
        return Requests(self.latency_ms[mask], self.status[mask], self.version[mask],
                        self.first_ts, self.last_ts)

    @property
    def failed(self) -> np.ndarray:
        """Server-side failures (5xx): a client's bad request (4xx) is not the model failing."""
        return self.status >= 500

    def latency_percentiles(self) -> dict[str, float]:
        if not len(self):
            return {}
        p50, p95, p99 = np.percentile(self.latency_ms, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}

    def throughput(self) -> float:
        """Requests per second between the window's first and last logged request."""
        span = self.last_ts - self.first_ts
        return len(self) / span if span > 0 else 0.0


def latency_p95(requests: Requests, sla_ms: float, min_requests: int) -> Outcome:
    """Fails when the 95th percentile of request latency is over the SLA."""
    if len(requests) < min_requests:
        return _too_few(LATENCY_P95, len(requests), min_requests, sla_ms, "requests")
    percentiles = requests.latency_percentiles()
    return Outcome(LATENCY_P95, passed=percentiles["p95"] <= sla_ms, observed=percentiles["p95"],
                   threshold=sla_ms, rows=len(requests),
                   details={f"latency_{k}_ms": v for k, v in percentiles.items()})


def error_rate(requests: Requests, max_rate: float, min_requests: int) -> Outcome:
    """Fails when the share of requests that failed (5xx) exceeds max_rate."""
    if len(requests) < min_requests:
        return _too_few(ERROR_RATE, len(requests), min_requests, max_rate, "requests")
    failed = int(np.count_nonzero(requests.failed))
    client_errors = int(np.count_nonzero((requests.status >= 400) & (requests.status < 500)))
    rate = failed / len(requests)
    return Outcome(ERROR_RATE, passed=rate <= max_rate, observed=rate, threshold=max_rate,
                   rows=len(requests), details={"failed_requests": failed,
                                                "client_errors_not_counted": client_errors})


def canary_health(requests: Requests, production: str, canary: str, max_error_rate: float,
                  sla_ms: float, min_requests: int) -> Outcome:
    """Fails (roll the canary back) when, on the same live window, the canary's error rate is
    over max_error_rate and over Production's, or its p95 is over the SLA and over
    Production's: a canary is judged against the version it would replace."""
    by_version = {"production": requests.subset(requests.version == production),
                  "canary": requests.subset(requests.version == canary)}
    # failures before routing carry no version: they count against neither side
    rows = len(by_version["canary"])
    if rows < min_requests:
        return _too_few(CANARY_HEALTH, rows, min_requests, max_error_rate, "canary requests")
    stats = {}
    for side, part in by_version.items():
        stats[side] = {
            "version": production if side == "production" else canary,
            "requests": len(part),
            "error_rate": float(np.mean(part.failed)) if len(part) else 0.0,
            "p95_ms": part.latency_percentiles().get("p95", 0.0),
        }
    prod, cand = stats["production"], stats["canary"]
    errors_worse = cand["error_rate"] > max_error_rate and cand["error_rate"] > prod["error_rate"]
    slower = cand["p95_ms"] > sla_ms and cand["p95_ms"] > prod["p95_ms"]
    reasons = [r for r, bad in (("error_rate", errors_worse), ("latency_p95", slower)) if bad]
    return Outcome(CANARY_HEALTH, passed=not reasons, observed=cand["error_rate"],
                   threshold=max_error_rate, rows=rows,
                   details={"production": prod, "canary": cand, "breached": reasons,
                            "sla_ms": sla_ms})
