"""Training survives: a worker dies mid-run, the driver dies mid-run; checkpoints on S3."""

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_assets.data import churn_data
from ml_assets.schema import FEATURES, LABEL
from ml_assets.tenants import Tenant
from ml_assets_testing.chain import chain
from ml_assets_testing.servers import S3_KEYS, s3_store

training_features, trained_model, hyperparameter_search = (chain().asset(name) for name in (
    "training_features", "trained_model", "hyperparameter_search"))
SPEC = churn_data.ChurnDataSpec(customers=400)
BUCKET = "ml-assets-recovery"


@pytest.fixture(scope="module")
def recovery_resources(resources, settings, s3_endpoint):
    store = s3_store(s3_endpoint, BUCKET)
    store.ensure_bucket()
    for key in ("hooli", "pied-piper"):
        churn_data.write(key, SPEC, settings.raw_data_dir)
    return {**resources, "object_store": store}


def train(instance, resources, tenant: str, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [training_features, hyperparameter_search, trained_model], partition_key=tenant,
        instance=instance, resources=resources,
        # two DDP ranks on a CPU each: the suite's Ray cluster also holds Serve's replica
        run_config={"ops": {"churn__trained_model": {"config": {
            "num_workers": 2, "cpus_per_worker": 1, **config}}}})


def run_logs(instance, result) -> str:
    return "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))


def epochs_logged(resources, run_id: str, key: str = "val_loss") -> list[int]:
    return sorted(m.step for m in resources["mlflow"].client().get_metric_history(run_id, key))


def test_a_worker_failure_resumes_from_the_last_checkpoint(recovery_resources, ray_cluster):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["hooli"])
        result = train(instance, recovery_resources, "hooli", epochs=4,
                       fault_injection_epoch=2)
        assert result.success
        trained = result.output_for_node("churn__trained_model")
        assert "restored from checkpoint epoch_0001" in run_logs(instance, result)
    for key in ("val_loss", "val_roc_auc", "train_loss"):
        assert epochs_logged(recovery_resources, trained["run_id"], key) == [0, 1, 2, 3]
    keys = recovery_resources["object_store"].list(Tenant("hooli"), "checkpoints")
    epochs = sorted({k.split("/")[2] for k in keys if k.endswith("state.pt")})
    assert epochs == [f"epoch_{e:04d}" for e in range(4)]


DRIVER = """
import json, os, sys
import dagster as dg
from ml_assets_testing.chain import chain
training_features, trained_model, hyperparameter_search = (chain().asset(name) for name in (
    "training_features", "trained_model", "hyperparameter_search"))
from ml_assets.resources import build_resources
from ml_assets.settings import load_settings
from ml_assets_testing.servers import s3_store
args = json.loads(sys.argv[1])
resources = {**build_resources(load_settings(args["env"])),
             "object_store": s3_store(args["s3"], args["bucket"])}
with dg.instance_for_test() as instance:
    instance.add_dynamic_partitions("tenant", [args["tenant"]])
    dg.materialize([training_features, hyperparameter_search, trained_model],
                   partition_key=args["tenant"],
                   instance=instance, resources=resources, run_config=args["run_config"])
"""


def test_a_driver_killed_mid_training_is_resumed_by_the_rerun(recovery_resources, settings,
                                                              s3_endpoint, ray_cluster):
    import ray

    # enough epochs that the kill (after two checkpoints) lands mid-training: one epoch of
    # these 400 customers takes ~0.2 s
    tenant, epochs = "pied-piper", 20
    config = {"epochs": epochs, "num_workers": 1, "cpus_per_worker": 1}  # same as train()'s
    # through Ray Train, whose trainer and workers die with their driver: a small model's
    # task may finish before Ray reaps it (test_many_models covers that rerun)
    ray_train = {"ML_ASSETS_MANY_MODELS_MAX_ROWS": "0"}
    args = {"env": {"ML_ASSETS_STATE_DIR": str(settings.state_dir),
                    "RAY_ADDRESS": ray.get_runtime_context().gcs_address, **ray_train},
            "s3": s3_endpoint, "bucket": BUCKET, "tenant": tenant,
            "run_config": {"ops": {"churn__trained_model": {"config": config}}}}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(args)],
                              env={**os.environ, **S3_KEYS, "RAY_AUTH_MODE": "token"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = recovery_resources["object_store"]
    deadline = time.monotonic() + 240
    while len([k for k in store.list(Tenant(tenant), "checkpoints")
               if k.endswith("state.pt")]) < 2:
        assert driver.poll() is None and time.monotonic() < deadline, "driver never got going"
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    killed_at = time.time() * 1000
    time.sleep(3)  # let Ray reap the dead driver's trainer and workers

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [tenant])
        result = train(instance, {**recovery_resources, "ray": recovery_resources[
            "ray"].model_copy(update={"task_max_rows": 0})}, tenant, **config)
        assert result.success
        logs = run_logs(instance, result)
    trained = result.output_for_node("churn__trained_model")
    assert "resuming MLflow run " + trained["run_id"] in logs
    assert "restored from checkpoint epoch_000" in logs
    history = recovery_resources["mlflow"].client().get_metric_history(trained["run_id"],
                                                                       "val_loss")
    assert sorted(m.step for m in history) == list(range(epochs))
    assert min(m.timestamp for m in history) < killed_at  # early epochs were not redone
    made = result.asset_materializations_for_node("churn__trained_model")[0].metadata
    assert made["epochs"].value == epochs  # the killed attempt's epochs count too
    log = recovery_resources["mlflow"].client().download_artifacts(trained["run_id"],
                                                                   "training_log.txt")
    assert [line.split()[1] for line in open(log).read().splitlines()] == \
        [f"{e}/{epochs}" for e in range(1, epochs + 1)]


def test_the_scaler_is_fitted_on_train_rows_only(ray_cluster):
    from ml_assets.training.ray_training import preprocess

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(0, 1, (300, len(FEATURES))), columns=FEATURES)
    frame[LABEL] = rng.integers(0, 2, 300)
    frame["split"] = ["train"] * 200 + ["validation"] * 50 + ["holdout"] * 50
    frame.loc[frame["split"] != "train", FEATURES] += 1000.0  # a holdout far from train
    data = preprocess(frame, FEATURES, LABEL)
    train_rows = frame[frame["split"] == "train"]
    assert np.allclose(data.mean, train_rows[FEATURES].mean(), atol=1e-4)
    assert np.allclose(data.std, train_rows[FEATURES].std(ddof=0), rtol=1e-3)
    validation = np.stack(data.validation.to_pandas()["features"].to_numpy())
    assert validation.mean() > 100  # scaled with train statistics, so it stays far away
