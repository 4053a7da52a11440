"""Many small models at once: a tenant's small MLP trains in ONE Ray task (Ray Core) instead of
a Ray Train TorchTrainer, so the tasks of many tenants run side by side on the cluster (Ray's
"many model training" pattern). Same preprocessing statistics, same epoch loop, same MLflow
metrics and the same per-epoch checkpoints as `ray_training.fit` with one worker."""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml_assets.training.ray_training import (
    BINARY,
    STATE_FILE,
    VALIDATION_BATCH,
    epoch_dir_name,
    epoch_state,
    log_epoch,
    model_and_optimizer,
    run_epoch,
    step_logger,
)


@dataclass
class TaskData:
    """The splits as float32 arrays, scaled with the statistics of the training split; impute,
    mean, std and features as in `ray_training.Preprocessed` (what `torch_model` reads)."""

    train_x: np.ndarray
    train_y: np.ndarray
    validation_x: np.ndarray
    validation_y: np.ndarray
    impute: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    features: list[str]


@dataclass
class TaskFit:
    """What `trained_model` reads from a Ray Train Result, for a fit in one task."""

    metrics: dict[str, Any]  # the last epoch's
    metrics_dataframe: pd.DataFrame  # one row per epoch this attempt trained
    checkpoint: Any  # ray.train.Checkpoint of the last epoch: ray_training.load_state reads it
    data: TaskData  # the preprocessing, for the served model


def use_task(rows: pd.DataFrame, config: Any, max_rows: int) -> bool:
    """Whether a fit trains in one Ray task rather than Ray Train: its training split has at
    most `max_rows` rows and it asks for one worker and no GPU (asking for more is asking for
    Ray Train)."""
    return (int((rows["split"] == "train").sum()) <= max_rows and config.num_workers == 1
            and not getattr(config, "use_gpu", False))


def preprocess(frame: pd.DataFrame, features: Sequence[str], label: str) -> TaskData:
    """`ray_training.preprocess` in numpy: mean imputation, then standard scaling, both fitted
    on the training split only (Ray's Chain fits the scaler on the imputed rows, and its
    StandardScaler divides by N: ddof=0)."""
    features = list(features)
    missing = [c for c in [*features, label, "split"] if c not in frame.columns]
    if missing:
        raise KeyError(f"training rows lack columns {missing}")

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = frame.loc[frame["split"] == name, [*features, label]].astype("float32")
        return rows[features].to_numpy(), rows[label].to_numpy()

    train_x, train_y = split("train")
    validation_x, validation_y = split("validation")
    if not len(train_x) or not len(validation_x):
        raise ValueError("no 'train' or no 'validation' rows to train on")
    impute = np.nanmean(train_x.astype(np.float64), axis=0)
    imputed = np.where(np.isnan(train_x), impute.astype(np.float32), train_x).astype(np.float64)
    mean, std = imputed.mean(axis=0), imputed.std(axis=0, ddof=0)
    impute, mean, std = (a.astype(np.float32) for a in (impute, mean, std))
    scale = np.where(std > 0, std, 1).astype(np.float32)  # as ChurnModel does when serving

    def transform(x: np.ndarray) -> np.ndarray:
        return ((np.where(np.isnan(x), impute, x) - mean) / scale).astype(np.float32)

    return TaskData(transform(train_x), train_y, transform(validation_x), validation_y,
                    impute=impute, mean=mean, std=std, features=features)


def fit_in_task(
    frame: pd.DataFrame,
    features: list[str],
    label: str,
    loop_config: dict[str, Any],
    *,
    storage_path: str,
    storage_filesystem: Any,
    run_name: str,
    resume_from: str | None = None,
) -> TaskFit:
    """Train the MLP of `loop_config` (the torch config's fields, tracking_uri, run_id, task)
    in one Ray task of one CPU: the loop of `ray_training.fit` with one worker, checkpoints of
    every epoch at storage_path/run_name/epoch_NNNN, resumed from `resume_from` (a checkpoint
    directory in the same filesystem) when given. Blocks until the task ends; call it from
    threads to train many tenants at once."""
    data = preprocess(frame, features, label)
    config = {**loop_config, "n_features": len(data.features)}
    history, checkpoint = _run_task(_remote_train(), data, config, storage_path,
                                    storage_filesystem, run_name, resume_from,
                                    ("epoch_", STATE_FILE))
    return TaskFit(metrics=history[-1] if history else {},
                   metrics_dataframe=pd.DataFrame(history), data=data, checkpoint=checkpoint)


def _run_task(remote: Any, data: Any, config: dict[str, Any], storage_path: str,
              storage_filesystem: Any, run_name: str, resume_from: str | None,
              checkpoint_kind: tuple[str, str]) -> tuple[list[dict], Any]:
    """Run one training task to its end: (its reports, a ray.train.Checkpoint of the newest
    checkpoint directory of `checkpoint_kind`: (directory prefix, the file it holds))."""
    import ray
    import ray.train

    # a crashed attempt restarts from its last checkpoint, as Ray Train's max_failures does
    retries = int(config.get("max_failures", 0))
    task = remote.options(max_retries=retries, retry_exceptions=retries > 0,
                          name=f"train:{run_name}")
    run_dir = f"{storage_path.rstrip('/')}/{run_name}"
    reports = ray.get(task.remote(data, config, storage_filesystem, run_dir, resume_from))
    last = _latest_dir(storage_filesystem, run_dir, *checkpoint_kind)
    if last is None:
        raise RuntimeError(f"the task wrote no checkpoint under {run_dir}")
    return reports, ray.train.Checkpoint(last, filesystem=storage_filesystem)


@functools.cache
def _remote_train() -> Any:
    import ray

    return ray.remote(num_cpus=1)(_train)


def _train(data: TaskData, config: dict[str, Any], filesystem: Any, run_dir: str,
           resume_from: str | None) -> list[dict[str, Any]]:
    """The task: `ray_training.train_loop_per_worker` for world size 1, on arrays in memory.
    Returns the metrics of each epoch it trained."""
    import torch

    from ml_assets.training.run_metrics import RunMetrics

    # this task's own latest checkpoint (a retried attempt), else the earlier run's
    checkpoint = _latest_epoch_dir(filesystem, run_dir) or resume_from
    state, start_epoch, global_step = None, 0, 0
    if checkpoint is not None:
        with filesystem.open_input_file(f"{checkpoint}/{STATE_FILE}") as file:
            state = torch.load(io.BytesIO(file.readall()), weights_only=True,
                               map_location="cpu")
        start_epoch, global_step = state["epoch"] + 1, state.get("global_step", 0)
    if start_epoch >= config["epochs"]:
        # an earlier attempt trained every epoch (its driver died after the task finished)
        return [_logged_epoch(config, start_epoch - 1, global_step)]
    model, optimizer, loss_fn = model_and_optimizer(config, state)
    # copies: the arrays arrive read-only from Ray's object store
    train_x, train_y = torch.tensor(data.train_x), torch.tensor(data.train_y)
    validation_x, validation_y = torch.tensor(data.validation_x), torch.tensor(data.validation_y)
    batch_size = config["batch_size"]
    run_metrics = RunMetrics(config["tracking_uri"], config["run_id"])
    logged_epochs = run_metrics.logged_steps("val_loss")
    history = []
    for epoch in range(start_epoch, config["epochs"]):
        if config.get("fault_injection_epoch") == epoch and start_epoch == 0:
            raise RuntimeError(f"injected task failure at epoch {epoch}")
        metrics = run_epoch(
            model, optimizer, loss_fn,
            ((train_x[i:i + batch_size], train_y[i:i + batch_size])
             for i in range(0, len(train_y), batch_size)),
            ((validation_x[i:i + VALIDATION_BATCH], validation_y[i:i + VALIDATION_BATCH])
             for i in range(0, len(validation_y), VALIDATION_BATCH)),
            task=config.get("task", BINARY), epoch=epoch, start_epoch=start_epoch,
            global_step=global_step,
            on_step=step_logger(run_metrics if epoch not in logged_epochs else None,
                                config.get("log_every_n_steps")))
        global_step = int(metrics["global_step"])
        if epoch not in logged_epochs:
            log_epoch(run_metrics, metrics)
        buffer = io.BytesIO()
        torch.save(epoch_state(model, optimizer, epoch, global_step), buffer)
        directory = f"{run_dir}/{epoch_dir_name(epoch)}"
        filesystem.create_dir(directory, recursive=True)
        with filesystem.open_output_stream(f"{directory}/{STATE_FILE}") as file:
            file.write(buffer.getvalue())
        history.append(metrics)
    return history


def _logged_epoch(config: dict[str, Any], epoch: int, global_step: int) -> dict[str, Any]:
    """The last epoch's metrics as its attempt logged them to the MLflow run: the report of an
    attempt with nothing left to train."""
    from mlflow import MlflowClient

    logged = MlflowClient(config["tracking_uri"]).get_run(config["run_id"]).data.metrics
    return {**{k: v for k, v in logged.items() if not k.startswith("step_")},
            "epoch": epoch, "resumed_from_epoch": epoch, "global_step": global_step}


def _latest_epoch_dir(filesystem: Any, run_dir: str) -> str | None:
    return _latest_dir(filesystem, run_dir, "epoch_", STATE_FILE)


def _latest_dir(filesystem: Any, run_dir: str, prefix: str, file_name: str) -> str | None:
    """The newest `prefix`NNNN directory under run_dir that holds `file_name`, if any."""
    from pyarrow import fs

    found = filesystem.get_file_info(fs.FileSelector(run_dir, allow_not_found=True,
                                                     recursive=True))
    dirs = sorted(info.path.rsplit("/", 1)[0] for info in found
                  if info.path.endswith(f"/{file_name}")
                  and info.path.rsplit("/", 2)[-2].startswith(prefix))
    return dirs[-1] if dirs else None


@dataclass
class BoostingTaskFit:
    """What `families.train` reads from a Ray Train Result, for a booster fit in one task."""

    metrics: dict[str, Any]  # the last report's: round, resumed_at_round, val_* ...
    metrics_dataframe: pd.DataFrame  # one row per report (every checkpoint_every_rounds)
    checkpoint: Any  # ray.train.Checkpoint of the last round: boosting.load_booster reads it


def fit_boosting_in_task(
    frame: pd.DataFrame,
    features: list[str],
    label: str,
    loop_config: dict[str, Any],
    *,
    storage_path: str,
    storage_filesystem: Any,
    run_name: str,
    resume_from: str | None = None,
) -> BoostingTaskFit:
    """`boosting.fit` with one worker, in one Ray task of one CPU: the same params, per-round
    metrics in the MLflow run and booster checkpoints at storage_path/run_name/round_NNNNN.
    loop_config: the boosting config's fields, task, tracking_uri and run_id."""
    features = list(features)
    missing = [c for c in [*features, label, "split"] if c not in frame.columns]
    if missing:
        raise KeyError(f"training rows lack columns {missing}")
    arrays = []
    for name in ("train", "validation"):
        rows = frame.loc[frame["split"] == name]
        if rows.empty:
            raise ValueError(f"no {name!r} rows to train on")
        arrays += [rows[features].to_numpy(np.float32), rows[label].to_numpy(np.float32)]
    config = {**loop_config, "features": features}
    reports, checkpoint = _run_task(_remote_boost(), arrays, config, storage_path,
                                    storage_filesystem, run_name, resume_from,
                                    ("round_", _booster_file(config["family"])))
    return BoostingTaskFit(metrics=reports[-1], metrics_dataframe=pd.DataFrame(reports),
                           checkpoint=checkpoint)


@functools.cache
def _remote_boost() -> Any:
    import ray

    return ray.remote(num_cpus=1)(_boost)


def _booster_file(family: str) -> str:
    from ml_assets.training.boosting import BOOSTER_FILES

    return BOOSTER_FILES[family]


def _boost(arrays: list[np.ndarray], config: dict[str, Any], filesystem: Any, run_dir: str,
           resume_from: str | None) -> list[dict[str, Any]]:
    """The task: `boosting.train_loop_per_worker` for world size 1, on arrays in memory.
    Returns every round report (what Ray Train's metrics_dataframe holds)."""
    import tempfile
    from pathlib import Path

    import ray.train

    from ml_assets.training.boosting import (
        RoundReporter,
        boost,
        boosted_rounds,
        load_booster,
        save_booster,
    )

    family, file_name = config["family"], _booster_file(config["family"])
    checkpoint = _latest_dir(filesystem, run_dir, "round_", file_name) or resume_from
    booster = (load_booster(family, ray.train.Checkpoint(checkpoint, filesystem=filesystem))
               if checkpoint is not None else None)
    reports = []

    def save(report: dict[str, Any], name: str, booster: Any) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save_booster(family, booster, directory)
            filesystem.create_dir(f"{run_dir}/{name}", recursive=True)
            with filesystem.open_output_stream(f"{run_dir}/{name}/{file_name}") as file:
                file.write((Path(directory) / file_name).read_bytes())
        reports.append(report)

    start = boosted_rounds(family, booster) if booster is not None else 0
    reporter = RoundReporter(config, start, rank=0, world_size=1, save=save)
    boost(family, booster, reporter, *arrays, config["features"], threads=1)
    return reports
