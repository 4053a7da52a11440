"""The loop from live traffic: two tenants served by the one Serve app, one sent rows from the
generator with its drift knob on; the Serve app's own prediction log, model_monitoring, and the
retrain sensor asking for that tenant only."""

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest

from ml_assets import schema
from ml_assets.data import churn_data
from ml_assets.defs.training.sensors import retrain_sensor
from ml_assets.events import EventType
from ml_assets.monitoring import statistics as monitoring
from ml_assets.names import REASON_TAG
from ml_assets.registry import stages
from ml_assets.registry.actions import register_version
from ml_assets.resources.retrain import RetrainPolicy
from ml_assets.tenants import Tenant
from ml_assets_testing.chain import chain
from ml_assets_testing.models import lineage_tags, log_untrained_models

model_monitoring = chain().asset("model_monitoring")
deployed_endpoint = chain().asset("deployed_endpoint")

DRIFTED, STEADY = Tenant("wayne"), Tenant("stark")
SPEC = churn_data.ChurnDataSpec(customers=500)
REQUESTS, ROWS_PER_REQUEST = 120, 5


def serve_with_profile(instance, resources, settings, tenant: Tenant) -> str:
    """A real model version in Production, its reference profile made as trained_model makes it
    (the tenant's source rows and the model's predictions on them), deployed; its URL."""
    import mlflow.pytorch
    import torch

    churn_data.write(tenant.key, SPEC, settings.raw_data_dir)
    instance.add_dynamic_partitions("tenant", [tenant.key])
    registry, events = resources["mlflow"], resources["events"]
    client = registry.client()
    (uri,) = log_untrained_models(registry, [tenant.key])[tenant.key]
    run_id = client.get_logged_model(uri.removeprefix("models:/")).source_run_id
    rows = churn_data.generate(tenant.key, SPEC)[0][schema.FEATURES]
    with torch.no_grad():
        predictions = mlflow.pytorch.load_model(uri)(
            torch.tensor(rows.to_numpy(), dtype=torch.float32)).numpy()
    client.log_dict(run_id, monitoring.reference_profile(rows, predictions),
                    monitoring.PROFILE_ARTIFACT)
    version = str(register_version(registry, tenant, uri, lineage_tags(registry, uri)).version)
    for stage in (stages.STAGING, stages.PRODUCTION):
        stages.transition(client, events, tenant, version, stage, "test", "pytest")
    result = dg.materialize([deployed_endpoint], partition_key=tenant.key, instance=instance,
                            resources=resources, run_config={"ops": {"churn__deployed_endpoint": {
                                "config": {"canary_weight": 0, "smoke_requests": 1}}}})
    return result.output_for_node("churn__deployed_endpoint")["url"]


def send_traffic(predict, url: str, tenant: Tenant, drift: float) -> None:
    """REQUESTS requests of generated rows (other customers than the reference's)."""
    spec = churn_data.ChurnDataSpec(customers=200, drift=drift, seed=99)
    rows = churn_data.generate(tenant.key, spec)[0][schema.FEATURES]
    records = rows.head(REQUESTS * ROWS_PER_REQUEST).to_dict("records")
    batches = [records[i:i + ROWS_PER_REQUEST] for i in range(0, len(records), ROWS_PER_REQUEST)]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda b: predict(url, {"rows": b})[0], batches))
    assert statuses == [200] * REQUESTS


@pytest.fixture(scope="module")
def monitored(instance, resources, settings, ray_cluster, predict) -> dict:
    from ray import serve

    from ml_assets.serving.app import APP_NAME

    urls = {t.key: serve_with_profile(instance, resources, settings, t) for t in (DRIFTED,
                                                                                  STEADY)}
    policy = RetrainPolicy(cooldown_minutes=60)
    sensor_resources = {"feast": resources["feast"], "retrain_policy": policy}
    with dg.build_sensor_context(instance=instance, resources=sensor_resources) as context:
        cursor = retrain_sensor(context).cursor
    send_traffic(predict, urls[DRIFTED.key], DRIFTED, drift=1.0)
    send_traffic(predict, urls[STEADY.key], STEADY, drift=0.0)
    serve.get_app_handle(APP_NAME).flush_log.remote().result()
    checks = {}
    for tenant in (DRIFTED, STEADY):
        result = dg.materialize([model_monitoring], partition_key=tenant.key, instance=instance,
                                resources=resources)
        checks[tenant.key] = {e.check_name: e for e in result.get_asset_check_evaluations()}
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources=sensor_resources) as context:
        return {"checks": checks, "retrain": retrain_sensor(context)}


def test_drifted_traffic_fails_feature_drift_on_every_feature(monitored):
    check = monitored["checks"][DRIFTED.key][monitoring.FEATURE_DRIFT]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert 0 <= check.metadata["rows"].value - REQUESTS * ROWS_PER_REQUEST <= 5  # + smoke tests
    drifted = check.metadata["drifted_features"].value
    # the knob shifts every feature by 1 sd; plan_tier is rounded and clipped to 0-2
    assert set(schema.FEATURES) - {"plan_tier"} <= set(drifted)


def test_steady_traffic_passes_the_drift_checks(monitored):
    steady = monitored["checks"][STEADY.key]
    assert steady[monitoring.FEATURE_DRIFT].passed
    assert steady[monitoring.PREDICTION_DRIFT].passed
    assert steady[monitoring.ERROR_RATE].passed
    assert 0 <= steady[monitoring.FEATURE_DRIFT].metadata["rows"].value - (
        REQUESTS * ROWS_PER_REQUEST) <= 5


def test_the_retrain_is_requested_for_the_drifted_tenant_only(monitored, resources):
    requests = monitored["retrain"].run_requests
    assert [r.partition_key for r in requests] == [DRIFTED.key]
    assert requests[0].tags[REASON_TAG].startswith("check ")
    outbox = resources["events"].outbox()
    alerts = [e.data["check"] for e in outbox.events(DRIFTED.key)
              if e.type == EventType.MODEL_DRIFT_DETECTED]
    assert monitoring.FEATURE_DRIFT in alerts and len(alerts) == len(set(alerts))
    assert not [e for e in outbox.events(STEADY.key) if e.type == EventType.MODEL_DRIFT_DETECTED]
