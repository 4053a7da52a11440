"""Alerts reach people, on real servers: a drifted tenant -> model_monitoring (Dagster on
PostgreSQL, profiles from the MLflow server, its log on S3) -> exactly one alert in Alertmanager
(Debian's, which notifies a webhook) and one Slack-compatible POST, then one resolve each after
recovery; labels that make the model worse fail realized_quality; a dead endpoint fails
serving_alive."""

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from ml_assets import use_case
from ml_assets.events import EventType
from ml_assets.monitoring import liveness, realized
from ml_assets.monitoring import statistics as monitoring
from ml_assets.schema import ENTITY, LABEL, LABEL_TIMESTAMP
from ml_assets.serving.prediction_log import ENTITY_KEY
from ml_assets.tenants import Tenant
from ml_assets_testing import synthetic_log
from ml_assets_testing.alert_servers import WebhookReceiver, start_alertmanager
from ml_assets_testing.synthetic_log import LogSpec
from ml_assets_tests.conftest import postgres_instance, server_path_resources
from ml_assets_tests.integration.test_monitoring_loop import (
    monitor,
    register_with_profiles,
    write_log,
)

ALERTED, LABELED, SILENT = Tenant("alerted"), Tenant("labeled"), Tenant("silent")


@pytest.fixture(scope="module")
def receivers(tmp_path_factory):
    """A webhook receiver, and Alertmanager notifying it on /alertmanager."""
    hook = WebhookReceiver()
    url, process = start_alertmanager(tmp_path_factory.mktemp("alertmanager"),
                                      hook.url + "/alertmanager")
    yield hook, url
    process.kill()
    hook.close()


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    with postgres_instance(tmp_path_factory.mktemp("dagster-home"),
                           [ALERTED.key, LABELED.key, SILENT.key]) as instance:
        yield instance


@pytest.fixture(scope="module")
def server_resources(s3_endpoint, mlflow_server, receivers, tmp_path_factory):
    hook, alertmanager = receivers
    with server_path_resources(tmp_path_factory.mktemp("alerting-state"), s3_endpoint,
                               mlflow_server, "ml-assets-alerting",
                               ML_ASSETS_ALERTMANAGER_URL=alertmanager,
                               ML_ASSETS_ALERT_WEBHOOK_URL=hook.url + "/slack",
                               ML_ASSETS_DAGSTER_URL="http://dagster.test",
                               ML_ASSETS_MLFLOW_UI_URL="http://mlflow.test") as resources:
        yield resources


def active_alerts(alertmanager: str, tenant: Tenant) -> list[dict]:
    query = urllib.parse.quote(f'tenant="{tenant.key}"')
    with urllib.request.urlopen(f"{alertmanager}/api/v2/alerts?filter={query}") as response:
        return json.loads(response.read())


def notifications(hook: WebhookReceiver, status: str, until: int, timeout_s: float = 30):
    """Alertmanager's notifications of a status, once `until` of them arrived (or timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [n for n in hook.bodies("/alertmanager") if n["status"] == status]
        if len(found) >= until or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_drifted_tenant_alerts_once_and_resolves_once(instance, server_resources, receivers,
                                                        ray_cluster):
    hook, alertmanager, resources = *receivers, server_resources
    register_with_profiles(resources["mlflow"], ALERTED, 1)
    write_log(resources, ALERTED, LogSpec(version="1", prediction_shift=3.0, seed=61))
    for _ in range(2):  # the same breach evaluated twice
        assert monitor(instance, resources, ALERTED)[monitoring.PREDICTION_DRIFT].severity == (
            dg.AssetCheckSeverity.ERROR)
    [active] = active_alerts(alertmanager, ALERTED)
    assert active["labels"] == {"alertname": f"ml_assets_{monitoring.PREDICTION_DRIFT}",
                                "tenant": ALERTED.key, "use_case": "churn",
                                "check": monitoring.PREDICTION_DRIFT, "severity": "critical"}
    assert float(active["annotations"]["observed"]) == pytest.approx(3.0, abs=0.2)
    assert active["annotations"]["threshold"] == "2.0"
    assert active["annotations"]["mlflow_url"] == (
        "http://mlflow.test/#/models/alerted-churn/versions/1")
    assert active["generatorURL"].startswith("http://dagster.test/assets/model_monitoring")
    [slack] = hook.bodies("/slack")
    assert slack["text"].startswith(f"[CRITICAL] alerted/churn {monitoring.PREDICTION_DRIFT}")
    assert "against threshold 2;" in slack["text"] and "window " in slack["text"]
    assert len(notifications(hook, "firing", 1)) == 1

    # recovery: 20,000 steady requests bring the window's mean back within 2 sigma
    write_log(resources, ALERTED, LogSpec(version="1", requests=20_000, seed=62))
    for _ in range(2):
        assert monitor(instance, resources, ALERTED)[monitoring.PREDICTION_DRIFT].passed
    assert [post["alert"]["resolved"] for post in hook.bodies("/slack")] == [False, True]
    assert active_alerts(alertmanager, ALERTED) == []
    resolved = notifications(hook, "resolved", 1)
    assert len(resolved) == 1 and len(notifications(hook, "firing", 1)) == 1
    assert resolved[0]["alerts"][0]["labels"]["check"] == monitoring.PREDICTION_DRIFT
    drift_events = [e for e in resources["events"].outbox().events(ALERTED.key)
                    if e.type == EventType.MODEL_DRIFT_DETECTED]
    assert len(drift_events) == 1


def test_delayed_labels_that_make_the_model_worse_fail_realized_quality(
        instance, server_resources, ray_cluster):
    resources = server_resources
    mlflow, feast = resources["mlflow"], resources["feast"]
    [version] = register_with_profiles(mlflow, LABELED, 1)
    run_id = mlflow.client().get_model_version(LABELED.registered_model_name, version).run_id
    mlflow.client().log_metric(run_id, "holdout_roc_auc", 0.82)
    scored_at = datetime.now(UTC)
    table = synthetic_log.generate(LABELED.key, LogSpec(version=version, seed=71, end=scored_at))
    write_log(resources, LABELED, LogSpec(version=version, seed=71, end=scored_at))
    found = monitor(instance, resources, LABELED)[realized.REALIZED_QUALITY]
    assert not found.passed and found.severity == dg.AssetCheckSeverity.WARN  # no labels yet
    assert found.metadata["expected_roc_auc_cbpe"].value > 0.5

    # labels arrive later, for the scored customers, and the model ranked them backwards
    p = table["prediction"].to_numpy()
    keys = table[ENTITY_KEY].to_pandas().astype("int64")  # the log keeps keys as strings
    labels = pd.DataFrame({ENTITY: keys.to_numpy(), LABEL: (p < 0.3).astype(float),
                           LABEL_TIMESTAMP: scored_at + timedelta(minutes=5)})
    churn = use_case.load("churn")
    path = feast.source_path(LABELED, churn, churn.label.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels.to_parquet(path)
    found = monitor(instance, resources, LABELED)[realized.REALIZED_QUALITY]
    assert not found.passed and found.severity == dg.AssetCheckSeverity.ERROR
    assert found.metadata["rows"].value == 2000
    assert found.metadata["holdout_value"].value == pytest.approx(0.82)
    assert found.metadata["realized_value"].value < 0.1
    assert found.metadata["observed"].value > 0.7  # the drop, against a threshold of 0.05
    degraded = [e.data["check"] for e in resources["events"].outbox().events(LABELED.key)
                if e.type == EventType.MODEL_QUALITY_DEGRADED]
    assert degraded == [realized.REALIZED_QUALITY]


def test_a_dead_endpoint_fails_serving_alive(instance, server_resources, receivers,
                                             ray_cluster):
    """A tenant routed to a Production version whose endpoint answers nothing (no Serve app
    on the configured port), its log quiet: the probe fails, and the alert goes out."""
    from ml_assets.registry import stages
    from ml_assets.serving import routing

    hook, _ = receivers
    resources = server_resources
    mlflow, events = resources["mlflow"], resources["events"]
    [version] = register_with_profiles(mlflow, SILENT, 1)
    for stage in (stages.STAGING, stages.PRODUCTION):
        stages.transition(mlflow.client(), events, SILENT, version, stage, "test", "pytest")
    routing.set_route(SILENT, routing.Route(registry_uri=mlflow.tracking_uri, primary=version))
    write_log(resources, SILENT, LogSpec(version=version, seed=81, span_s=60,
                                         end=datetime.now(UTC) - timedelta(minutes=20)))
    found = monitor(instance, resources, SILENT)[liveness.SERVING_ALIVE]
    assert not found.passed and found.severity == dg.AssetCheckSeverity.ERROR
    assert found.metadata["basis"].value == "probe"
    assert "probe failed" in found.description
    assert [p["alert"]["name"] for p in hook.bodies("/slack")
            if p["alert"]["tenant"] == SILENT.key] == [liveness.SERVING_ALIVE]
