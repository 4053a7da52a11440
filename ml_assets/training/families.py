"""Train any model family through Ray Train with one call: `train(config, rows, features=...,
label=..., task=..., storage=..., tracking=..., run_name=...)`. The family's config picks the
trainer (TorchTrainer, XGBoostTrainer, LightGBMTrainer); every family checkpoints to the same
object-store storage, writes its per-epoch / per-round metrics to the tenant's MLflow run, and
logs its final model with its MLflow flavor and a `model_type` tag."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import pandas as pd

from ml_assets.training.config import ExperimentConfig, LightGBMConfig, XGBoostConfig

TASKS = ("binary_classification", "regression")
MODEL_ARTIFACT = "model"
# what loading each logged model imports, pinned to the installed versions; explicit because
# MLflow would infer `xgboost` beside `xgboost-cpu`, and `xgboost` pulls the GPU wheel (DESIGN)
MODEL_PACKAGES = {
    "torch_mlp": ["ml-assets", "mlflow", "torch", "cloudpickle", "numpy", "pandas"],
    "xgboost": ["mlflow", "xgboost-cpu", "numpy", "pandas", "scipy"],
    "lightgbm": ["mlflow", "lightgbm", "numpy", "pandas", "scipy"],
}


@dataclass(frozen=True)
class CheckpointStorage:
    """Where Ray Train writes checkpoints: a path in a pyarrow filesystem (the tenant's
    `checkpoints` prefix in the object store)."""

    path: str
    filesystem: Any


@dataclass(frozen=True)
class Tracking:
    """The tenant's MLflow run the metrics and the model go to."""

    tracking_uri: str
    run_id: str


@dataclass(frozen=True)
class TrainedModel:
    family: str
    model_uri: str
    metrics: dict[str, float]  # the final model on the validation rows: val_<task metric>
    checkpoint: Any  # the ray.train.Checkpoint of the last epoch / round
    result: Any  # the ray.train.Result (metrics_dataframe: this attempt's reports)
    predict: Any  # the trained model in memory: float matrix [n, F] -> [n] (see predictor)


def model_requirements(family: str) -> list[str]:
    """The logged model's pip requirements: its packages pinned to the installed versions."""
    return [f"{name}=={version(name)}" for name in MODEL_PACKAGES[family]]


def train(
    config: ExperimentConfig | XGBoostConfig | LightGBMConfig,
    rows: pd.DataFrame,
    *,
    features: Sequence[str],
    label: str,
    task: str,
    storage: CheckpointStorage,
    tracking: Tracking,
    run_name: str,
    resume_from: str | None = None,
    task_max_rows: int = 0,
) -> TrainedModel:
    """Train `config.family` on `rows` (a `split` column: train / validation) in a connected
    Ray cluster: in one Ray task up to `task_max_rows` training rows (many small models train
    side by side), else Ray Train; checkpoints under storage.path/run_name, resumed from
    `resume_from` (an earlier attempt's checkpoint directory) when given. Returns the logged
    model's URI and its validation metrics."""
    import mlflow

    from ml_assets.training import boosting, many_models, ray_training
    from ml_assets.training.metrics import task_metrics
    from ml_assets.training.predictor import booster_predictor, torch_predictor

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: one of {list(TASKS)}")
    features, family = list(features), config.family
    loop_config = {**config.model_dump(), "features": features, "task": task,
                   "tracking_uri": tracking.tracking_uri, "run_id": tracking.run_id}
    run = fit_args(config, storage, run_name, resume_from)
    if family == "torch_mlp":
        result, data = fit_torch(config, rows, features, label, loop_config, run, task_max_rows)
        model = torch_model(ray_training.load_state(result.checkpoint), data, config, task)
        predict = torch_predictor(model)
    else:
        result = (many_models.fit_boosting_in_task(rows, features, label, loop_config,
                                                   **_task_args(run))
                  if many_models.use_task(rows, config, task_max_rows) else
                  boosting.fit(boosting.prepare(rows, features, label), loop_config, **run))
        model = boosting.load_booster(family, result.checkpoint)
        predict = booster_predictor(family, model)
    validation = rows.loc[rows["split"] == "validation"]
    scores = task_metrics(task, validation[label].to_numpy(),
                          predict(validation[features].to_numpy()))
    example = rows.loc[rows["split"] == "train", features].head(5).astype("float64")
    # the fluent log_model reads the process's tracking URI (MlflowRegistry sets the same)
    mlflow.set_tracking_uri(tracking.tracking_uri)
    model_uri = _log_model(family, model, example, predict(example.to_numpy()), tracking.run_id)
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri)
    client.set_tag(tracking.run_id, "model_type", family)
    return TrainedModel(family=family, model_uri=model_uri,
                        metrics={f"val_{k}": v for k, v in scores.items()},
                        checkpoint=result.checkpoint, result=result, predict=predict)


def fit_args(config: Any, storage: CheckpointStorage, run_name: str,
             resume_from: str | None) -> dict[str, Any]:
    """The keyword arguments of a family's Ray Train `fit`: where it checkpoints, its workers."""
    return {"storage_path": storage.path, "storage_filesystem": storage.filesystem,
            "run_name": run_name, "num_workers": config.num_workers,
            "cpus_per_worker": config.cpus_per_worker, "max_failures": config.max_failures,
            "resume_from": resume_from}


def fit_torch(config: ExperimentConfig, rows: pd.DataFrame, features: Sequence[str],
              label: str, loop_config: dict, run: dict, task_max_rows: int) -> tuple[Any, Any]:
    """(result, preprocessing) of the MLP: fitted in one Ray task up to `task_max_rows`
    training rows, else with Ray Train. `run`: ray_training.fit's keyword arguments."""
    from ml_assets.training import many_models, ray_training

    if many_models.use_task(rows, config, task_max_rows):
        result = many_models.fit_in_task(rows, list(features), label, loop_config,
                                         **_task_args(run))
        return result, result.data
    data = ray_training.preprocess(rows, features, label)
    return ray_training.fit(data, loop_config, use_gpu=config.use_gpu, **run), data


def _task_args(run: dict) -> dict:
    """ray_training.fit's arguments a task takes (its retries come from loop_config)."""
    return {k: run[k] for k in ("storage_path", "storage_filesystem", "run_name",
                                "resume_from")}


def torch_model(state: dict, data: Any, config: ExperimentConfig, task: str) -> Any:
    """The trained MLP with its preprocessing, as served: probabilities for a binary task."""
    import torch

    from ml_assets.training.model import ChurnMLP, ChurnModel

    mlp = ChurnMLP(len(data.features), config.hidden_sizes, config.dropout)
    mlp.load_state_dict(state["model"])
    return ChurnModel(mlp, torch.from_numpy(data.impute), torch.from_numpy(data.mean),
                      torch.from_numpy(data.std),
                      probability=task == "binary_classification").eval()


def _log_model(family: str, model: Any, example: pd.DataFrame, output: Any, run_id: str) -> str:
    import mlflow
    from mlflow import lightgbm as mlflow_lightgbm
    from mlflow import pytorch as mlflow_pytorch
    from mlflow import xgboost as mlflow_xgboost
    from mlflow.models import infer_signature

    signature = infer_signature(example, output)
    common = {"name": MODEL_ARTIFACT, "signature": signature, "input_example": example,
              "pip_requirements": model_requirements(family)}
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        if family == "xgboost":
            info = mlflow_xgboost.log_model(model, model_format="ubj", **common)
        elif family == "lightgbm":
            info = mlflow_lightgbm.log_model(model, **common)
        else:
            # pickle keeps the named-column signature (pt2 needs tensor examples)
            info = mlflow_pytorch.log_model(model, serialization_format="pickle", **common)
    return info.model_uri
