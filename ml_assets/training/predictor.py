"""A trained model in memory as a function from a float matrix [n, F] (the use case's features,
in order) to [n] predictions: probabilities for binary classification, values for regression.
A logged one is loaded through ml_assets.serving.models.load_predictor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]


def _checked(x: Any, n_features: int | None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        raise ValueError(f"expected rows of {n_features} features, an array [n, "
                         f"{n_features}]; got shape {x.shape}")
    return x


def booster_predictor(family: str, booster: Any) -> Predictor:
    """The predictor of an in-memory XGBoost or LightGBM booster (binary objectives already
    output probabilities)."""
    if family == "xgboost":
        n_features = booster.num_features()
        return lambda x: np.asarray(booster.inplace_predict(_checked(x, n_features)),
                                    dtype=np.float64)
    if family == "lightgbm":
        n_features = booster.num_feature()
        return lambda x: np.asarray(booster.predict(_checked(x, n_features)), dtype=np.float64)
    raise ValueError(f"not a boosting family: {family!r} (xgboost or lightgbm)")


def torch_predictor(model: Any) -> Predictor:
    """The predictor of a ChurnModel (preprocessing inside; sigmoid for binary)."""
    import torch

    model = model.eval()
    mean = getattr(model, "mean", None)  # a ChurnModel knows its width; any other module
    n_features = None if mean is None else int(mean.shape[0])

    def predict(x: np.ndarray) -> np.ndarray:
        rows = _checked(x, n_features)
        with torch.no_grad():
            return model(torch.from_numpy(rows)).numpy().astype(np.float64).reshape(len(rows))

    return predict
