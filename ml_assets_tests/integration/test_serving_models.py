"""load_predictor: every family, logged to the MLflow server through its flavor and loaded back,
answers what the in-memory model answers; load_sized measures it as the model cache does."""

from __future__ import annotations

import numpy as np
import pytest

from ml_assets.serving.models import (
    DEFAULT_FAMILY,
    MODEL_TYPE_TAG,
    UnknownFamilyError,
    family_of,
    load_predictor,
    load_sized,
)

FEATURES = 6


def data(task: str, rows: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    x[::9, 1] = np.nan  # missing values: both libraries route them down a learned branch
    signal = np.nan_to_num(x[:, 0]) * 2 + x[:, 2] - np.abs(x[:, 3])
    y = (signal > 0).astype(np.float32) if task == "binary" else signal * 10 + 100
    return x, y


@pytest.fixture(scope="module")
def tracking(mlflow_server):
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    # an experiment passed to each run, not set as the process's active one: that would leak
    # into later tests' runs of other experiments
    client = mlflow.MlflowClient(mlflow_server)
    found = client.get_experiment_by_name("serving-models")
    return found.experiment_id if found else client.create_experiment("serving-models")


def rows_to_score() -> np.ndarray:
    return data("binary", rows=100, seed=1)[0]


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_xgboost_booster_parity(tracking, task):
    import mlflow
    import mlflow.xgboost
    import xgboost

    x, y = data(task)
    objective = "binary:logistic" if task == "binary" else "reg:squarederror"
    names = [f"f{i}" for i in range(FEATURES)]  # a booster with names: the loader passes them
    booster = xgboost.train({"objective": objective, "max_depth": 3},
                            xgboost.DMatrix(x, y, feature_names=names), num_boost_round=20)
    with mlflow.start_run(experiment_id=tracking):
        info = mlflow.xgboost.log_model(booster, name="model",
                                        pip_requirements=["xgboost-cpu==3.2.0"])
    rows = rows_to_score()
    expected = booster.predict(xgboost.DMatrix(rows, feature_names=names))
    got = load_predictor(info.model_uri, "xgboost")(rows)
    assert load_sized(info.model_uri, "xgboost")[1] == len(booster.save_raw("ubj"))
    assert got.shape == (100,)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    if task == "binary":
        assert ((got > 0) & (got < 1)).all()  # probabilities, not margins
    else:
        assert got.std() > 1  # values on the label's scale


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_lightgbm_booster_parity(tracking, task):
    import lightgbm
    import mlflow
    import mlflow.lightgbm

    x, y = data(task)
    booster = lightgbm.train({"objective": task, "num_leaves": 7, "verbose": -1,
                              "min_data_in_leaf": 5}, lightgbm.Dataset(x, y),
                             num_boost_round=20)
    with mlflow.start_run(experiment_id=tracking):
        info = mlflow.lightgbm.log_model(booster, name="model",
                                         pip_requirements=["lightgbm==4.7.0"])
    rows = rows_to_score()
    expected = booster.predict(rows)
    got = load_predictor(info.model_uri, "lightgbm")(rows)
    assert load_sized(info.model_uri, "lightgbm")[1] == len(booster.model_to_string())
    assert got.shape == (100,)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    if task == "binary":
        assert ((got > 0) & (got < 1)).all()
    else:
        assert got.std() > 1


def test_torch_parity(tracking):
    import mlflow
    import mlflow.pytorch
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 4), torch.nn.ReLU(),
                                torch.nn.Linear(4, 1), torch.nn.Sigmoid(),
                                torch.nn.Flatten(0)).eval()
    with mlflow.start_run(experiment_id=tracking):
        info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
    rows = np.nan_to_num(rows_to_score())
    with torch.no_grad():
        expected = model(torch.from_numpy(rows)).numpy()
    got = load_predictor(info.model_uri, "torch_mlp")(rows)
    parameters = (FEATURES * 4 + 4 + 4 + 1) * 4  # two Linear layers' float32 weights and biases
    assert load_sized(info.model_uri, "torch_mlp")[1] == parameters
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_the_family_comes_from_the_model_type_tag():
    assert family_of({MODEL_TYPE_TAG: "xgboost"}) == "xgboost"
    assert family_of({}) == family_of(None) == DEFAULT_FAMILY == "torch_mlp"  # older versions
    with pytest.raises(UnknownFamilyError, match="catboost"):
        family_of({MODEL_TYPE_TAG: "catboost"})
    with pytest.raises(UnknownFamilyError):
        load_predictor("models:/anything/1", "catboost")
