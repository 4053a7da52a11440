"""A registered model version as one callable, whatever its family: float32 rows in, one number
per row out (the positive class's probability for a binary use case, the value for a
regression). The Serve replica, batch scoring and tests load models only through here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, get_args

from ml_assets.use_case import Family

if TYPE_CHECKING:
    import numpy as np

Predictor = Callable[["np.ndarray"], "np.ndarray"]
FAMILIES: tuple[str, ...] = get_args(Family)
MODEL_TYPE_TAG = "model_type"  # the version tag naming its family (training writes it)
DEFAULT_FAMILY = "torch_mlp"  # versions registered before the tag existed
LEGACY_MODEL_TYPES = {"pytorch-mlp": "torch_mlp"}  # what runs before the families were tagged


class UnknownFamilyError(ValueError):
    """A version whose model_type tag names no family this code can load."""


def family_of(tags: dict[str, str] | None) -> str:
    """The family a version's tags name (DEFAULT_FAMILY without the tag)."""
    family = (tags or {}).get(MODEL_TYPE_TAG) or DEFAULT_FAMILY
    family = LEGACY_MODEL_TYPES.get(family, family)
    if family not in FAMILIES:
        raise UnknownFamilyError(f"model_type {family!r} is not one of {list(FAMILIES)}")
    return family


def load_predictor(model_uri: str, family: str) -> Predictor:
    """The model at model_uri (through its MLflow flavor) as rows[n, F] float32 -> [n]."""
    return load_sized(model_uri, family)[0]


def load_sized(model_uri: str, family: str) -> tuple[Predictor, int]:
    """load_predictor's predictor and the model's size in bytes: a torch model's parameters
    and buffers, a booster's serialized form (what the Serve replica's cache bounds)."""
    from ml_assets.training.predictor import booster_predictor, torch_predictor

    if family not in FAMILIES:
        raise UnknownFamilyError(f"model_type {family!r} is not one of {list(FAMILIES)}")
    if family == "torch_mlp":
        import mlflow.pytorch

        model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
        return torch_predictor(model), torch_bytes(model)
    if family == "xgboost":
        import mlflow.xgboost

        model = mlflow.xgboost.load_model(model_uri)
    else:
        import mlflow.lightgbm

        model = mlflow.lightgbm.load_model(model_uri)
    if hasattr(model, "predict_proba") or not hasattr(model, "save_model"):
        return _sklearn(model), booster_bytes(model)  # a scikit-learn wrapper
    return booster_predictor(family, model), booster_bytes(model)


def torch_bytes(model: Any) -> int:
    """Bytes of a torch module's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def booster_bytes(model: Any) -> int:
    """Bytes of an XGBoost or LightGBM booster (or its scikit-learn wrapper), serialized."""
    booster = getattr(model, "booster_", None)  # lightgbm's scikit-learn wrapper
    booster = model if booster is None else booster
    if hasattr(booster, "get_booster"):
        booster = booster.get_booster()
    if hasattr(booster, "save_raw"):  # xgboost
        return len(booster.save_raw("ubj"))
    return len(booster.model_to_string())  # lightgbm


def _sklearn(model: Any) -> Predictor:
    import numpy as np

    proba = getattr(model, "predict_proba", None)

    def predict(rows: np.ndarray) -> np.ndarray:
        if proba is not None:
            return np.asarray(proba(rows), dtype=np.float64)[:, 1]
        return np.asarray(model.predict(rows), dtype=np.float64).reshape(len(rows))

    return predict
