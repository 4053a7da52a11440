"""Metrics of each task, shared by training (per epoch) and evaluation (holdout)."""

from __future__ import annotations

import numpy as np

LOWER_IS_BETTER = {"brier", "log_loss", "rmse", "mae"}


def binary_metrics(y_true: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    from sklearn import metrics

    y_true = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    y_pred = (p >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "precision": float(metrics.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(metrics.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(metrics.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(y_true, p)) if both_classes else float("nan"),
        "log_loss": float(metrics.log_loss(y_true, p, labels=[0, 1])),
        "brier": float(metrics.brier_score_loss(y_true, p)),
    }


def regression_metrics(y_true: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    y_true, prediction = np.asarray(y_true, dtype=float), np.asarray(prediction, dtype=float)
    return {
        "rmse": float(np.sqrt(metrics.mean_squared_error(y_true, prediction))),
        "mae": float(metrics.mean_absolute_error(y_true, prediction)),
        "r2": float(metrics.r2_score(y_true, prediction)) if len(y_true) > 1 else float("nan"),
    }


def task_metrics(task: str, y_true: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """The task's metrics of predictions (probabilities for binary, values for regression)."""
    if task == "binary_classification":
        return binary_metrics(y_true, prediction)
    if task == "regression":
        return regression_metrics(y_true, prediction)
    raise ValueError(f"unknown task {task!r}: binary_classification or regression")
