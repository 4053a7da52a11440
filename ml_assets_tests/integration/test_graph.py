"""The whole graph end to end, for two tenants, on embedded Ray / MLflow / Feast."""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ml_assets.events import EventType, Outbox
from ml_assets.registry import stages
from ml_assets.registry.ledger import production_history
from ml_assets.schema import FEATURES
from ml_assets.serving.request import MAX_ROWS
from ml_assets.serving.routing import VERSION_HEADER
from ml_assets.tenants import Tenant
from ml_assets_tests.conftest import EPOCHS, SEARCH, TENANTS, materialize

LIFECYCLE = [
    EventType.MODEL_TRAINING_STARTED,
    EventType.MODEL_TRAINING_COMPLETED,
    EventType.MODEL_REGISTERED,
    EventType.MODEL_STAGE_CHANGED,  # None -> Staging
    EventType.MODEL_STAGE_CHANGED,  # Staging -> Production: the first version's policy
    EventType.MODEL_DEPLOYED,
]


@pytest.fixture(scope="module")
def client(settings):
    return MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


@pytest.mark.parametrize("tenant", TENANTS)
def test_every_asset_materialized(graph, tenant):
    made = graph[tenant]
    features = made["training_features.metadata"]
    assert features["dagster/row_count"] == 2 * 1000  # two label rows per customer, none lost
    assert (features["train_rows"] + features["validation_rows"] + features["holdout_rows"]
            == features["dagster/row_count"])
    assert made["trained_model.metadata"]["epochs"] == EPOCHS
    assert made["trained_model.metadata"]["checkpoints"] == EPOCHS
    # a tenant's first version goes to Production (it beat the reference baseline)
    assert made["registered_model"]["stage"] == stages.PRODUCTION
    assert made["deployed_endpoint"]["version"] == made["registered_model"]["version"]
    assert made["deployed_endpoint"]["stage"] == stages.PRODUCTION
    assert made["deployed_endpoint.metadata"]["smoke_p95_ms"] > 0


@pytest.mark.parametrize("tenant", TENANTS)
def test_first_version_is_production_with_verified_lineage(graph, client, tenant):
    from ml_assets.registry import lineage

    made = graph[tenant]
    version = client.get_model_version(Tenant(tenant).registered_model_name,
                                       made["registered_model"]["version"])
    assert version.tags[stages.STAGE_TAG] == stages.PRODUCTION
    assert "production" in version.aliases
    assert lineage.problems(client, Tenant(tenant), version) == []
    assert version.run_id == made["trained_model"]["run_id"]
    assert version.tags["run_id"] == made["trained_model"]["run_id"]
    assert version.tags["data_version"] == made["training_features.metadata"]["data_version"]
    assert version.tags["code_version"]
    assert version.tags["tenant"] == tenant


@pytest.mark.parametrize("tenant", TENANTS)
def test_metric_history_has_one_point_per_epoch(graph, client, tenant):
    run_id = graph[tenant]["trained_model"]["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tenant"] == tenant
    assert run.data.tags["model_type"] and run.data.tags["experiment_name"]
    for key in ("train_loss", "val_loss", "val_accuracy", "val_f1", "val_roc_auc"):
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == list(range(EPOCHS)), key
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert "training_log.txt" in artifacts
    log = client.download_artifacts(run_id, "training_log.txt")
    assert open(log).read().count("epoch ") == EPOCHS


@pytest.mark.parametrize("tenant", TENANTS)
def test_logged_model_pins_what_loading_it_imports(graph, tenant, settings):
    from importlib.metadata import version

    import mlflow

    from ml_assets.training.families import MODEL_PACKAGES

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)  # other tests set other servers
    model_uri = graph[tenant]["trained_model"]["model_uri"]
    pinned = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text().split()
    assert pinned == [f"{name}=={version(name)}" for name in MODEL_PACKAGES["torch_mlp"]]
    assert any(line.startswith("ml-assets==") for line in pinned)  # ChurnModel's package


def test_checkpoints_live_under_their_tenant_prefix_only(graph, resources):
    store = resources["object_store"]
    for tenant in TENANTS:
        other = next(t for t in TENANTS if t != tenant)
        keys = store.list(Tenant(tenant), "checkpoints")
        assert len([k for k in keys if k.endswith("state.pt")]) == EPOCHS
        run_dir = graph[tenant]["trained_model"]["checkpoint_dir"].rsplit("/", 1)[-1]
        assert all(k.startswith(f"checkpoints/{run_dir}/") for k in keys)
        other_run_dir = graph[other]["trained_model"]["checkpoint_dir"].rsplit("/", 1)[-1]
        assert not [k for k in keys if other_run_dir in k]
    root = Path(store.root)  # other tests' tenants write here too: each under its own prefix
    files = [p.relative_to(root).parts for p in root.rglob("*") if p.is_file()]
    assert files and all(parts[0] == "tenants" and Tenant(parts[1]) for parts in files)
    for tenant in TENANTS:
        run_dir = graph[tenant]["trained_model"]["checkpoint_dir"].rsplit("/", 1)[-1]
        assert all(parts[1] == tenant for parts in files if run_dir in parts)


def test_evaluation_report_is_logged_and_gate_passed(graph, client):
    for tenant in TENANTS:
        report = graph[tenant]["evaluation_report"]
        assert report["holdout_rows"] == graph[tenant]["training_features.metadata"][
            "holdout_rows"]
        assert report["baseline"] == "logistic_regression_reference"
        check = graph[tenant]["check.beats_baseline"]
        assert check.passed
        assert check.metadata["candidate_value"].value >= check.metadata["baseline_value"].value
        logged = client.download_artifacts(report["run_id"], "evaluation/report.json")
        assert json.load(open(logged))["candidate"] == report["candidate"]
        artifacts = {a.path for a in client.list_artifacts(report["run_id"], "evaluation")}
        assert {"evaluation/report.md", "evaluation/roc.png"} <= artifacts


def _row(graph, tenant):
    return graph[tenant]["deployed_endpoint"]["sample_row"]


@pytest.mark.parametrize("tenant", TENANTS)
def test_endpoint_answers_a_probability(predict, graph, tenant):
    endpoint = graph[tenant]["deployed_endpoint"]
    status, headers, body = predict(endpoint["url"], {"rows": [_row(graph, tenant)] * 3})
    assert status == 200
    assert body["tenant"] == tenant
    assert headers[VERSION_HEADER] == endpoint["version"]
    assert len(body["predictions"]) == 3
    assert all(0.0 <= p <= 1.0 for p in body["predictions"])


def test_endpoint_rejects_bad_input_naming_it(predict, graph):
    url = graph["acme"]["deployed_endpoint"]["url"]
    row = dict(_row(graph, "acme"))
    missing = {k: v for k, v in row.items() if k != "nps_score"}
    status, _, body = predict(url, {"rows": [missing]})
    assert status == 422 and "nps_score" in body["error"]
    status, _, body = predict(url, {"rows": [{**row, "plan_tier": "gold"}]})
    assert status == 422 and "plan_tier" in body["error"]
    status, _, body = predict(url, {"rows": [row] * (MAX_ROWS + 1)})
    assert status == 413
    status, _, _ = predict(url.replace("/acme/", "/nobody/"), {"rows": [row]})
    assert status == 404
    assert set(row) == set(FEATURES)


def test_outbox_holds_each_tenants_lifecycle_in_order(graph, settings):
    outbox = Outbox(settings.outbox_path)
    for tenant in TENANTS:
        events = outbox.events(tenant)
        assert all(e.tenant == tenant for e in events)
        lifecycle = [e.type for e in events if e.type in LIFECYCLE]
        assert lifecycle[:len(LIFECYCLE)] == LIFECYCLE
        run_id = graph[tenant]["trained_model"]["run_id"]
        assert events[0].data["run_id"] == run_id
        first, second = [e for e in events if e.type == EventType.MODEL_STAGE_CHANGED][:2]
        assert (first.data["from_stage"], first.data["to_stage"]) == (
            stages.NONE, stages.STAGING)
        assert (second.data["from_stage"], second.data["to_stage"]) == (
            stages.STAGING, stages.PRODUCTION)
        assert second.data["reason"].startswith("first_version_to_production: roc_auc beat "
                                                "logistic_regression_reference by")


def test_search_runs_trials_stops_some_early_and_feeds_training(graph, client):
    """globex ran with the search on (a tiny space); acme with it off."""
    assert graph["acme"]["hyperparameter_search"] == {"enabled": False, "best_config": {}}
    search = graph["globex"]["hyperparameter_search"]
    trials = search["trials"]
    assert len(trials) >= 4
    assert any(t["epochs"] < SEARCH["max_epochs"] for t in trials)  # ASHA stopped one
    best = max(trials, key=lambda t: t["val_roc_auc"])
    assert search["best_config"]["learning_rate"] == best["learning_rate"]
    params = client.get_run(graph["globex"]["trained_model"]["run_id"]).data.params
    for key, value in search["best_config"].items():
        assert params[key] == str(value), key
    children = client.search_runs(
        [client.get_run(search["parent_run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{search['parent_run_id']}'")
    assert len(children) == len(trials)
    assert all(client.get_metric_history(c.info.run_id, "val_roc_auc") for c in children)


def test_auto_promote_puts_the_registered_version_in_production(graph, instance, resources):
    """registered_model alone, on the graph's trained model: no retraining needed."""
    result = materialize(instance, resources, "globex", selection=["registered_model"],
                         config={"ops": {"churn__registered_model": {"config": {
                             "auto_promote": True}}}})
    registered = result.output_for_node("churn__registered_model")
    assert registered["stage"] == stages.PRODUCTION
    client = resources["mlflow"].client()
    production = stages.version_with_alias(client, Tenant("globex"), stages.PRODUCTION)
    assert str(production.version) == registered["version"]
    assert production.tags["run_id"] == graph["globex"]["trained_model"]["run_id"]
    spells = production_history(resources["events"].outbox(), Tenant("globex"))
    assert spells[-1].version == registered["version"]
    assert spells[-1].reason.startswith("auto_promote")
