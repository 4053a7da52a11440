"""Deterministic per-tenant source data of the spend use case: account usage snapshots (at
random times), monthly billing snapshots (from each account's first invoice on) and
next-90-day spend labels.

The label of a row is a function of the account's usage and billing *as of the label time*, so a
join that leaks later snapshots scores differently from a point-in-time correct one. Knobs:
size (accounts, usage snapshots, labels per account) and injected drift (a shift of every
feature, in standard deviations)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ml_assets import use_case
from ml_assets.data import sources
from ml_assets.tenants import Tenant

DAY_S = 86400
MONTH_S = 30 * DAY_S
# (mean, std) of each account's level of a feature before drift
_LEVEL = {
    "active_seats": (12.0, 6.0),
    "api_calls_7d": (40_000.0, 15_000.0),
    "storage_gb": (120.0, 50.0),
    "logins_7d": (25.0, 10.0),
    "mrr": (900.0, 400.0),
    "discount_pct": (10.0, 6.0),
}
MISSING_API_CALLS = 0.02  # usage snapshots whose API count was not measured (NaN)


@dataclass(frozen=True)
class SpendDataSpec:
    """What to generate for one tenant."""

    accounts: int = 2000
    snapshots: int = 12  # usage snapshots per account (every ~15 days over 180)
    labels_per_account: int = 2
    drift: float = 0.0
    seed: int = 7
    start: str = "2026-01-01"
    days: int = 180

    def __post_init__(self) -> None:
        if self.accounts < 10:
            raise ValueError(f"accounts must be >= 10, got {self.accounts}")
        if self.snapshots < 1 or self.labels_per_account < 1:
            raise ValueError("snapshots and labels_per_account must be >= 1")
        if self.days < 60:
            raise ValueError(f"days must be >= 60 (two billing months), got {self.days}")


def _rng(tenant: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"spend:{tenant}:{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def account_ids(indices: np.ndarray, accounts: int) -> pd.Series:
    """"acct-000123" for index 123, as arrow strings (10M python strings would be GBs)."""
    names = pa.array(np.char.add("acct-", np.char.zfill(np.arange(accounts).astype(str), 6)))
    return pd.Series(pd.arrays.ArrowStringArray(names.take(pa.array(indices))))


def spend_90d(features: pd.DataFrame) -> np.ndarray:
    """The true next-90-day spend of accounts with these features (missing ones at their mean;
    non-linear, so a tree model has something to find)."""
    f = features.fillna({c: m for c, (m, _) in _LEVEL.items()}).fillna(
        {"overdue_invoices": 0, "plan_tier": 1})
    billed = 3.0 * f["mrr"] * (1.0 - f["discount_pct"].clip(0, 100) / 100.0)
    tier = f["plan_tier"].round().clip(0, 2).astype("int64").to_numpy()
    upsell = np.array([0.6, 1.0, 1.8])[tier]  # a step per plan, multiplying the bill
    overage = 0.004 * f["api_calls_7d"].clip(lower=0) * (1 + tier)
    engaged = 600.0 * (f["logins_7d"] > 2 * f["active_seats"])  # a threshold, not a slope
    # accounts two invoices behind mostly stop paying: a cliff a linear model cannot draw
    at_risk = np.where(f["overdue_invoices"] >= 2, 0.35, 1.0)
    return ((billed * upsell + overage + engaged + 1.5 * f["storage_gb"]) * at_risk
            ).clip(lower=0).to_numpy("float64")


def _levels(rng: np.random.Generator, spec: SpendDataSpec) -> dict[str, np.ndarray]:
    levels = {c: rng.normal(m, s, spec.accounts) + spec.drift * s for c, (m, s) in _LEVEL.items()}
    levels["plan_tier"] = rng.integers(0, 3, spec.accounts)
    levels["overdue_rate"] = rng.gamma(0.5, 0.4, spec.accounts)
    return levels


def _usage(rng, spec, levels, start) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    n = spec.accounts * spec.snapshots
    account = np.repeat(np.arange(spec.accounts), spec.snapshots)
    seconds = rng.integers(0, spec.days * DAY_S, n)
    order = np.lexsort((seconds, account))
    account, seconds = account[order], seconds[order]
    seats = np.maximum(1, np.rint(levels["active_seats"][account]
                                  * np.exp(rng.normal(0, 0.2, n)))).astype("int64")
    api = levels["api_calls_7d"][account] * np.exp(rng.normal(0, 0.3, n))
    api[rng.random(n) < MISSING_API_CALLS] = np.nan
    frame = pd.DataFrame({
        "active_seats": seats,
        "api_calls_7d": api,
        "storage_gb": np.maximum(0, levels["storage_gb"][account] + rng.normal(0, 10, n)),
        "logins_7d": rng.poisson(np.maximum(0.1, levels["logins_7d"][account])).astype("int64"),
    })
    frame.insert(0, "usage_timestamp", start + pd.to_timedelta(seconds, unit="s"))
    return frame, account, seconds


def _billing(rng, spec, levels, start) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    months = spec.days // 30 + 1
    # an account's first invoice is in month 0-2: labels before it join no billing row
    first = rng.integers(0, 3, spec.accounts)
    counts = months - first
    account = np.repeat(np.arange(spec.accounts), counts)
    month = np.arange(len(account)) - np.repeat(np.cumsum(counts) - counts, counts) + first[
        account]
    phase = rng.integers(0, MONTH_S, spec.accounts)
    seconds = phase[account] + month * MONTH_S
    n = len(account)
    growth = rng.normal(0.02, 0.02, spec.accounts)
    frame = pd.DataFrame({
        "mrr": np.maximum(0, levels["mrr"][account] * (1 + growth[account]) ** month
                          + rng.normal(0, 30, n)),
        "discount_pct": np.clip(levels["discount_pct"][account] + rng.normal(0, 1, n), 0, 60),
        "overdue_invoices": rng.poisson(levels["overdue_rate"][account]).astype("int64"),
        "plan_tier": levels["plan_tier"][account].astype("int64"),
    })
    frame.insert(0, "invoice_timestamp", start + pd.to_timedelta(seconds, unit="s"))
    return frame, account, seconds


def _as_of(label_account, label_seconds, account, seconds) -> np.ndarray:
    """Index of each label's latest row at or before its time (-1: none); rows sorted by
    (account, seconds)."""
    span = int(max(seconds.max(), label_seconds.max())) + 1
    keys = account.astype("int64") * span + seconds
    wanted = label_account.astype("int64") * span + label_seconds
    found = np.searchsorted(keys, wanted, side="right") - 1
    same = (found >= 0) & (account[np.maximum(found, 0)] == label_account)
    return np.where(same, found, -1)


def generate(tenant: str, spec: SpendDataSpec) -> tuple[pd.DataFrame, pd.DataFrame,
                                                        pd.DataFrame]:
    """(usage, billing, labels) of a tenant; the same tenant and spec give the same frames."""
    spend = use_case.load("spend")
    key = spend.key
    rng = _rng(tenant, spec.seed)
    start = pd.Timestamp(spec.start, tz="UTC")
    levels = _levels(rng, spec)
    usage, usage_account, usage_s = _usage(rng, spec, levels, start)
    billing, billing_account, billing_s = _billing(rng, spec, levels, start)

    n = spec.accounts * spec.labels_per_account
    label_account = np.repeat(np.arange(spec.accounts), spec.labels_per_account)
    label_s = rng.integers(spec.days * DAY_S // 10, spec.days * DAY_S + 14 * DAY_S, n)
    known = []
    for frame, account, seconds in ((usage, usage_account, usage_s),
                                    (billing, billing_account, billing_s)):
        row = _as_of(label_account, label_s, account, seconds)
        columns = frame.columns[1:]
        taken = frame[columns].astype("float64").to_numpy()[np.maximum(row, 0)]
        taken[row < 0] = np.nan
        known.append(pd.DataFrame(taken, columns=columns))
    noise = np.exp(rng.normal(0, 0.1, n))
    labels = pd.DataFrame({
        key: account_ids(label_account, spec.accounts),
        spend.label.timestamp_field: start + pd.to_timedelta(label_s, unit="s"),
        spend.label.column: spend_90d(pd.concat(known, axis=1)) * noise,
    })
    labels = labels.sort_values(spend.label.timestamp_field, kind="stable").reset_index(drop=True)
    usage.insert(0, key, account_ids(usage_account, spec.accounts))
    billing.insert(0, key, account_ids(billing_account, spec.accounts))
    return usage, billing, labels


def write(tenant: str, spec: SpendDataSpec, raw_data_dir: Path) -> dict[str, Path]:
    """Write the tenant's spend source files under raw_data_dir/<tenant>/spend/, named as the
    spend declaration says; {source name: path}."""
    spend = use_case.load("spend")
    frames = dict(zip(sources.source_names(spend), generate(tenant, spec), strict=True))
    paths = {}
    for name, frame in frames.items():
        paths[name] = sources.source_path(raw_data_dir, Tenant(tenant), spend, name)
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(paths[name], index=False)
    return paths
