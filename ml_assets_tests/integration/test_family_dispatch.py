"""The PyTorch family through the same entry point (regression, per-step metrics), and
`trained_model` training the family its run config asks for."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_assets.data import churn_data
from ml_assets.monitoring.statistics import PROFILE_ARTIFACT
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.schema import FEATURES
from ml_assets.serving.models import load_predictor
from ml_assets.tenants import Tenant
from ml_assets.training.config import experiment_config_for
from ml_assets.training.families import CheckpointStorage, Tracking, train
from ml_assets_testing.chain import chain
from ml_assets_testing.servers import s3_store

training_features, hyperparameter_search, trained_model = (chain().asset(name) for name in (
    "training_features", "hyperparameter_search", "trained_model"))

BUCKET = "ml-assets-families"


@pytest.fixture(scope="module")
def store(s3_endpoint):
    store = s3_store(s3_endpoint, BUCKET)
    store.ensure_bucket()
    return store


def test_torch_regression_logs_every_n_steps_and_each_epoch(store, mlflow_server, ray_cluster):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(0, 1, (1000, 3)), columns=["x1", "x2", "x3"])
    frame["target"] = 3 * frame["x1"] - frame["x2"] + 5 + rng.normal(0, 0.1, 1000)
    frame["split"] = ["train"] * 800 + ["validation"] * 200
    registry, tenant = MlflowRegistry(tracking_uri=mlflow_server), Tenant("torch-reg")
    run_id = registry.start_run(tenant, "mlp-regression", tags={})
    config = experiment_config_for("torch_mlp", {
        "epochs": 3, "batch_size": 100, "log_every_n_steps": 3, "learning_rate": 0.05,
        "dropout": 0.0, "num_workers": 1, "cpus_per_worker": 1})
    trained = train(config, frame, features=["x1", "x2", "x3"], label="target",
                    task="regression",
                    storage=CheckpointStorage(store.path(tenant, "checkpoints"),
                                              store.filesystem()),
                    tracking=Tracking(mlflow_server, run_id), run_name="mlp-regression")

    # 800 rows / 100 per step = 8 steps an epoch, 24 in all: a point at every third step
    steps = [m.step for m in registry.metric_history(run_id, "step_train_loss")]
    assert sorted(steps) == list(range(3, 25, 3))
    for key in ("val_loss", "val_rmse", "val_r2", "train_loss"):
        assert sorted(m.step for m in registry.metric_history(run_id, key)) == [0, 1, 2], key
    assert trained.result.metrics["global_step"] == 24
    assert trained.metrics["val_r2"] > 0.9  # an identity output, not a probability
    validation = frame[frame["split"] == "validation"]
    x = validation[["x1", "x2", "x3"]].to_numpy()[:100]
    logged = load_predictor(trained.model_uri, "torch_mlp")(x)
    np.testing.assert_allclose(logged, trained.predict(x), rtol=1e-5)
    assert logged.max() > 5  # values on the target's scale, not squashed into (0, 1)
    assert registry.client().get_run(run_id).data.tags["model_type"] == "torch_mlp"


def test_trained_model_trains_the_family_the_run_config_asks_for(resources, settings, store,
                                                                 ray_cluster):
    tenant = "boosted"
    churn_data.write(tenant, churn_data.ChurnDataSpec(customers=400), settings.raw_data_dir)
    used = {**resources, "object_store": store}
    client = resources["mlflow"].client()

    def materialize(config: dict) -> dg.ExecuteInProcessResult:
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("tenant", [tenant])
            return dg.materialize(
                [training_features, hyperparameter_search, trained_model], partition_key=tenant,
                instance=instance, resources=used, raise_on_error=False,
                run_config={"ops": {"churn__trained_model": {"config": config}}})

    experiment = resources["mlflow"].experiment_id(Tenant(tenant))
    refused = materialize({"family": "xgboost", "epochs": 3})  # a torch field
    assert not refused.success
    error = next(e for e in refused.all_events if e.is_step_failure).event_specific_data.error
    assert "xgboost.epochs" in "".join(part.message for part in (error, error.cause) if part)
    assert client.search_runs([experiment]) == []  # refused before any run

    result = materialize({"family": "xgboost", "num_boost_round": 6,
                          "checkpoint_every_rounds": 3, "num_workers": 1,
                          "cpus_per_worker": 1})
    assert result.success
    trained = result.output_for_node("churn__trained_model")
    assert trained["family"] == "xgboost"
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["model_type"] == "xgboost"
    assert run.data.params["num_boost_round"] == "6"
    assert sorted(m.step for m in client.get_metric_history(trained["run_id"],
                                                            "val_logloss")) == list(range(6))
    assert PROFILE_ARTIFACT in [a.path for a in client.list_artifacts(trained["run_id"])]
    assert store.list_dirs(Tenant(tenant), "checkpoints", trained["checkpoint_dir"].rsplit(
        "/", 1)[-1])[-1].endswith("round_00006")
    activity, _ = churn_data.generate(tenant, churn_data.ChurnDataSpec(customers=50))
    probabilities = load_predictor(trained["model_uri"], "xgboost")(
        activity[FEATURES].to_numpy())
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert trained["metrics"]["val_roc_auc"] > 0.6
