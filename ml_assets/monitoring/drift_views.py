"""Drift as a person reads it in the Dagster UI: markdown tables beside a check's numbers."""

from __future__ import annotations

from typing import Any

BAR_WIDTH = 30


def _bar(share: float, largest: float) -> str:
    return "█" * round(BAR_WIDTH * share / largest) if largest > 0 else ""


def histogram_markdown(edges: list[float], reference: list[float], window: list[float]) -> str:
    """The window's predictions in the reference's decile bins: ~10 % each when nothing
    drifted; the bars show where the mass moved."""
    bounds = [float("-inf"), *edges, float("inf")]
    largest = max([*reference, *window], default=0.0)
    lines = ["| prediction bin | reference | window | window share |", "|---|---|---|---|"]
    for low, high, ref, now in zip(bounds[:-1], bounds[1:], reference, window, strict=True):
        lines.append(f"| ({low:.3f}, {high:.3f}] | {ref:.1%} | {now:.1%} | "
                     f"`{_bar(now, largest)}` |")
    return "\n".join(lines)


def feature_table_markdown(stats: dict[str, dict[str, Any]], drifted: set[str]) -> str:
    """One row per feature, the most shifted (PSI) first."""
    lines = ["| feature | drifted | PSI | KS | KS p (BH) | reference mean | window mean |",
             "|---|---|---|---|---|---|---|"]
    for name, s in sorted(stats.items(), key=lambda item: -item[1]["psi"]):
        lines.append(f"| {name} | {'**yes**' if name in drifted else 'no'} | {s['psi']:.3f} | "
                     f"{s['ks_statistic']:.3f} | {s['ks_p_adjusted']:.2g} | "
                     f"{s['reference_mean']:.3f} | {s['window_mean']:.3f} |")
    return "\n".join(lines)
