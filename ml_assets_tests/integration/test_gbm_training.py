"""XGBoost and LightGBM through Ray Train V2: per-round metrics in the tenant's MLflow run (on
the MLflow server), booster checkpoints under the tenant's prefix in the S3 server, a killed
worker resumed from the checkpointed round, and the logged model scoring like the booster."""

import numpy as np
import pandas as pd
import pytest

from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.serving.models import load_predictor
from ml_assets.tenants import Tenant
from ml_assets.training import boosting
from ml_assets.training.config import experiment_config_for
from ml_assets.training.families import CheckpointStorage, Tracking, train
from ml_assets.training.predictor import booster_predictor
from ml_assets_testing.servers import s3_store

BUCKET = "ml-assets-gbm"
FEATURES = ["f_a", "f_b", "f_c", "f_d"]
# small and quick: Ray Train's fixed cost dominates each fit on 2 cores
SMALL = {"num_workers": 1, "cpus_per_worker": 1, "max_depth": 3}


def rows(task: str, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Synthetic rows with a learnable signal, some missing values, a train/validation split."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(0, 1, (n, len(FEATURES))), columns=FEATURES)
    signal = 2 * frame["f_a"] - frame["f_b"]
    frame.loc[frame.index[::40], "f_c"] = np.nan
    if task == "binary_classification":
        frame["outcome"] = (signal + rng.normal(0, 0.5, n) > 0).astype(int)
    else:
        frame["outcome"] = signal + rng.normal(0, 0.3, n)
    frame["split"] = np.where(np.arange(n) < n * 0.8, "train", "validation")
    return frame


@pytest.fixture(scope="module")
def platform(s3_endpoint, mlflow_server, ray_cluster):
    store = s3_store(s3_endpoint, BUCKET)
    store.ensure_bucket()
    return store, MlflowRegistry(tracking_uri=mlflow_server)


def fit(platform, tenant: Tenant, family: str, task: str, frame: pd.DataFrame, **config):
    store, registry = platform
    run_name = f"{family}-{task[:6]}"
    run_id = registry.start_run(tenant, run_name, tags={})
    trained = train(experiment_config_for(family, {**SMALL, **config}), frame,
                    features=FEATURES, label="outcome", task=task,
                    storage=CheckpointStorage(store.path(tenant, "checkpoints"),
                                              store.filesystem()),
                    tracking=Tracking(registry.tracking_uri, run_id), run_name=run_name)
    return trained, run_id, run_name


def steps(registry: MlflowRegistry, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in registry.metric_history(run_id, key))


def checkpoints(store, tenant: Tenant, run_name: str, family: str) -> list[str]:
    booster_file = boosting.BOOSTER_FILES[family]
    return sorted(key.split("/")[-2] for key in store.list(tenant, "checkpoints", run_name)
                  if key.endswith(f"/{booster_file}"))


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_binary_training_survives_a_killed_worker_and_continues_boosting(platform, family):
    store, registry = platform
    tenant = Tenant(f"gbm-{family}")
    frame = rows("binary_classification")
    # checkpoints after rounds 5 and 10; the worker dies after round 7: rounds 6-7 are redone
    trained, run_id, run_name = fit(platform, tenant, family, "binary_classification", frame,
                                    num_boost_round=12, checkpoint_every_rounds=5,
                                    fault_injection_round=7, max_failures=1)

    assert trained.result.metrics["round"] == 12
    assert trained.result.metrics["resumed_at_round"] == 5  # not from 0
    assert [m.value for m in registry.metric_history(run_id, "resumed_at_round")] == [5]
    for key in ("train_logloss", "val_logloss", "val_auc"):
        assert steps(registry, run_id, key) == list(range(12)), key  # each round once
    assert checkpoints(store, tenant, run_name, family) == \
        ["round_00005", "round_00010", "round_00012"]
    assert trained.checkpoint.path.startswith(store.path(tenant, "checkpoints", run_name))

    booster = boosting.load_booster(family, trained.checkpoint)
    assert boosting.boosted_rounds(family, booster) == 12
    assert trained.metrics["val_roc_auc"] > 0.9
    run = registry.client().get_run(run_id)
    assert run.data.tags["model_type"] == family
    x = frame.loc[frame["split"] == "validation", FEATURES].to_numpy()[:100]
    logged, in_memory = load_predictor(trained.model_uri, family)(x), booster_predictor(
        family, booster)(x)
    assert logged.shape == (100,) and ((logged > 0) & (logged < 1)).all()
    np.testing.assert_allclose(logged, in_memory, rtol=1e-6)

    from mlflow.pyfunc import get_model_dependencies

    requirements = open(get_model_dependencies(trained.model_uri)).read().split()
    package = "xgboost-cpu" if family == "xgboost" else "lightgbm"
    assert any(line.startswith(f"{package}==") for line in requirements)
    assert not any(line.startswith("xgboost==") for line in requirements)  # the GPU wheel


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_regression_logs_rmse_per_round_and_predicts_values(platform, family):
    store, registry = platform
    tenant = Tenant(f"gbm-{family}")
    frame = rows("regression", seed=1)
    trained, run_id, run_name = fit(platform, tenant, family, "regression", frame,
                                    num_boost_round=8, checkpoint_every_rounds=4,
                                    learning_rate=0.3)

    assert trained.result.metrics["resumed_at_round"] == 0
    for key in ("train_rmse", "val_rmse"):
        assert steps(registry, run_id, key) == list(range(8)), key
    history = [m.value for m in sorted(registry.metric_history(run_id, "train_rmse"),
                                       key=lambda m: m.step)]
    assert history[-1] < history[0]  # boosting fits the training rows better each round
    assert checkpoints(store, tenant, run_name, family) == ["round_00004", "round_00008"]
    validation = frame[frame["split"] == "validation"]
    assert trained.metrics["val_rmse"] < 0.5 * validation["outcome"].std()
    assert set(trained.metrics) == {"val_rmse", "val_mae", "val_r2"}

    booster = boosting.load_booster(family, trained.checkpoint)
    x = validation[FEATURES].to_numpy()[:100]
    logged = load_predictor(trained.model_uri, family)(x)
    np.testing.assert_allclose(logged, booster_predictor(family, booster)(x), rtol=1e-6)
    assert np.corrcoef(logged, validation["outcome"][:100])[0, 1] > 0.9
    with pytest.raises(ValueError, match="4 features"):
        load_predictor(trained.model_uri, family)(x[:, :3])
