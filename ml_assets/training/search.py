"""Hyperparameter search on Ray Tune: Optuna's TPE (Bayesian) proposes, ASHA stops early."""

from typing import Any

import numpy as np

from ml_assets.training.ray_training import LABEL_COLUMN, Preprocessed


def arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    frame = dataset.to_pandas()
    return np.stack(frame["features"].to_numpy()).astype(np.float32), \
        frame[LABEL_COLUMN].to_numpy(np.float32)


def trial(config: dict[str, Any], data: dict[str, np.ndarray], fixed: dict[str, Any]) -> None:
    """One trial: a single-process torch loop, reporting validation metrics every epoch and
    logging them to its own MLflow child run under the search's parent run."""
    import torch
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from ray import tune

    from ml_assets.training.metrics import binary_metrics
    from ml_assets.training.model import ChurnMLP

    torch.manual_seed(fixed["seed"])
    client = MlflowClient(tracking_uri=fixed["tracking_uri"])
    child = client.create_run(fixed["experiment_id"], run_name=tune.get_context().get_trial_name(),
                              tags={"mlflow.parentRunId": fixed["parent_run_id"],
                                    "tenant": fixed["tenant"]})
    run_id = child.info.run_id
    for key, value in config.items():
        client.log_param(run_id, key, value)
    model = ChurnMLP(data["x_train"].shape[1], list(config["hidden_sizes"]), config["dropout"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    x_val = torch.from_numpy(data["x_validation"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    try:
        for epoch in range(fixed["max_epochs"]):
            model.train()
            order = torch.randperm(len(x))
            for start in range(0, len(x), config["batch_size"]):
                rows = order[start:start + config["batch_size"]]
                optimizer.zero_grad()
                loss_fn(model(x[rows]), y[rows]).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                p = torch.sigmoid(model(x_val)).numpy()
            scores = binary_metrics(data["y_validation"], p)
            metrics = {"val_loss": scores["log_loss"], "val_roc_auc": scores["roc_auc"]}
            client.log_batch(run_id, metrics=[Metric(k, v, 0, epoch) for k, v in metrics.items()])
            tune.report(metrics)  # ASHA may stop the trial here
    finally:
        client.set_terminated(run_id)


def search(data: Preprocessed, space: dict[str, Any], fixed: dict[str, Any], *,
           num_samples: int, storage_path: str, storage_filesystem: Any, name: str,
           callbacks: list[Any] | None = None) -> Any:
    """Run the search; returns Tune's ResultGrid. `callbacks` (Tune's) run in this process."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    x_train, y_train = arrays(data.train)
    x_validation, y_validation = arrays(data.validation)
    arrays_by_name = {"x_train": x_train, "y_train": y_train, "x_validation": x_validation,
                      "y_validation": y_validation}
    tuner = tune.Tuner(
        tune.with_parameters(trial, data=arrays_by_name, fixed=fixed),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_roc_auc",
            mode="max",
            num_samples=num_samples,
            # one at a time: on 2 cores parallel trials only slow each other, and ASHA's
            # rungs then compare each trial with all that came before (reproducible)
            max_concurrent_trials=1,
            search_alg=OptunaSearch(seed=fixed["seed"]),
            scheduler=ASHAScheduler(max_t=fixed["max_epochs"], grace_period=fixed["grace_period"],
                                    reduction_factor=2),
        ),
        run_config=tune.RunConfig(name=name, storage_path=storage_path,
                                  storage_filesystem=storage_filesystem, callbacks=callbacks),
    )
    return tuner.fit()
