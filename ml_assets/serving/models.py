"""One way to load a logged model of any family and score a feature matrix with it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]


def load_predictor(model_uri: str) -> Predictor:
    """matrix [n, F] float32 -> predictions [n] (probabilities for a binary label)."""
    import mlflow.pytorch as mlflow_pytorch
    import torch

    model = mlflow_pytorch.load_model(model_uri).eval()

    def predict(matrix: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor(matrix, dtype=torch.float32)).numpy().reshape(-1)

    return predict
