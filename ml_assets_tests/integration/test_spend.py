"""The second use case end to end from its defs.yaml alone: spend (string account key, two feature
views, a regression label, XGBoost) through the whole chain on the real-server setup, then
LightGBM as an experiment's family; served by key and by rows, each equal to the logged model."""

import math

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ml_assets import names, use_case
from ml_assets.data import spend_data
from ml_assets.registry import stages
from ml_assets.serving.models import load_predictor
from ml_assets.serving.routing import VERSION_HEADER
from ml_assets.tenants import Tenant
from ml_assets_testing.chain import chain

SPEND = use_case.load("spend")
TENANT = Tenant("umbrella-spend", "spend")
ROUNDS = 30


def materialize(instance, resources, config: dict, selection: list[str] | None = None):
    """spend_model_job (the source contracts first), or only the selected assets."""
    run_config = {"ops": {names.op_name("spend", names.TRAINED_MODEL): {"config": config}}}
    if selection is None:
        from ml_assets.definitions import defs

        return defs().resolve_job_def(names.model_job("spend")).execute_in_process(
            instance=instance, partition_key=TENANT.key, resources=resources,
            run_config=run_config, raise_on_error=False)
    assets = [chain("spend").asset(name) for name in names.MODEL_GRAPH]
    return dg.materialize(
        assets, instance=instance, resources=resources, partition_key=TENANT.key,
        raise_on_error=False, selection=[f"spend/{name}" for name in selection],
        run_config=run_config)


@pytest.fixture(scope="module")
def spend(instance, resources, settings, ray_cluster) -> dict:
    spend_data.write(TENANT.key, spend_data.SpendDataSpec(accounts=500), settings.raw_data_dir)
    instance.add_dynamic_partitions("tenant", [TENANT.key])
    result = materialize(instance, resources, {"num_boost_round": ROUNDS})
    assert result.success
    made = {event.asset_key.path[-1]: result.output_for_node(event.step_key)
            for event in result.get_asset_materialization_events()}
    made["checks"] = {e.check_name: e for e in result.get_asset_check_evaluations()}
    made["log"] = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return made


def test_the_whole_chain_runs_for_the_regression_use_case(spend, settings):
    assert {"account_usage_contract", "account_billing_contract",
            "spend_labels_contract", "beats_baseline"} <= set(spend["checks"])
    assert all(check.passed for check in spend["checks"].values())
    assert spend["trained_model"]["family"] == "xgboost"
    report = spend["evaluation_report"]
    assert report["gate"]["metric"] == "rmse" and report["gate"]["passed"]
    assert set(report["candidate"]) == {"rmse", "mae", "r2"}
    assert report["baseline"] == "ridge_regression_reference"
    assert report["candidate"]["rmse"] < report["baseline_metrics"]["rmse"]
    registered = spend["registered_model"]
    assert registered["name"] == "umbrella-spend-spend"
    assert registered["stage"] == stages.PRODUCTION  # a tenant's first version
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    version = client.get_model_version(registered["name"], registered["version"])
    assert version.tags["model_type"] == "xgboost" and version.tags["use_case"] == "spend"
    # per boosting round, in MLflow's charts
    history = client.get_metric_history(spend["trained_model"]["run_id"], "val_rmse")
    assert sorted(point.step for point in history) == list(range(ROUNDS))
    # and streamed into the Dagster run log as they were written
    rounds = [line for line in spend["log"] if line.startswith("round ")]
    assert rounds[-1].startswith(f"round {ROUNDS}/{ROUNDS} train_rmse=")
    assert len(rounds) == ROUNDS


def test_the_endpoint_serves_string_keys_and_rows_like_the_logged_model(spend, settings,
                                                                        predict):
    endpoint = spend["deployed_endpoint"]
    assert endpoint["url"].endswith(f"/v1/{TENANT.key}/spend/predict")
    usage = pd.read_parquet(settings.raw_data_dir / TENANT.key / "spend" /
                            "account_usage.parquet")
    keys = sorted(usage["account_id"].astype(str).unique()[:4])
    status, headers, body = predict(endpoint["url"], {"keys": keys})
    assert status == 200 and headers[VERSION_HEADER] == endpoint["version"]
    assert len(body["predictions"]) == 4 and all(math.isfinite(p) for p in body["predictions"])

    features = spend["training_features"]
    rows = features.loc[features["split"] == "holdout", SPEND.features].head(100)
    status, _, body = predict(endpoint["url"], {"rows": [
        {name: (None if pd.isna(value) else float(value)) for name, value in row.items()}
        for row in rows.to_dict("records")]})
    assert status == 200
    logged = load_predictor(spend["registered_model"]["model_uri"], "xgboost")
    expected = logged(rows.to_numpy(dtype=np.float32))
    assert np.allclose(body["predictions"], expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("body, named", [
    ({"keys": [123]}, "keys[0]"),  # an int for a string key
    ({"keys": [""]}, "keys[0]"),
    ({"rows": [{"tenure_days": 1.0}]}, "active_seats"),  # churn's features, not spend's
])
def test_spend_requests_are_checked_against_its_declaration(spend, predict, body, named):
    status, _, answer = predict(spend["deployed_endpoint"]["url"], body)
    assert status == 422 and named in answer["error"]


def test_a_use_case_the_tenant_has_no_route_for_is_a_404(spend, predict):
    url = spend["deployed_endpoint"]["url"].replace("/spend/predict", "/churn/predict")
    status, _, body = predict(url, {"keys": [1]})
    assert status == 404


def test_lightgbm_as_an_experiments_family_is_staged_beside_xgboost(spend, instance, resources,
                                                                     settings):
    result = materialize(instance, resources, {"family": "lightgbm", "num_boost_round": 20},
                         selection=[names.TRAINED_MODEL, names.EVALUATION_REPORT,
                                    names.REGISTERED_MODEL])
    if not result.success:  # the gate may refuse it: then nothing was registered
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert not checks["beats_baseline"].passed
        return
    trained = result.output_for_node(names.op_name("spend", names.TRAINED_MODEL))
    assert trained["family"] == "lightgbm"
    registered = result.output_for_node(names.op_name("spend", names.REGISTERED_MODEL))
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    version = client.get_model_version(registered["name"], registered["version"])
    assert version.tags["model_type"] == "lightgbm"
    assert registered["stage"] == stages.STAGING  # Production keeps the XGBoost version


def test_an_xgboost_field_given_to_lightgbm_fails_before_any_run(instance, resources, spend,
                                                                 settings):
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(TENANT.experiment_name)
    before = len(client.search_runs([experiment.experiment_id]))
    result = materialize(instance, resources,
                         {"family": "lightgbm", "min_child_weight": 2.0},
                         selection=[names.TRAINED_MODEL])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "min_child_weight" in failure.step_failure_data.error.to_string()
    assert len(client.search_runs([experiment.experiment_id])) == before


def test_triton_refuses_a_boosted_tree_version_naming_its_family(spend, instance, resources):
    result = dg.materialize([chain("spend").asset(names.TRITON_MODEL_REPOSITORY)],
                            instance=instance, resources=resources, partition_key=TENANT.key,
                            raise_on_error=False)
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert "Triton serves torch_mlp versions" in error and "is xgboost" in error
