"""Quality from real labels: the gate metric on the window's scored customers whose labels
arrived after they were scored, against the version's holdout value; and before labels arrive,
an estimate from the predicted probabilities alone (confidence-based performance estimation,
as NannyML's CBPE does: a calibrated model's probabilities are the expected labels)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_assets.monitoring.statistics import Outcome
from ml_assets.training.metrics import LOWER_IS_BETTER, task_metrics

REALIZED_QUALITY = "realized_quality"


def expected_roc_auc(probabilities: np.ndarray) -> float | None:
    """ROC AUC expected if the probabilities are calibrated: each row counts as p positive
    and 1 - p negative at every threshold (CBPE). None for fewer than 2 rows."""
    p = np.sort(np.asarray(probabilities, dtype=np.float64))[::-1]
    if p.size < 2 or not np.isfinite(p).all():
        return None
    tp, fp = np.concatenate([[0.0], np.cumsum(p)]), np.concatenate([[0.0], np.cumsum(1 - p)])
    if tp[-1] <= 0 or fp[-1] <= 0:
        return None
    return float(np.trapezoid(tp / tp[-1], fp / fp[-1]))


def labeled_after_scoring(scored: pd.DataFrame, labels: pd.DataFrame, entity: str, ts: str,
                          label: str, label_ts: str) -> pd.DataFrame:
    """Each scored row (entity, ts, prediction) with the first label of its entity that
    arrived after it was scored; rows with no such label are left out."""
    scored = scored.dropna(subset=[entity, "prediction"]).sort_values(ts)
    labels = labels.dropna(subset=[entity, label, label_ts]).sort_values(label_ts)
    if scored.empty or labels.empty:
        return scored.iloc[0:0].assign(**{label: pd.Series(dtype=float)})
    # the log keeps every key as a string; the label file has the use case's key type
    scored = scored.assign(**{entity: scored[entity].astype(str),
                              ts: pd.to_datetime(scored[ts], utc=True)})
    labels = labels[[entity, label, label_ts]].assign(
        **{entity: labels[entity].astype(str),
           label_ts: pd.to_datetime(labels[label_ts], utc=True)})
    joined = pd.merge_asof(scored, labels, left_on=ts, right_on=label_ts, by=entity,
                           direction="forward", allow_exact_matches=False)
    return joined.dropna(subset=[label])


def realized_quality(joined: pd.DataFrame, label: str, holdout: float | None, metric: str,
                     max_drop: float, min_rows: int, scored: np.ndarray,
                     task: str = "binary_classification") -> Outcome:
    """Fails when the metric on the labeled rows is worse than the holdout value by more than
    max_drop. Too few labeled rows (or no holdout value to compare with) only warns. The CBPE
    estimate over all the window's `scored` probabilities goes alongside."""
    rows = len(joined)
    estimate = expected_roc_auc(scored) if task == "binary_classification" else None
    details: dict = {"metric": metric, "holdout_value": holdout, "max_drop": max_drop,
                     "expected_roc_auc_cbpe": estimate}
    if rows < min_rows or holdout is None:
        reason = (f"too few labeled rows in the window: {rows} < {min_rows}" if rows < min_rows
                  else f"the version has no holdout {metric} to compare with")
        return Outcome(REALIZED_QUALITY, passed=False, observed=None, threshold=max_drop,
                       rows=rows, enough_data=False, details={**details, "reason": reason})
    y = joined[label].to_numpy(dtype=np.float64)
    if np.unique(y).size < 2 and metric == "roc_auc":
        return Outcome(REALIZED_QUALITY, passed=False, observed=None, threshold=max_drop,
                       rows=rows, enough_data=False,
                       details={**details, "reason": "labels of one class only: no ROC AUC"})
    realized = task_metrics(task, y, joined["prediction"].to_numpy(dtype=np.float64))[metric]
    drop = (realized - holdout) if metric in LOWER_IS_BETTER else (holdout - realized)
    # observed and threshold in one unit: the drop from the holdout value
    return Outcome(REALIZED_QUALITY, passed=bool(drop <= max_drop), observed=float(drop),
                   threshold=max_drop, rows=rows,
                   details={**details, "realized_value": float(realized),
                            "reason": f"{metric} {realized:.4f} on {rows} labeled rows vs "
                                      f"holdout {holdout:.4f}: drop {drop:+.4f}, "
                                      f"at most {max_drop}"})
