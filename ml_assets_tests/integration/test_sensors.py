"""Sensors with a real instance and cursors: stage changes redeploy, retrains, new tenants."""

import json
import os
import uuid

import dagster as dg
import pytest
from mlflow import MlflowClient

from ml_assets import schema, use_case
from ml_assets.data import churn_data
from ml_assets.defs.registry.sensors import OBSERVER, mlflow_stage_change_sensor
from ml_assets.defs.tenancy.sensors import tenant_partitions_sensor, tenants_in_file
from ml_assets.defs.training.sensors import retrain_sensor
from ml_assets.names import MODEL_MONITORING, REASON_TAG, TRIGGER_TAG
from ml_assets.registry import stages
from ml_assets.registry.ledger import production_history
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.feast import FeastStore
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.retrain import RetrainPolicy
from ml_assets.serving.app import VERSION_HEADER
from ml_assets.tenants import Tenant
from ml_assets_testing.chain import chain
from ml_assets_testing.models import two_versions

deployed_endpoint = chain().asset("deployed_endpoint")

INITECH = Tenant("initech")


def tick(sensor, instance, cursor, **resources) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources=resources) as context:
        return sensor(context)


def test_moving_production_in_mlflow_redeploys_that_tenant(mlflow_server, resources, settings,
                                                           ray_cluster, tmp_path, predict):
    """The issue's end to end: a running MLflow server (PostgreSQL), the alias moved with the
    MLflow client directly, the sensor's run request executed, the endpoint serving the new
    version."""
    mlflow = MlflowRegistry(tracking_uri=mlflow_server)
    events = LifecycleEvents(outbox_path=str(tmp_path / "outbox.db"))
    churn_data.write(INITECH.key, churn_data.ChurnDataSpec(customers=50), settings.raw_data_dir)
    v1, v2 = two_versions(mlflow, events, INITECH)
    client = mlflow.client()
    server_resources = {**resources, "mlflow": mlflow, "events": events}

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [INITECH.key])

        def deploy(run_config=None):
            return dg.materialize([deployed_endpoint], partition_key=INITECH.key,
                                  instance=instance, resources=server_resources,
                                  run_config=run_config)

        url = deploy().output_for_node("churn__deployed_endpoint")["url"]
        sensor_resources = {"mlflow": mlflow, "events": events}
        first = tick(mlflow_stage_change_sensor, instance, None, **sensor_resources)
        assert first.run_requests == []  # the first tick learns what is deployed

        # someone promotes v2 in the MLflow UI/API, outside ml_assets
        MlflowClient(mlflow_server).set_registered_model_alias(
            INITECH.registered_model_name, "production", v2)
        second = tick(mlflow_stage_change_sensor, instance, first.cursor, **sensor_resources)
        assert len(second.run_requests) == 1
        request = second.run_requests[0]
        assert request.partition_key == INITECH.key
        assert request.asset_selection == [dg.AssetKey(["churn", "deployed_endpoint"])]
        assert json.loads(second.cursor)[f"churn/{INITECH.key}"][stages.PRODUCTION] == v2
        assert tick(mlflow_stage_change_sensor, instance, second.cursor,
                    **sensor_resources).run_requests == []
        replay = tick(mlflow_stage_change_sensor, instance, first.cursor, **sensor_resources)
        assert [r.run_key for r in replay.run_requests] == [request.run_key]  # Dagster dedupes

        assert deploy(request.run_config).success
        status, headers, body = predict(url, {"rows": [
            dict.fromkeys(schema.FEATURES, 1.0)]})
        assert status == 200 and headers[VERSION_HEADER] == v2 == body["model_version"]

    spells = production_history(events.outbox(), INITECH)
    assert [(s.version, s.promoted_by) for s in spells] == [(v1, "pytest"), (v2, OBSERVER)]
    assert stages.stage_of(stages.model_version(client, INITECH, v1)) == stages.ARCHIVED


@pytest.fixture
def feast(tmp_path) -> FeastStore:
    store = FeastStore(root_dir=str(tmp_path / "feast"), raw_data_dir=str(tmp_path / "raw"))
    for key in ("acme", "globex"):
        churn_data.write(key, churn_data.ChurnDataSpec(customers=50), tmp_path / "raw")
    return store


def touch_source(feast: FeastStore, key: str) -> None:
    churn = use_case.load("churn")
    path = feast.source_path(Tenant(key), churn, churn.label.name)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def fail_check(instance, key: str, name: str = "feature_drift",
               severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> None:
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(["churn", MODEL_MONITORING]), check_name=name, passed=False,
        partition=key, severity=severity))


def test_retrain_on_new_source_data_once_per_cooldown(feast):
    policy = RetrainPolicy(cooldown_minutes=60)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
        first = tick(retrain_sensor, instance, None, feast=feast, retrain_policy=policy)
        assert first.run_requests == []
        touch_source(feast, "acme")
        second = tick(retrain_sensor, instance, first.cursor, feast=feast,
                      retrain_policy=policy)
        assert [(r.partition_key, r.tags[REASON_TAG]) for r in second.run_requests] == [
            ("acme", "new source data")]
        assert second.run_requests[0].tags[TRIGGER_TAG] == "retrain"
        assert {k.path[-1] for k in second.run_requests[0].asset_selection} == {
            "training_features", "trained_model", "evaluation_report", "registered_model"}
        assert tick(retrain_sensor, instance, second.cursor, feast=feast,
                    retrain_policy=policy).run_requests == []
        touch_source(feast, "acme")  # more data within the cooldown: deferred
        assert tick(retrain_sensor, instance, second.cursor, feast=feast,
                    retrain_policy=policy).run_requests == []


def test_a_failed_check_requests_a_retrain_for_its_tenant_only(feast):
    policy = RetrainPolicy(cooldown_minutes=0, checks=["feature_drift"])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
        cursor = tick(retrain_sensor, instance, None, feast=feast, retrain_policy=policy).cursor
        fail_check(instance, "globex", "some_other_check")  # not in the policy
        fail_check(instance, "acme", severity=dg.AssetCheckSeverity.WARN)  # too few rows
        assert tick(retrain_sensor, instance, cursor, feast=feast,
                    retrain_policy=policy).run_requests == []
        fail_check(instance, "globex")
        result = tick(retrain_sensor, instance, cursor, feast=feast, retrain_policy=policy)
        assert [(r.partition_key, r.tags[REASON_TAG]) for r in result.run_requests] == [
            ("globex", "check feature_drift failed")]
        assert tick(retrain_sensor, instance, result.cursor, feast=feast,
                    retrain_policy=policy).run_requests == []


def test_concurrent_retrains_are_capped(feast):
    policy = RetrainPolicy(cooldown_minutes=0, max_concurrent=1)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
        cursor = tick(retrain_sensor, instance, None, feast=feast, retrain_policy=policy).cursor
        touch_source(feast, "acme")
        touch_source(feast, "globex")
        # both due in one tick: one run over both, within the cap of one run
        result = tick(retrain_sensor, instance, cursor, feast=feast, retrain_policy=policy)
        assert [(r.partition_key, r.tags["dagster/asset_partition_range_start"],
                 r.tags["dagster/asset_partition_range_end"], r.tags[REASON_TAG])
                for r in result.run_requests] == [(None, "acme", "globex", "new source data")]
        instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()),
                                       status=dg.DagsterRunStatus.STARTED,
                                       tags={TRIGGER_TAG: "retrain"}))
        assert tick(retrain_sensor, instance, result.cursor, feast=feast,
                    retrain_policy=policy).run_requests == []
        touch_source(feast, "acme")  # due, but the one run allowed is still going: deferred
        assert tick(retrain_sensor, instance, result.cursor, feast=feast,
                    retrain_policy=policy).run_requests == []


def test_tenants_file_adds_partitions_and_never_removes(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_STATE_DIR", str(tmp_path))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["legacy"])
        assert tick(tenant_partitions_sensor, instance, None).skip_reason
        (tmp_path / "tenants.txt").write_text("acme\n# a comment\nglobex  # second\nacme\n")
        result = tick(tenant_partitions_sensor, instance, None)
        (request,) = result.dynamic_partitions_requests
        assert list(request.partition_keys) == ["acme", "globex"]
        instance.add_dynamic_partitions("tenant", list(request.partition_keys))
        assert set(instance.get_dynamic_partitions("tenant")) == {"legacy", "acme", "globex"}
    with pytest.raises(ValueError, match="invalid tenant 'Bad_Key'"):
        tenants_in_file("acme\nBad_Key\n")
