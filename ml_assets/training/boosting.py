"""Gradient-boosted trees on Ray Train V2: XGBoost through XGBoostTrainer and LightGBM through
LightGBMTrainer, one training loop for both. Rank 0 writes every round's train and validation
metrics to the tenant's MLflow run and checkpoints the booster to the object store every N
rounds; after a worker failure the next attempt continues boosting from that booster."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_assets.training.ray_training import (
    BINARY,
    LABEL_COLUMN,
    controller_env,
    run_config,
)

BOOSTER_FILES = {"xgboost": "model.ubj", "lightgbm": "model.txt"}
CHECKPOINT_PREFIX = "round_"
# each round's eval metrics as the libraries name them -> our name (MLflow key: split_name)
METRIC_NAMES = {"binary_logloss": "logloss", "logloss": "logloss", "auc": "auc",
                "rmse": "rmse"}


def prepare(frame: pd.DataFrame, features: Sequence[str], label: str) -> dict[str, Any]:
    """The train and validation splits as Ray Datasets of the raw features and LABEL_COLUMN:
    trees need no scaling and send missing values down a learned branch."""
    import ray.data

    features = list(features)
    missing = [c for c in [*features, label, "split"] if c not in frame.columns]
    if missing:
        raise KeyError(f"training rows lack columns {missing}")
    datasets = {}
    for name in ("train", "validation"):
        rows = frame.loc[frame["split"] == name, features].astype("float32")
        if rows.empty:
            raise ValueError(f"no {name!r} rows to train on")
        rows[LABEL_COLUMN] = frame.loc[rows.index, label].astype("float32")
        # materialized: the trainer's workers may hold every CPU, a lazy read would then wait
        datasets[name] = ray.data.from_pandas(rows.reset_index(drop=True)).materialize()
    return datasets


def booster_params(config: dict[str, Any], task: str, threads: int) -> dict[str, Any]:
    """The library's own parameters for the family's config and the task."""
    binary = task == BINARY
    common = {"learning_rate": config["learning_rate"], "subsample": config["subsample"],
              "colsample_bytree": config["colsample_bytree"],
              "reg_lambda": config["reg_lambda"], "max_bin": config["max_bin"],
              "seed": config["seed"]}
    if config["family"] == "xgboost":
        return {**common, "tree_method": "hist", "nthread": threads,
                "objective": "binary:logistic" if binary else "reg:squarederror",
                "eval_metric": ["logloss", "auc"] if binary else ["rmse"],
                "max_depth": config["max_depth"],
                "min_child_weight": config["min_child_weight"]}
    return {**common, "num_threads": threads, "verbosity": -1,
            "objective": "binary" if binary else "regression",
            "metric": ["binary_logloss", "auc"] if binary else ["rmse"],
            "num_leaves": config["num_leaves"], "max_depth": config["max_depth"],
            "min_data_in_leaf": config["min_data_in_leaf"],
            # LightGBM samples rows only with a bagging frequency
            "subsample_freq": 1 if config["subsample"] < 1 else 0}


def save_booster(family: str, booster: Any, directory: str | Path) -> None:
    booster.save_model(str(Path(directory) / BOOSTER_FILES[family]))


def load_booster(family: str, checkpoint: Any) -> Any:
    """The booster in a Ray Train checkpoint (local or in the object store)."""
    with checkpoint.as_directory() as directory:
        path = Path(directory) / BOOSTER_FILES[family]
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {checkpoint.path} holds no {path.name}: "
                                    f"not a {family} checkpoint")
        if family == "xgboost":
            import xgboost

            return xgboost.Booster(model_file=str(path))
        import lightgbm

        return lightgbm.Booster(model_file=str(path))


def boosted_rounds(family: str, booster: Any) -> int:
    return booster.num_boosted_rounds() if family == "xgboost" else booster.current_iteration()


class RoundReporter:
    """Called after every boosting round on every rank: rank 0 buffers the round's metrics for
    MLflow; every `checkpoint_every_rounds` rounds and at the last round all ranks report to
    Ray Train, rank 0 with the booster as a checkpoint and the buffered metrics flushed."""

    def __init__(self, config: dict[str, Any], start_round: int, *, rank: int,
                 world_size: int, save: Any, fault_wait_s: float = 0.0) -> None:
        """`save(report, checkpoint_dir_name, booster)` reports a round (booster: rank 0's
        checkpoint, else None); `fault_wait_s`: how long an injected fault waits first."""
        from ml_assets.training.run_metrics import RunMetrics

        self.config, self.start_round = config, start_round
        self.rank, self.world_size = rank, world_size
        self.save, self.fault_wait_s = save, fault_wait_s
        self.created = self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.data_seconds = 0.0
        self.run_metrics, self.logged = None, set()
        if self.rank == 0:
            self.run_metrics = RunMetrics(config["tracking_uri"], config["run_id"])
            # an earlier attempt wrote the rounds up to its last checkpoint: not again
            primary = "val_logloss" if config["task"] == BINARY else "val_rmse"
            self.logged = self.run_metrics.logged_steps(primary)
            if start_round:
                self.run_metrics.add(start_round, {"resumed_at_round": start_round})

    def start_boosting(self) -> None:
        """The data is loaded: from here on the time is the boosting's (`train_seconds`)."""
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.data_seconds = self.started - self.created

    def after_round(self, booster: Any, rounds: int, metrics: dict[str, float],
                    final: bool = False) -> None:
        """`rounds`: the rounds in the booster now; `metrics`: {"val_auc": ...} of the last;
        `final`: report the booster as the result whatever the round."""
        config = self.config
        if self.rank == 0 and metrics and rounds - 1 not in self.logged:
            self.run_metrics.add(rounds - 1, metrics)
        last = final or rounds == config["num_boost_round"]
        if last or rounds % config["checkpoint_every_rounds"] == 0:
            # train_seconds: this attempt's boosting, checkpoints and MLflow writes included;
            # data_seconds: its shard read from Ray Data and turned into the library's matrix
            report = {**metrics, "round": rounds, "resumed_at_round": self.start_round,
                      "train_seconds": time.perf_counter() - self.started,
                      # CPU time of the worker process: comparable on a machine shared by others
                      "train_cpu_seconds": time.process_time() - self.cpu_started,
                      "data_seconds": self.data_seconds}
            if self.rank == 0:
                self.run_metrics.flush()
            self.save(report, f"{CHECKPOINT_PREFIX}{rounds:05d}",
                      booster if self.rank == 0 else None)
        fault = config.get("fault_injection_round")
        if fault == rounds and self.start_round == 0 and self.rank == self.world_size - 1:
            time.sleep(self.fault_wait_s)
            raise RuntimeError(f"injected worker failure after round {rounds} "
                               f"(rank {self.rank})")


def _shard(name: str, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import ray.train

    frame = ray.train.get_dataset_shard(name).materialize().to_pandas()
    return frame[features].to_numpy(np.float32), frame[LABEL_COLUMN].to_numpy(np.float32)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One worker of an XGBoost or LightGBM data-parallel fit; resumes from the run's latest
    checkpoint (or `resume_from`, an earlier attempt's) and boosts the remaining rounds."""
    import ray.train

    family, features = config["family"], config["features"]
    checkpoint = ray.train.get_checkpoint()  # this run's latest, after a worker failure
    if checkpoint is None and config.get("resume_from"):
        checkpoint = ray.train.Checkpoint(config["resume_from"],
                                          filesystem=config["resume_filesystem"])
    booster = load_booster(family, checkpoint) if checkpoint is not None else None
    start = boosted_rounds(family, booster) if booster is not None else 0
    context = ray.train.get_context()

    def save(report: dict[str, Any], name: str, booster: Any) -> None:
        if booster is None:
            ray.train.report(report, checkpoint_dir_name=name)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_booster(family, booster, directory)
            ray.train.report(report, checkpoint_dir_name=name,
                             checkpoint=ray.train.Checkpoint.from_directory(directory))

    reporter = RoundReporter(
        config, start, rank=context.get_world_rank(), world_size=context.get_world_size(),
        save=save,
        # give the controller a poll to register the last checkpoint (see ray_training)
        fault_wait_s=5 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")))
    network = {}
    if family == "lightgbm" and reporter.world_size > 1:
        import ray.train.lightgbm

        network = {"tree_learner": "data_parallel", "pre_partition": True,
                   **ray.train.lightgbm.get_network_params()}
    boost(family, booster, reporter, *_shard("train", features), *_shard("validation", features),
          features, threads=max(1, int(config["cpus_per_worker"])), extra_params=network)


def boost(family: str, booster: Any, reporter: RoundReporter, x: np.ndarray, y: np.ndarray,
          x_val: np.ndarray, y_val: np.ndarray, features: list[str], *, threads: int,
          extra_params: dict[str, Any] | None = None) -> None:
    """Boost the rounds `booster` (None: a new one) still lacks, the same in a Ray Train worker
    and in a Ray task, the reporter seeing every round."""
    config, start = reporter.config, reporter.start_round
    remaining = config["num_boost_round"] - start
    if remaining <= 0:  # the checkpoint already holds every round: report it as the result
        reporter.after_round(booster, start, {}, final=True)
        return
    params = {**booster_params(config, config["task"], threads), **(extra_params or {})}
    if family == "xgboost":
        _boost_xgboost(params, x, y, x_val, y_val, features, remaining, booster, reporter)
    else:
        _boost_lightgbm(params, x, y, x_val, y_val, features, remaining, booster, reporter)


def _boost_xgboost(params, x, y, x_val, y_val, features, rounds, booster, reporter) -> None:
    import xgboost

    class Callback(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            # epoch counts from 0 in every xgboost.train call, even one continuing a booster
            reporter.after_round(model, model.num_boosted_rounds(), {
                f"{split}_{METRIC_NAMES[name]}": values[-1]
                for split, by_name in evals_log.items() for name, values in by_name.items()})
            return False

    train = xgboost.QuantileDMatrix(x, label=y, feature_names=features,
                                    max_bin=params["max_bin"])
    validation = xgboost.QuantileDMatrix(x_val, label=y_val, feature_names=features, ref=train)
    reporter.start_boosting()
    xgboost.train(params, train, num_boost_round=rounds, xgb_model=booster,
                  evals=[(train, "train"), (validation, "val")], verbose_eval=False,
                  callbacks=[Callback()])


def _boost_lightgbm(params, x, y, x_val, y_val, features, rounds, booster, reporter) -> None:
    import lightgbm

    def callback(env: Any) -> None:
        # env.iteration counts on from the init model's rounds
        reporter.after_round(env.model, env.iteration + 1, {
            f"{split}_{METRIC_NAMES[name]}": value
            for split, name, value, _ in env.evaluation_result_list})

    # raw data kept: continuing an init_model scores the rows after construction
    train = lightgbm.Dataset(x, label=y, feature_name=features, params=params,
                             free_raw_data=False)
    validation = lightgbm.Dataset(x_val, label=y_val, reference=train, params=params,
                                  free_raw_data=False)
    # LightGBM bins the data lazily, inside train: construct it here, as data time
    train.construct()
    validation.construct()
    reporter.start_boosting()
    lightgbm.train(params, train, num_boost_round=rounds, init_model=booster,
                   valid_sets=[train, validation], valid_names=["train", "val"],
                   callbacks=[callback])


def fit(
    datasets: dict[str, Any],
    loop_config: dict[str, Any],
    *,
    num_workers: int,
    cpus_per_worker: float,
    storage_path: str,
    storage_filesystem: Any,
    run_name: str,
    max_failures: int = 0,
    resume_from: str | None = None,
) -> Any:
    """Run the family's Ray Train trainer; checkpoints go to storage_path/run_name/round_NNNNN.
    loop_config: the boosting config's fields, features, task, tracking_uri and run_id."""
    import ray.train

    controller_env()
    family = loop_config["family"]
    if family == "xgboost":
        from ray.train.xgboost import XGBoostTrainer as Trainer
    elif family == "lightgbm":
        from ray.train.lightgbm import LightGBMTrainer as Trainer
    else:
        raise ValueError(f"not a boosting family: {family!r} (xgboost or lightgbm)")
    trainer = Trainer(
        train_loop_per_worker,
        train_loop_config={**loop_config, "cpus_per_worker": cpus_per_worker,
                           "resume_from": resume_from, "resume_filesystem": storage_filesystem},
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, resources_per_worker={"CPU": cpus_per_worker}),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=run_config(run_name, storage_path, storage_filesystem, max_failures),
    )
    return trainer.fit()
