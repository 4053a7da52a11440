"""Small models in one Ray task each (many_models.fit_in_task): the same model as Ray Train with
one worker, several at once each in its own MLflow run and prefix, a bad one failing alone."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import torch

from ml_assets.data import churn_data
from ml_assets.resources import build_resources
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.schema import FEATURES, LABEL, TIMESTAMP
from ml_assets.settings import load_settings
from ml_assets.tenants import Tenant
from ml_assets.training import boosting, many_models, ray_training
from ml_assets.training.config import experiment_config_for
from ml_assets.training.families import torch_model
from ml_assets.training.predictor import booster_predictor
from ml_assets_testing.servers import s3_store

BUCKET = "ml-assets-many-models"
EPOCHS = 3
EPOCH_KEYS = {"train_loss", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1",
              "val_roc_auc", "val_brier", "epoch_train_seconds"}


def churn_frame(tenant: str) -> pd.DataFrame:
    """2,000 labelled rows of the synthetic churn data (features as of each label, NaN where
    the customer had no activity yet), split 70/15/15 in order."""
    activity, labels = churn_data.generate(tenant, churn_data.ChurnDataSpec(customers=1000))
    frame = pd.merge_asof(labels.rename(columns={"label_timestamp": TIMESTAMP}),
                          activity.sort_values(TIMESTAMP, kind="stable"), on=TIMESTAMP,
                          by="customer_id", direction="backward")[[*FEATURES, LABEL]]
    frame["split"] = np.select([frame.index < 1400, frame.index < 1700],
                               ["train", "validation"], "holdout")
    return frame


@pytest.fixture(scope="module")
def store(s3_endpoint):
    store = s3_store(s3_endpoint, BUCKET)
    store.ensure_bucket()
    return store


def loop_config(registry: MlflowRegistry, tenant: Tenant, run_name: str, **fields) -> dict:
    config = experiment_config_for("torch_mlp", {
        "epochs": EPOCHS, "log_every_n_steps": 10, "num_workers": 1, "cpus_per_worker": 1,
        "max_failures": 0, **fields})
    run_id = registry.start_run(tenant, run_name, tags={})
    return {**config.model_dump(), "tracking_uri": registry.tracking_uri, "run_id": run_id,
            "task": "binary_classification"}


def fit_task(store, tenant: Tenant, frame: pd.DataFrame, config: dict, run_name: str):
    return many_models.fit_in_task(
        frame, FEATURES, LABEL, config, storage_path=store.path(tenant, "checkpoints"),
        storage_filesystem=store.filesystem(), run_name=run_name)


def holdout_predictions(state: dict, data, config: dict, frame: pd.DataFrame) -> np.ndarray:
    model = torch_model(state, data, experiment_config_for(
        "torch_mlp", {k: config[k] for k in ("hidden_sizes", "dropout")}), config["task"])
    rows = frame.loc[frame["split"] == "holdout", FEATURES].to_numpy()
    with torch.no_grad():
        return model(torch.tensor(rows, dtype=torch.float32)).numpy()


def metric_steps(registry: MlflowRegistry, run_id: str) -> dict[str, list[int]]:
    run = registry.client().get_run(run_id)
    return {key: sorted(m.step for m in registry.metric_history(run_id, key))
            for key in run.data.metrics}


def test_the_preprocessing_has_ray_datas_statistics(ray_cluster):
    frame = churn_frame("stats")
    assert frame.loc[frame["split"] == "train", FEATURES].isna().any().any()  # imputed
    ray_data, task_data = (ray_training.preprocess(frame, FEATURES, LABEL),
                           many_models.preprocess(frame, FEATURES, LABEL))
    for name in ("impute", "mean", "std"):
        np.testing.assert_allclose(getattr(task_data, name), getattr(ray_data, name),
                                   rtol=1e-5, err_msg=name)
    validation = np.stack(ray_data.validation.to_pandas()["features"].to_numpy())
    np.testing.assert_allclose(task_data.validation_x, validation, atol=1e-5)


def test_a_task_fit_is_the_ray_train_fit_with_one_worker(store, mlflow_server, ray_cluster):
    registry, tenant, frame = MlflowRegistry(tracking_uri=mlflow_server), Tenant("same"), \
        churn_frame("same")
    train_config = loop_config(registry, tenant, "by-train")
    task_config = loop_config(registry, tenant, "by-task")
    data = ray_training.preprocess(frame, FEATURES, LABEL)
    result = ray_training.fit(
        data, train_config, num_workers=1, use_gpu=False, cpus_per_worker=1,
        storage_path=store.path(tenant, "checkpoints"), storage_filesystem=store.filesystem(),
        run_name="by-train")
    fitted = fit_task(store, tenant, frame, task_config, "by-task")

    # same seed, same rows in the same minibatch order: the same weights up to float rounding
    by_train = holdout_predictions(ray_training.load_state(result.checkpoint), data,
                                   train_config, frame)
    by_task = holdout_predictions(ray_training.load_state(fitted.checkpoint), fitted.data,
                                  task_config, frame)
    assert len(by_task) == 300
    assert np.abs(by_train - by_task).max() < 1e-4
    assert fitted.metrics["val_loss"] == pytest.approx(result.metrics["val_loss"], abs=1e-5)

    train_steps = metric_steps(registry, train_config["run_id"])
    task_steps = metric_steps(registry, task_config["run_id"])
    assert task_steps == train_steps
    for key in EPOCH_KEYS:
        assert task_steps[key] == list(range(EPOCHS)), key
    # 1,400 rows / 64 a step = 22 steps an epoch, 66 in all: a point every 10th
    assert task_steps["step_train_loss"] == list(range(10, 67, 10))
    assert list(fitted.metrics_dataframe["epoch"]) == list(range(EPOCHS))
    assert list(fitted.metrics_dataframe["global_step"]) == [22, 44, 66]
    assert set(fitted.metrics_dataframe["resumed_from_epoch"]) == {-1}

    keys = store.list(tenant, "checkpoints", "by-task")
    assert sorted(k for k in keys if k.endswith("state.pt")) == [
        f"checkpoints/by-task/epoch_{e:04d}/state.pt" for e in range(EPOCHS)]
    state = ray_training.load_state(fitted.checkpoint)
    assert (state["epoch"], state["global_step"]) == (EPOCHS - 1, 66)


def test_a_task_resumes_from_a_checkpoint(store, mlflow_server, ray_cluster):
    registry, tenant, frame = MlflowRegistry(tracking_uri=mlflow_server), Tenant("resume"), \
        churn_frame("resume")
    config = loop_config(registry, tenant, "first", epochs=2)
    fit_task(store, tenant, frame, config, "first")
    resumed = many_models.fit_in_task(
        frame, FEATURES, LABEL, {**config, "epochs": 4},
        storage_path=store.path(tenant, "checkpoints"), storage_filesystem=store.filesystem(),
        run_name="second", resume_from=store.path(tenant, "checkpoints", "first", "epoch_0001"))
    assert list(resumed.metrics_dataframe["epoch"]) == [2, 3]
    assert set(resumed.metrics_dataframe["resumed_from_epoch"]) == {1}
    assert resumed.metrics["global_step"] == 4 * 22
    assert metric_steps(registry, config["run_id"])["val_loss"] == [0, 1, 2, 3]


def test_a_rerun_after_every_epoch_was_trained_reports_the_last_epoch(store, mlflow_server,
                                                                     ray_cluster):
    """The driver died after its task finished (a task outlives a killed driver for a moment):
    the rerun trains nothing and reports the last epoch as the run logged it."""
    registry, tenant, frame = MlflowRegistry(tracking_uri=mlflow_server), Tenant("done"), \
        churn_frame("done")
    config = loop_config(registry, tenant, "done", epochs=2)
    first = fit_task(store, tenant, frame, config, "done")
    again = fit_task(store, tenant, frame, config, "done")
    assert again.metrics["val_loss"] == pytest.approx(first.metrics["val_loss"])
    assert again.metrics["val_roc_auc"] == pytest.approx(first.metrics["val_roc_auc"])
    assert (again.metrics["epoch"], again.metrics["resumed_from_epoch"]) == (1, 1)
    assert again.metrics["global_step"] == first.metrics["global_step"]
    assert metric_steps(registry, config["run_id"])["val_loss"] == [0, 1]  # nothing relogged


def test_tasks_train_together_each_into_its_own_run_and_one_bad_fails_alone(
        store, mlflow_server, ray_cluster):
    registry = MlflowRegistry(tracking_uri=mlflow_server)
    names = ["many-a", "many-b", "many-c", "many-bad"]
    tenants = {name: Tenant(name) for name in names}
    frames = {name: churn_frame(name) for name in names}
    configs = {name: loop_config(registry, tenants[name], name, epochs=2) for name in names}
    configs["many-bad"]["learning_rate"] = -1.0  # Adam refuses it, inside the task

    with ThreadPoolExecutor(len(names)) as pool:
        futures = {name: pool.submit(fit_task, store, tenants[name], frames[name],
                                     configs[name], name) for name in names}
        with pytest.raises(ValueError, match="Invalid learning rate"):
            futures["many-bad"].result()
        fitted = {name: futures[name].result() for name in names[:3]}

    for name, fit in fitted.items():
        run_id = configs[name]["run_id"]
        assert metric_steps(registry, run_id)["val_loss"] == [0, 1], name
        history = registry.metric_history(run_id, "val_loss")
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
            list(fit.metrics_dataframe["val_loss"])), name
        keys = store.list(tenants[name], "checkpoints")
        assert sorted(k for k in keys if k.endswith("state.pt")) == [
            f"checkpoints/{name}/epoch_{e:04d}/state.pt" for e in range(2)]
    # different tenants' data: different models
    assert fitted["many-a"].metrics["val_loss"] != fitted["many-b"].metrics["val_loss"]
    assert registry.client().get_run(configs["many-bad"]["run_id"]).data.metrics == {}
    assert store.list(tenants["many-bad"], "checkpoints") == []


def test_small_tenants_use_a_task_up_to_the_setting():
    from ml_assets.training.config import resolve

    settings = load_settings({"ML_ASSETS_MANY_MODELS_MAX_ROWS": "5000"})
    assert settings.many_models_max_rows == 5000
    assert build_resources(settings)["ray"].task_max_rows == 5000
    rows = pd.DataFrame({"split": ["train"] * 5000 + ["validation"] * 900})
    torch_config = resolve({}, "torch_mlp", {})
    assert many_models.use_task(rows, torch_config, 5000)
    assert not many_models.use_task(pd.concat([rows, rows.head(1)]), torch_config, 5000)
    # more workers or a GPU is a request for Ray Train
    assert not many_models.use_task(rows, torch_config.model_copy(update={"num_workers": 2}),
                                    5000)
    assert not many_models.use_task(rows, torch_config.model_copy(update={"use_gpu": True}),
                                    5000)
    with pytest.raises(ValueError, match="ML_ASSETS_MANY_MODELS_MAX_ROWS"):
        load_settings({"ML_ASSETS_MANY_MODELS_MAX_ROWS": "lots"})


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_a_booster_fit_in_a_task_is_the_ray_train_fit_with_one_worker(
        family, store, mlflow_server, ray_cluster):
    registry, tenant, frame = MlflowRegistry(tracking_uri=mlflow_server), Tenant(
        f"boost-{family}"), churn_frame(family)
    configs = {}
    for way in ("train", "task"):
        config = experiment_config_for(family, {
            "num_boost_round": 10, "checkpoint_every_rounds": 4, "num_workers": 1,
            "cpus_per_worker": 1, "max_failures": 0})
        run_id = registry.start_run(tenant, f"{family}-{way}", tags={})
        configs[way] = {**config.model_dump(), "features": FEATURES, "tracking_uri":
                        registry.tracking_uri, "run_id": run_id, "task": "binary_classification"}
    storage = {"storage_path": store.path(tenant, "checkpoints"),
               "storage_filesystem": store.filesystem()}
    result = boosting.fit(boosting.prepare(frame, FEATURES, LABEL), configs["train"],
                          num_workers=1, cpus_per_worker=1, run_name=f"{family}-train",
                          **storage)
    fitted = many_models.fit_boosting_in_task(frame, FEATURES, LABEL, configs["task"],
                                              run_name=f"{family}-task", **storage)

    holdout = frame.loc[frame["split"] == "holdout", FEATURES].to_numpy(np.float32)
    by_train, by_task = (booster_predictor(family, boosting.load_booster(family, c))(holdout)
                         for c in (result.checkpoint, fitted.checkpoint))
    assert np.abs(by_train - by_task).max() < 1e-6
    assert fitted.metrics["round"] == 10 and fitted.metrics["resumed_at_round"] == 0
    assert list(fitted.metrics_dataframe["round"]) == [4, 8, 10]
    assert fitted.metrics["val_logloss"] == pytest.approx(result.metrics["val_logloss"])
    train_steps = metric_steps(registry, configs["train"]["run_id"])
    assert metric_steps(registry, configs["task"]["run_id"]) == train_steps
    assert train_steps["val_auc"] == list(range(10))
    keys = store.list(tenant, "checkpoints", f"{family}-task")
    dirs = sorted({k.rsplit("/", 2)[-2] for k in keys})
    assert dirs == ["round_00004", "round_00008", "round_00010"]
