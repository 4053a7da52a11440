"""The ML Service API against a real `dagster-webserver` and `mlflow server` the tests start.

Runs are launched for real through the webserver's GraphQL API; with no daemon they stay QUEUED
(no training: that is the graph tests' work), which is what the assertions read back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from ml_assets import names
from ml_assets.access.keys import KeyStore, Role
from ml_assets.data import churn_data, spend_data
from ml_assets.service.app import create_app
from ml_assets.service.dagster_runs import IDEMPOTENCY_TAG, PARTITION_TAG, DagsterRuns
from ml_assets.settings import PROJECT_ROOT, Settings, load_settings
from ml_assets.tenants import Tenant, add_tenant
from ml_assets_testing.servers import free_port, venv_bin, wait_for_http
from ml_assets_tests.unit.test_service_keys import secret_of

ACME, GLOBEX, INITECH = "acme", "globex", "initech"
EXPERIMENT = {"epochs": 3, "learning_rate": 0.02, "hidden_sizes": [16, 8], "seed": 11}
JOB = names.model_job("churn")


@pytest.fixture(scope="module")
def api_settings(tmp_path_factory, mlflow_server) -> Settings:
    state = tmp_path_factory.mktemp("api_state")
    settings = load_settings({"ML_ASSETS_STATE_DIR": str(state),
                              "MLFLOW_TRACKING_URI": mlflow_server,
                              "ML_ASSETS_DAGSTER_URL": f"http://127.0.0.1:{free_port()}"})
    for tenant in (ACME, GLOBEX, INITECH):  # onboarded for churn; globex for spend too
        churn_data.write(tenant, churn_data.ChurnDataSpec(customers=40), settings.raw_data_dir)
    spend_data.write(GLOBEX, spend_data.SpendDataSpec(accounts=40), settings.raw_data_dir)
    return settings


@pytest.fixture(scope="module")
def dagster_instance(api_settings: Settings) -> Iterator[dg.DagsterInstance]:
    home = api_settings.dagster_home
    home.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for tenant in (ACME, GLOBEX, INITECH):
            add_tenant(instance, tenant)
        yield instance


@pytest.fixture(scope="module")
def webserver(api_settings: Settings, dagster_instance, mlflow_server) -> Iterator[str]:
    """`dagster-webserver` on the project's workspace.yaml, instance and state of this module.
    No daemon runs, so launched runs stay QUEUED."""
    url = api_settings.dagster_url
    port = url.rsplit(":", 1)[1]
    output = api_settings.state_dir / "webserver.log"
    with output.open("wb") as log:
        server = subprocess.Popen(
            [venv_bin("dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
             "-p", port],
            cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "DAGSTER_HOME": str(api_settings.dagster_home),
                 "ML_ASSETS_STATE_DIR": str(api_settings.state_dir),
                 "MLFLOW_TRACKING_URI": mlflow_server})
    try:
        wait_for_http(f"{url}/server_info", server, timeout=300)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}:\n{output.read_text()[-3000:]}") from None
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def app(api_settings: Settings, webserver):
    return create_app(api_settings, rate_limit_per_minute=100_000)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app)


@pytest.fixture(scope="module")
def tokens(api_settings: Settings) -> dict[tuple[str, str], str]:
    """A token per (tenant, role)."""
    keys = KeyStore(api_settings.api_keys_path)
    return {(tenant, role.name): keys.create(Tenant(tenant), role)[1]
            for tenant in (ACME, GLOBEX, INITECH) for role in Role}


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


@pytest.fixture(scope="module")
def models(api_settings: Settings) -> dict[str, list[str]]:
    """Two Staging versions for acme and initech, one for globex, each from its own MLflow
    run with a metric; per tenant the run ids (the data another tenant must never see).
    The registry needs versions, not trained weights: each run holds a stand-in artifact."""
    from ml_assets.registry import stages
    from ml_assets.registry.actions import register_version
    from ml_assets.resources import build_resources

    resources = build_resources(api_settings)
    registry, events = resources["mlflow"], resources["events"]
    client = registry.client()
    run_ids: dict[str, list[str]] = {}
    for tenant, count in ((ACME, 2), (GLOBEX, 1), (INITECH, 2)):
        for i in range(count):
            run_id = registry.start_run(Tenant(tenant), f"model-{i}",
                                        tags={"data_version": f"data-{tenant}"})
            client.log_metric(run_id, "holdout_roc_auc", 0.7 + i / 100)
            client.log_text(run_id, "stand-in for the logged model", "model/README.txt")
            version = register_version(registry, Tenant(tenant), f"runs:/{run_id}/model", {
                "tenant": tenant, "run_id": run_id, "data_version": f"data-{tenant}",
                "code_version": "test", "dagster_run_id": "pytest"})
            stages.transition(client, events, Tenant(tenant), version.version, stages.STAGING,
                              "test setup", "test")
            run_ids.setdefault(tenant, []).append(run_id)
    return run_ids


@pytest.fixture(scope="module")
def globex_run(client, tokens) -> str:
    response = client.post(f"/v1/tenants/{GLOBEX}/experiments", json=EXPERIMENT,
                           headers=auth(tokens[GLOBEX, "trainer"]))
    assert response.status_code == 201, response.text
    return response.json()["run_id"]


def runs_of(instance: dg.DagsterInstance, tenant: str) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(tags={PARTITION_TAG: tenant}))


# --- auth ---------------------------------------------------------------------------------

def test_no_key_a_malformed_key_a_wrong_secret_and_a_revoked_key_are_401(
        client, api_settings, tokens):
    keys = KeyStore(api_settings.api_keys_path)
    key, token = keys.create(Tenant(ACME), Role.promoter)
    key_id = token.split("_")[1]
    wrong_secret = f"mla_{key_id}_{'A' * 43}"
    keys.revoke(key.id)
    path = f"/v1/tenants/{ACME}/models/history"
    for headers in ({}, {"Authorization": "Bearer nonsense"}, auth(wrong_secret), auth(token),
                    {"Authorization": f"Basic {tokens[ACME, 'viewer']}"}):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": "missing or invalid API key"}
    assert client.get(path, headers=auth(tokens[ACME, "viewer"])).status_code == 200


def test_roles_viewer_reads_trainer_launches_promoter_promotes(client, tokens, models,
                                                               dagster_instance):
    before = len(runs_of(dagster_instance, ACME))
    viewer, trainer = tokens[ACME, "viewer"], tokens[ACME, "trainer"]
    launch = client.post(f"/v1/tenants/{ACME}/experiments", json=EXPERIMENT, headers=auth(viewer))
    assert launch.status_code == 403
    assert launch.json() == {"detail": "role viewer may not do this: needs trainer"}
    assert len(runs_of(dagster_instance, ACME)) == before
    for token in (viewer, trainer):
        promote = client.post(f"/v1/tenants/{ACME}/models/1/promote", json={"reason": "try"},
                              headers=auth(token))
        assert promote.status_code == 403
        assert "needs promoter" in promote.json()["detail"]
    listed = client.get(f"/v1/tenants/{ACME}/models", headers=auth(viewer)).json()
    assert [v["stage"] for v in listed] == ["Staging", "Staging"]


# --- tenant isolation ---------------------------------------------------------------------

def endpoints(victim_run: str) -> list[tuple[str, str, dict | None]]:
    """Every tenant endpoint as (method, path under /v1/tenants/{tenant}, JSON body)."""
    return [
        ("POST", "/experiments", EXPERIMENT),
        ("GET", f"/runs/{victim_run}", None),
        ("GET", "/models", None),
        ("GET", f"/models/history?at={datetime.now(UTC).isoformat()}", None),
        ("POST", "/models/1/promote", {"reason": "cross-tenant attempt"}),
        ("POST", "/models/1/rollback", None),
        ("GET", "/audit?type=MODEL_STAGE_CHANGED&limit=5", None),
        ("GET", "/catalog", None),
    ]


def test_isolation_matrix_every_key_of_one_tenant_on_every_endpoint_of_another(
        client, tokens, models, globex_run, dagster_instance, api_settings):
    """5 roles x 8 endpoints x 2 directions = 80 requests: all 403, no byte of the other
    tenant's data in any body, and nothing changed for the other tenant."""
    acme_run = client.post(f"/v1/tenants/{ACME}/experiments", json=EXPERIMENT,
                           headers=auth(tokens[ACME, "trainer"])).json()["run_id"]
    secrets = {
        GLOBEX: [GLOBEX, Tenant(GLOBEX).registered_model_name, globex_run, *models[GLOBEX]],
        ACME: [ACME, Tenant(ACME).registered_model_name, acme_run, *models[ACME]],
    }
    victims_run = {GLOBEX: globex_run, ACME: acme_run}
    runs_before = {t: len(runs_of(dagster_instance, t)) for t in (ACME, GLOBEX)}
    stages_before = {t: client.get(f"/v1/tenants/{t}/models",
                                   headers=auth(tokens[t, "viewer"])).json()
                     for t in (ACME, GLOBEX)}
    checked = 0
    for attacker, victim in ((ACME, GLOBEX), (GLOBEX, ACME)):
        for role in Role:
            for method, path, body in endpoints(victims_run[victim]):
                response = client.request(method, f"/v1/tenants/{victim}{path}", json=body,
                                          headers=auth(tokens[attacker, role.name]))
                assert response.status_code == 403, (attacker, role, method, path)
                assert response.json() == {
                    "detail": "this API key is not for the tenant in the path"}
                for secret in secrets[victim]:
                    assert secret not in response.text
                checked += 1
    assert checked == len(Role) * 8 * 2 == 80
    assert {t: len(runs_of(dagster_instance, t)) for t in (ACME, GLOBEX)} == runs_before
    for tenant in (ACME, GLOBEX):
        assert client.get(f"/v1/tenants/{tenant}/models",
                          headers=auth(tokens[tenant, "viewer"])).json() == stages_before[tenant]


def test_a_run_of_another_tenant_is_not_found_on_ones_own_path(client, tokens, globex_run):
    response = client.get(f"/v1/tenants/{ACME}/runs/{globex_run}",
                          headers=auth(tokens[ACME, "promoter"]))
    assert response.status_code == 404
    assert response.json() == {"detail": "this tenant has no such run"}
    assert globex_run not in response.text and GLOBEX not in response.text
    own = client.get(f"/v1/tenants/{GLOBEX}/runs/{globex_run}",
                     headers=auth(tokens[GLOBEX, "viewer"]))
    assert own.status_code == 200 and own.json()["tenant"] == GLOBEX


def test_each_tenant_lists_only_its_own_model_versions(client, tokens, models):
    for tenant, count in ((ACME, 2), (GLOBEX, 1)):
        listed = client.get(f"/v1/tenants/{tenant}/models",
                            headers=auth(tokens[tenant, "viewer"])).json()
        assert [v["name"] for v in listed] == [Tenant(tenant).registered_model_name] * count
        assert [v["lineage"]["run_id"] for v in listed] == models[tenant]
        assert {v["lineage"]["data_version"] for v in listed} == {f"data-{tenant}"}


# --- experiments --------------------------------------------------------------------------

def test_a_posted_experiment_becomes_a_run_of_the_tenant_partition_with_that_config(
        client, tokens, dagster_instance, api_settings):
    response = client.post(f"/v1/tenants/{ACME}/experiments", json=EXPERIMENT,
                           headers=auth(tokens[ACME, "trainer"]))
    assert response.status_code == 201, response.text
    launched = response.json()
    run = dagster_instance.get_run_by_id(launched["run_id"])
    assert run.job_name == JOB
    assert run.tags[PARTITION_TAG] == ACME
    posted = run.run_config["ops"]["churn__trained_model"]["config"]
    assert {key: posted[key] for key in EXPERIMENT} == EXPERIMENT
    assert posted["batch_size"] == 64  # the model's default, filled in by the service
    assert launched["links"]["dagster_run"] == f"{api_settings.dagster_url}/runs/{run.run_id}"
    experiment = f"{api_settings.mlflow_tracking_uri}/#/experiments/"
    assert launched["links"]["mlflow_experiment"] == experiment + launched["mlflow_experiment_id"]

    status = client.get(f"/v1/tenants/{ACME}/runs/{run.run_id}",
                        headers=auth(tokens[ACME, "viewer"])).json()
    assert (status["status"], status["job"], status["tenant"]) == ("QUEUED", JOB, ACME)
    assert status["experiment_config"] == posted
    assert status["mlflow"] is None  # nothing trained yet

    DagsterRuns(api_settings.dagster_url).terminate(run.run_id)
    status = client.get(f"/v1/tenants/{ACME}/runs/{run.run_id}",
                        headers=auth(tokens[ACME, "viewer"])).json()
    assert status["status"] in ("CANCELING", "CANCELED")
    assert dagster_instance.get_run_by_id(run.run_id).status.value == status["status"]


def test_run_status_carries_the_metrics_of_the_mlflow_run_the_dagster_run_made(
        client, tokens, globex_run, api_settings):
    """What trained_model does for a run (an MLflow run tagged with the Dagster run id),
    done by hand: the API joins the two."""
    from ml_assets.resources import build_resources

    registry = build_resources(api_settings)["mlflow"]
    mlflow_run = registry.start_run(Tenant(GLOBEX), "by-hand", {"dagster_run_id": globex_run})
    registry.client().log_metric(mlflow_run, "val_roc_auc", 0.81)
    registry.client().log_param(mlflow_run, "epochs", 3)
    status = client.get(f"/v1/tenants/{GLOBEX}/runs/{globex_run}",
                        headers=auth(tokens[GLOBEX, "viewer"])).json()
    assert status["mlflow"] == {"run_id": mlflow_run, "status": "RUNNING",
                                "metrics": {"val_roc_auc": 0.81}, "params": {"epochs": "3"}}


def test_bad_experiment_config_is_422_per_field_and_launches_nothing(
        client, tokens, dagster_instance):
    before = len(runs_of(dagster_instance, ACME))
    response = client.post(
        f"/v1/tenants/{ACME}/experiments", headers=auth(tokens[ACME, "trainer"]),
        json={"epochs": 0, "hidden_sizes": [8, 0], "learning_rate": "fast", "bogus": 1,
              "fault_injection_epoch": 2, "experiment_name": "../escape"})
    assert response.status_code == 422
    errors = {tuple(error["loc"]): error["type"] for error in response.json()["detail"]}
    assert errors == {("body", "experiment_name"): "string_pattern_mismatch",
                      ("body", "epochs"): "greater_than_equal",
                      ("body", "hidden_sizes"): "value_error",
                      ("body", "learning_rate"): "float_type",
                      ("body", "bogus"): "extra_forbidden",
                      ("body", "fault_injection_epoch"): "none_required"}
    not_finite = client.post(f"/v1/tenants/{ACME}/experiments",
                             headers={**auth(tokens[ACME, "trainer"]),
                                      "content-type": "application/json"},
                             content=b'{"weight_decay": Infinity}')
    assert not_finite.status_code == 422
    assert not_finite.json()["detail"][0]["loc"] == ["body", "weight_decay"]
    assert len(runs_of(dagster_instance, ACME)) == before


def test_the_use_case_picks_the_job_and_the_family_defaults(client, tokens, dagster_instance):
    headers = auth(tokens[GLOBEX, "trainer"])
    response = client.post(f"/v1/tenants/{GLOBEX}/experiments?use_case=spend",
                           json={"num_boost_round": 20}, headers=headers)
    assert response.status_code == 201, response.text
    run = dagster_instance.get_run_by_id(response.json()["run_id"])
    assert run.job_name == "spend_model_job"
    posted = run.run_config["ops"]["spend__trained_model"]["config"]
    assert (posted["family"], posted["num_boost_round"], posted["max_depth"]) == (
        "xgboost", 20, 3)  # the body's, then spend's declared defaults


@pytest.mark.parametrize("tenant, query, body, named", [
    (GLOBEX, "?use_case=spend", {"epochs": 3}, ["body", "epochs"]),  # torch's, not xgboost's
    (GLOBEX, "", {"family": "lightgbm", "min_child_weight": 1.0},
     ["body", "lightgbm", "min_child_weight"]),
    (GLOBEX, "", {"family": "sklearn"}, ["body"]),
    (ACME, "?use_case=spend", EXPERIMENT, "not enabled for use_case 'spend'"),
    (ACME, "?use_case=fraud", EXPERIMENT, "use_case 'fraud' is not declared"),
])
def test_a_field_of_another_family_or_a_use_case_not_onboarded_is_refused(
        client, tokens, dagster_instance, tenant, query, body, named):
    before = len(runs_of(dagster_instance, tenant))
    response = client.post(f"/v1/tenants/{tenant}/experiments{query}", json=body,
                           headers=auth(tokens[tenant, "trainer"]))
    detail = response.json()["detail"]
    if isinstance(named, str):  # the use case: no such one for this tenant
        assert response.status_code == 404 and named in detail
    else:
        assert response.status_code == 422, response.text
        assert any(error["loc"][:len(named)] == named for error in detail), detail
    assert len(runs_of(dagster_instance, tenant)) == before


def test_run_ids_are_checked_before_dagster_is_asked(client, tokens):
    headers = auth(tokens[ACME, "viewer"])
    assert client.get(f"/v1/tenants/{ACME}/runs/not-a-run", headers=headers).status_code == 422
    unknown = client.get(f"/v1/tenants/{ACME}/runs/00000000-0000-4000-8000-000000000000",
                         headers=headers)
    assert unknown.status_code == 404


# --- idempotency --------------------------------------------------------------------------

def tagged(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={PARTITION_TAG: INITECH}))
    by_key: dict[str, list[str]] = {}
    for run in runs:
        if IDEMPOTENCY_TAG in run.tags:
            by_key.setdefault(run.tags[IDEMPOTENCY_TAG], []).append(run.run_id)
    return by_key


def test_the_same_post_twice_with_one_idempotency_key_is_one_run(client, tokens,
                                                                  dagster_instance):
    headers = auth(tokens[INITECH, "trainer"], **{"Idempotency-Key": "retry-me"})
    first = client.post(f"/v1/tenants/{INITECH}/experiments", json=EXPERIMENT, headers=headers)
    again = client.post(f"/v1/tenants/{INITECH}/experiments", json=EXPERIMENT, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.json()["replayed"] and again.headers["idempotent-replayed"] == "true"
    assert [first.json()["run_id"]] in tagged(dagster_instance).values()

    other_body = client.post(f"/v1/tenants/{INITECH}/experiments", headers=headers,
                             json={**EXPERIMENT, "epochs": 4})
    assert other_body.status_code == 409
    assert "different request body" in other_body.json()["detail"]
    # the key is scoped to the API key: another key's "retry-me" is its own experiment
    other_key = client.post(f"/v1/tenants/{INITECH}/experiments", json=EXPERIMENT,
                            headers=auth(tokens[INITECH, "promoter"],
                                         **{"Idempotency-Key": "retry-me"}))
    assert other_key.status_code == 201
    assert other_key.json()["run_id"] != first.json()["run_id"]


def test_concurrent_retries_with_one_idempotency_key_launch_one_run(app, tokens,
                                                                    dagster_instance):
    headers = auth(tokens[INITECH, "trainer"], **{"Idempotency-Key": "burst"})
    answers: list = []

    def post() -> None:
        answers.append(TestClient(app).post(f"/v1/tenants/{INITECH}/experiments",
                                            json=EXPERIMENT, headers=headers))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["run_id"] for a in answers}) == 1
    launched = [runs for runs in tagged(dagster_instance).values()
                if answers[0].json()["run_id"] in runs]
    assert launched == [[answers[0].json()["run_id"]]]


# --- models -------------------------------------------------------------------------------

def test_promote_history_and_rollback_through_the_stage_layer(client, tokens, models):
    promoter, viewer = auth(tokens[ACME, "promoter"]), auth(tokens[ACME, "viewer"])
    base = f"/v1/tenants/{ACME}/models"
    first = client.post(f"{base}/1/promote", json={"reason": "first release"}, headers=promoter)
    assert first.status_code == 200, first.text
    assert (first.json()["stage"], first.json()["aliases"]) == ("Production", ["production"])
    between = datetime.now(UTC)
    second = client.post(f"{base}/2/promote", json={"reason": "better auc"}, headers=promoter)
    assert second.json()["stage"] == "Production"
    stages = {v["version"]: v["stage"] for v in client.get(base, headers=viewer).json()}
    assert stages == {"1": "Archived", "2": "Production"}
    listed = client.get(base, headers=viewer).json()
    assert [v["metrics"]["holdout_roc_auc"] for v in listed] == [0.7, 0.71]

    history = client.get(f"{base}/history", params={"at": between.isoformat()},
                         headers=viewer).json()
    assert [(s["version"], s["reason"]) for s in history["spells"]] == [
        ("1", "first release"), ("2", "better auc")]
    assert history["production_at"] == "1"
    assert history["spells"][0]["promoted_by"].startswith("api:")
    naive = client.get(f"{base}/history", params={"at": "2026-01-01T00:00:00"}, headers=viewer)
    assert naive.status_code == 422 and naive.json()["detail"][0]["loc"] == ["query", "at"]

    assert client.post(f"{base}/1/rollback", headers=promoter).status_code == 409
    back = client.post(f"{base}/2/rollback", headers=promoter)
    assert back.status_code == 200 and back.json()["version"] == "1"
    assert back.json()["stage"] == "Production"
    again = client.post(f"{base}/2/rollback", headers=promoter)  # a retried rollback
    assert again.status_code == 409
    assert client.post(f"{base}/99/promote", json={"reason": "nope"},
                       headers=promoter).status_code == 404
    illegal = client.post(f"{base}/1/promote", json={"reason": "again"}, headers=promoter)
    assert illegal.status_code == 409 and "cannot move Production -> Production" in (
        illegal.json()["detail"])
    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    assert client.get(f"{base}/history", params={"at": later},
                      headers=viewer).json()["production_at"] == "1"


# --- operations ---------------------------------------------------------------------------

def test_health_readiness_and_the_openapi_spec(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True,
                                            "checks": {"dagster": "ok", "mlflow": "ok"}}
    spec = client.get("/openapi.json").json()
    from ml_assets.training.config import ExperimentConfig

    body = spec["components"]["schemas"]["ExperimentRequest"]
    assert set(body["properties"]) == set(ExperimentConfig.model_fields)
    assert body["additionalProperties"] is False
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_readiness_fails_when_dagster_is_not_there(api_settings, mlflow_server):
    from dataclasses import replace

    nowhere = replace(api_settings, dagster_url=f"http://127.0.0.1:{free_port()}")
    response = TestClient(create_app(nowhere)).get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["mlflow"] == "ok"
    assert response.json()["checks"]["dagster"] == "unavailable"


def test_request_ids_are_in_the_logs_and_the_key_never_is(client, tokens, caplog):
    token = tokens[ACME, "viewer"]
    with caplog.at_level("DEBUG"):
        given = client.get(f"/v1/tenants/{ACME}/models/history", headers=auth(
            token, **{"X-Request-ID": "trace-123"}))
        made = client.get(f"/v1/tenants/{ACME}/models/history",
                          headers=auth(token, **{"X-Request-ID": "bad id!"}))
    assert given.headers["x-request-id"] == "trace-123"
    assert made.headers["x-request-id"] not in ("bad id!", "")
    assert "request trace-123: GET /v1/tenants/acme/models/history -> 200" in caplog.text
    assert f"request {made.headers['x-request-id']}:" in caplog.text
    assert token not in caplog.text and secret_of(token) not in caplog.text


def test_rate_limit_per_key(api_settings, tokens, webserver):
    limited = TestClient(create_app(api_settings, rate_limit_per_minute=3))
    path = f"/v1/tenants/{ACME}/models/history"
    codes = [limited.get(path, headers=auth(tokens[ACME, "viewer"])).status_code
             for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = limited.get(path, headers=auth(tokens[ACME, "viewer"]))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert limited.get(path, headers=auth(tokens[ACME, "promoter"])).status_code == 200


# --- fuzzing from the spec ----------------------------------------------------------------

FUZZ_EXAMPLES = 50  # per operation and generation mode; the count tried is asserted below


def fuzz_operation(operation, mode, own_tenant: bool, token: str, tried: dict[str, int],
                   statuses: set[int]) -> None:
    import hypothesis
    from hypothesis import HealthCheck
    from schemathesis.checks import negative_data_rejection

    @hypothesis.settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case) -> None:
        if own_tenant and "tenant" in (case.path_parameters or {}):
            case.path_parameters["tenant"] = INITECH
        # a generated query parameter whose name cannot be sent (say, '') is dropped by the
        # client, yet counted as the violation: on GETs only 5xx and spec conformance count
        unsendable = [negative_data_rejection] if case.method == "GET" else []
        response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                                          excluded_checks=unsendable)
        statuses.add(response.status_code)
        tried[operation.label] = tried.get(operation.label, 0) + 1

    fuzz()


def test_no_generated_input_makes_a_server_error(app, tokens, models, request, capsys):
    """Hypothesis drives every operation of the service's own /openapi.json: bodies, headers,
    query and path values: valid ones with the generated tenant and with the key's own tenant
    (so they reach the handlers), invalid ones on the key's own tenant. No answer may be a 5xx,
    invalid input must be refused, and every answer must match the status codes, content type
    and body schema the spec declares."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    tried: dict[str, int] = {}
    statuses: set[int] = set()
    modes = ((GenerationMode.POSITIVE, False), (GenerationMode.POSITIVE, True),
             (GenerationMode.NEGATIVE, True))
    for operation in operations:
        for mode, own_tenant in modes if "{tenant}" in operation.path else modes[:1]:
            fuzz_operation(operation, mode, own_tenant, tokens[INITECH, "promoter"], tried,
                           statuses)
    with capsys.disabled():  # the volume, for the record
        request.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"\nfuzzed {sum(tried.values())} requests over {len(operations)} operations: "
            f"{tried}; statuses seen {sorted(statuses)}")
    assert len(operations) == 10  # with the consumers' audit and catalog routes
    assert sum(tried.values()) >= 6 * 3 * FUZZ_EXAMPLES
    assert {200, 201, 403, 404, 409, 422} <= statuses
