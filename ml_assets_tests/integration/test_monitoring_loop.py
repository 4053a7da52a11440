"""The closed loop on real servers: a drifted prediction log on S3 -> model_monitoring (Dagster on
PostgreSQL, reference profile from the MLflow server) -> failed check -> one event on Kafka ->
one retrain run requested, for that tenant only."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from ml_assets.defs.training.sensors import retrain_sensor
from ml_assets.events import EventType, read_events
from ml_assets.monitoring import liveness, realized
from ml_assets.monitoring import statistics as monitoring
from ml_assets.monitoring.window import load_profile
from ml_assets.names import MODEL_MONITORING, REASON_TAG, RETRAIN_ASSETS
from ml_assets.registry import stages
from ml_assets.resources.retrain import RetrainPolicy
from ml_assets.serving import prediction_log
from ml_assets.tenants import Tenant
from ml_assets_testing import synthetic_log
from ml_assets_testing.chain import chain
from ml_assets_testing.models import log_untrained_models, register
from ml_assets_testing.synthetic_log import LogSpec
from ml_assets_tests.conftest import postgres_instance, server_path_resources

model_monitoring = chain().asset("model_monitoring")

DRIFTING, STEADY = Tenant("drifting"), Tenant("steady")
BUCKET = "ml-assets-monitoring"


@pytest.fixture(scope="module")
def dagster_postgres(tmp_path_factory):
    """A Dagster instance from deploy/dagster.yaml, on a fresh PostgreSQL database."""
    home = tmp_path_factory.mktemp("dagster-home")
    with postgres_instance(home, [DRIFTING.key, STEADY.key]) as instance:
        yield instance


@pytest.fixture(scope="module")
def server_resources(s3_endpoint, mlflow_server, broker, tmp_path_factory):
    """The resources the settings give on the server path, and a served version per tenant
    (drifting has two) whose MLflow run holds the reference profile."""
    broker.start()
    with server_path_resources(tmp_path_factory.mktemp("monitoring-state"), s3_endpoint,
                               mlflow_server, BUCKET,
                               ML_ASSETS_KAFKA_BOOTSTRAP=broker.bootstrap) as resources:
        assert register_with_profiles(resources["mlflow"], DRIFTING, 2) == ["1", "2"]
        assert register_with_profiles(resources["mlflow"], STEADY, 1) == ["1"]
        yield resources
        broker.kill()


def register_with_profiles(mlflow, tenant: Tenant, count: int) -> list[str]:
    """Registered versions of real (untrained) models, each run holding a reference profile."""
    client = mlflow.client()
    versions = []
    for uri in log_untrained_models(mlflow, [tenant.key], count=count)[tenant.key]:
        run_id = client.get_logged_model(uri.removeprefix("models:/")).source_run_id
        client.log_dict(run_id, synthetic_log.reference(tenant.key), monitoring.PROFILE_ARTIFACT)
        versions.append(register(mlflow, tenant, uri))
    return versions


def production_and_staging(instance, mlflow, events, tenant: Tenant) -> tuple[str, str]:
    """Two registered versions of a new tenant, with profiles: Production and Staging."""
    instance.add_dynamic_partitions("tenant", [tenant.key])
    production, staged = register_with_profiles(mlflow, tenant, 2)
    for version, stage in ((production, stages.STAGING), (production, stages.PRODUCTION),
                           (staged, stages.STAGING)):
        stages.transition(mlflow.client(), events, tenant, version, stage, "test", "pytest")
    return production, staged


def write_log(resources: dict, tenant: Tenant, spec: LogSpec) -> None:
    table = synthetic_log.generate(tenant.key, spec)
    prediction_log.write(resources["object_store"], tenant, "churn", table.to_pylist())


def monitor(instance, resources, tenant: Tenant) -> dict[str, dg.AssetCheckEvaluation]:
    """model_monitoring for the tenant; its check evaluations by name."""
    result = dg.materialize([model_monitoring], partition_key=tenant.key, instance=instance,
                            resources=resources)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def tick(instance, cursor, resources, policy: RetrainPolicy) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={
            "feast": resources["feast"], "retrain_policy": policy}) as context:
        return retrain_sensor(context)


def test_drift_publishes_once_and_retrains_that_tenant_only(dagster_postgres, server_resources):
    instance, resources = dagster_postgres, server_resources
    policy = RetrainPolicy(cooldown_minutes=60)
    cursor = tick(instance, None, resources, policy).cursor
    write_log(resources, DRIFTING, LogSpec(version="1", prediction_shift=3.0))
    write_log(resources, STEADY, LogSpec(version="1", seed=12))
    # hours-old drift of steady: outside the window, it must not count
    write_log(resources, STEADY, LogSpec(version="1", prediction_shift=3.0, seed=13,
                                         end=datetime.now(UTC) - timedelta(hours=3)))

    drifting = monitor(instance, resources, DRIFTING)
    steady = monitor(instance, resources, STEADY)
    assert set(drifting) == set(steady) == {
        monitoring.PREDICTION_DRIFT, monitoring.FEATURE_DRIFT, monitoring.LATENCY_P95,
        monitoring.ERROR_RATE, monitoring.CANARY_HEALTH, liveness.SERVING_ALIVE,
        realized.REALIZED_QUALITY}
    no_canary = steady[monitoring.CANARY_HEALTH]  # nothing compared is not a pass
    assert "nothing was compared" in no_canary.description
    assert not no_canary.passed and no_canary.severity == dg.AssetCheckSeverity.WARN
    failed = drifting[monitoring.PREDICTION_DRIFT]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["observed"].value == pytest.approx(3.0, abs=0.2)
    assert failed.metadata["threshold"].value == 2.0
    assert failed.metadata["rows"].value == 2000
    assert {"window_start", "window_end", "basis", "ks_p_value"} <= set(failed.metadata)
    assert drifting[liveness.SERVING_ALIVE].passed  # on its own traffic: no probe
    assert not drifting[realized.REALIZED_QUALITY].passed  # no labels yet: a warning
    assert drifting[realized.REALIZED_QUALITY].severity == dg.AssetCheckSeverity.WARN
    judged = set(drifting) - {monitoring.CANARY_HEALTH, realized.REALIZED_QUALITY}
    assert all(drifting[name].passed for name in judged - {monitoring.PREDICTION_DRIFT})
    assert all(steady[name].passed for name in judged)
    assert steady[monitoring.PREDICTION_DRIFT].metadata["rows"].value == 2000

    materialization = instance.get_latest_materialization_event(
        dg.AssetKey(["churn", MODEL_MONITORING])).asset_materialization
    assert materialization.partition == STEADY.key
    assert {"throughput_rps", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
            "error_rate", "requests"} <= set(materialization.metadata)
    assert materialization.metadata["throughput_rps"].value > 0

    assert not monitor(instance, resources, DRIFTING)[monitoring.PREDICTION_DRIFT].passed
    outbox = resources["events"].outbox()
    alerts = [e for e in outbox.events(DRIFTING.key) if e.type == EventType.MODEL_DRIFT_DETECTED]
    assert len(alerts) == 1  # the re-run of the same breach published nothing more
    assert alerts[0].data["check"] == monitoring.PREDICTION_DRIFT
    assert alerts[0].data["model_version"] == "1"
    assert [e for e in outbox.events(STEADY.key)] == []
    on_kafka = read_events(resources["events"].kafka_bootstrap, tenant=DRIFTING.key)
    assert [e.id for e in on_kafka if e.type == EventType.MODEL_DRIFT_DETECTED] == [alerts[0].id]

    result = tick(instance, cursor, resources, policy)
    assert [(r.partition_key, r.tags[REASON_TAG]) for r in result.run_requests] == [
        (DRIFTING.key, f"check {monitoring.PREDICTION_DRIFT} failed")]
    assert {k.path[-1] for k in result.run_requests[0].asset_selection} == set(
        RETRAIN_ASSETS)
    monitor(instance, resources, DRIFTING)  # still drifting: cooldown holds the next retrain
    assert tick(instance, result.cursor, resources, policy).run_requests == []
    assert json.loads(result.cursor)[f"churn/{STEADY.key}"]["last_request"] == 0.0


def test_errors_and_slow_requests_publish_quality_events(dagster_postgres, server_resources):
    instance, resources = dagster_postgres, server_resources
    write_log(resources, DRIFTING, LogSpec(version="2", requests=3000, seed=21,
                                           error_share=0.03, slow_share=0.2))
    found = monitor(instance, resources, DRIFTING)
    for name in (monitoring.ERROR_RATE, monitoring.LATENCY_P95):
        assert not found[name].passed and found[name].severity == dg.AssetCheckSeverity.ERROR
    assert found[monitoring.ERROR_RATE].metadata["observed"].value > 0.01
    assert found[monitoring.LATENCY_P95].metadata["observed"].value > 50.0
    degraded = [e.data["check"] for e in resources["events"].outbox().events(DRIFTING.key)
                if e.type == EventType.MODEL_QUALITY_DEGRADED]
    assert sorted(degraded) == sorted([monitoring.ERROR_RATE, monitoring.LATENCY_P95])


def test_a_tenant_reaches_neither_the_log_nor_the_versions_of_another(dagster_postgres,
                                                                     server_resources):
    instance, resources = dagster_postgres, server_resources
    mlflow = resources["mlflow"]
    assert load_profile(mlflow, DRIFTING, "2") is not None
    with pytest.raises(stages.StageTransitionError, match="tenant 'steady' has no model version"):
        load_profile(mlflow, STEADY, "2")  # drifting's version 2: steady has only version 1
    write_log(resources, STEADY, LogSpec(version="2", seed=31))
    with pytest.raises(stages.StageTransitionError, match="tenant 'steady' has no model version"):
        monitor(instance, resources, STEADY)
    with pytest.raises(ValueError, match="records of tenants"):
        prediction_log.write(resources["object_store"], STEADY, "churn",
                             synthetic_log.generate(DRIFTING.key, LogSpec(requests=5)).to_pylist())


def test_a_canary_with_5_percent_errors_is_rolled_back_and_production_kept(
        dagster_postgres, server_resources, ray_cluster):
    from ml_assets.serving import routing

    instance, resources = dagster_postgres, server_resources
    mlflow, events = resources["mlflow"], resources["events"]
    client = mlflow.client()
    canaried = Tenant("canaried")
    production, canary = production_and_staging(instance, mlflow, events, canaried)
    routing.set_route(canaried, routing.Route(registry_uri=mlflow.tracking_uri,
                                              primary=production, canary=canary,
                                              canary_weight=20))
    other = routing.Route(registry_uri=mlflow.tracking_uri, primary="1", canary="2",
                          canary_weight=20)
    routing.set_route(DRIFTING, other)  # another tenant's canary: not this log's business
    end = datetime.now(UTC)
    write_log(resources, canaried, LogSpec(version=production, requests=4000, seed=41, end=end))
    write_log(resources, canaried, LogSpec(version=canary, requests=400, seed=42, end=end,
                                           route=prediction_log.CANARY_ROUTE, error_share=0.05))

    found = monitor(instance, resources, canaried)
    guard = found[monitoring.CANARY_HEALTH]
    assert not guard.passed and guard.severity == dg.AssetCheckSeverity.ERROR
    assert guard.metadata["breached"].value == ["error_rate"]
    assert guard.metadata["canary"].value["version"] == canary
    assert guard.metadata["canary"].value["error_rate"] > 0.03
    assert found[monitoring.ERROR_RATE].passed  # < 1 % over all of the tenant's requests
    assert routing.get_route(canaried) == routing.Route(registry_uri=mlflow.tracking_uri,
                                                        primary=production)
    assert stages.stage_of(stages.model_version(client, canaried, canary)) == stages.ARCHIVED
    assert stages.stage_of(stages.model_version(client, canaried, production)) == (
        stages.PRODUCTION)
    assert routing.get_route(DRIFTING) == other

    monitor(instance, resources, canaried)  # the same window again: nothing left to roll back
    rolled_back = [e for e in events.outbox().events(canaried.key)
                   if e.type == EventType.CANARY_ROLLED_BACK]
    assert [(e.data["version"], e.data["production_version"]) for e in rolled_back] == [
        (canary, production)]


def test_a_new_staging_version_rolls_out_shadow_canary_steps_then_production(
        dagster_postgres, server_resources, ray_cluster):
    """The rollout policy carries a Staging version to Production with no person: shadow for
    N requests, canary 10 %, 50 %, then promotion, one step per monitoring run that saw enough
    healthy traffic; a pause holds it; every step is in the event stream and the ledger."""
    from ml_assets.registry import rollout
    from ml_assets.registry.ledger import production_history
    from ml_assets.resources.rollout import RolloutPolicy, RolloutSteps
    from ml_assets.serving import routing

    instance, mlflow, events = dagster_postgres, server_resources["mlflow"], \
        server_resources["events"]
    client = mlflow.client()
    rolled = Tenant("rolled")
    production, candidate = production_and_staging(instance, mlflow, events, rolled)
    routing.set_route(rolled, routing.Route(registry_uri=mlflow.tracking_uri,
                                            primary=production, staging=candidate))
    steps = RolloutSteps(shadow_requests=100, canary_steps=[10, 50, 100], min_requests=100,
                         min_minutes=0)
    resources = {**server_resources, "rollout_policy": RolloutPolicy(steps=steps)}

    def window(version: str, route: str, requests: int, seed: int) -> None:
        """Requests logged just now, after the current step began."""
        write_log(resources, rolled, LogSpec(
            version=version, route=route, requests=requests, seed=seed, span_s=1,
            end=datetime.now(UTC) + timedelta(seconds=2)))

    def step() -> str:
        monitor(instance, resources, rolled)
        materialized = instance.get_latest_materialization_event(
            dg.AssetKey(["churn", MODEL_MONITORING])).asset_materialization
        return materialized.metadata["rollout_step"].value

    window(production, prediction_log.PRODUCTION_ROUTE, 500, 51)
    assert step() == "shadow" and routing.get_route(rolled).shadow
    window(candidate, prediction_log.SHADOW_ROUTE, 40, 52)
    assert step() == "hold"  # 40 shadow answers of the 100 the policy wants
    window(candidate, prediction_log.SHADOW_ROUTE, 80, 53)
    assert step() == "canary"
    route = routing.get_route(rolled)
    assert (route.shadow, route.canary, route.canary_weight) == (False, candidate, 10)

    rollout.set_paused(rolled, True)
    window(candidate, prediction_log.CANARY_ROUTE, 300, 54)
    assert step() == "hold" and routing.get_route(rolled).canary_weight == 10
    rollout.set_paused(rolled, False)
    assert step() == "canary" and routing.get_route(rolled).canary_weight == 50
    window(candidate, prediction_log.CANARY_ROUTE, 300, 55)
    assert step() == "promote"
    route = routing.get_route(rolled)
    assert (route.primary, route.canary, route.staging) == (candidate, None, None)
    assert stages.stage_of(stages.model_version(client, rolled, candidate)) == stages.PRODUCTION
    assert stages.stage_of(stages.model_version(client, rolled, production)) == stages.ARCHIVED
    routed = [(e.data.get("step"), e.data["canary_weight"], e.data["actor"])
              for e in events.outbox().events(rolled.key)
              if e.type == EventType.MODEL_TRAFFIC_ROUTED]
    assert routed == [("shadow", 0, rollout.ACTOR), ("canary", 10, rollout.ACTOR),
                      ("canary", 50, rollout.ACTOR), (None, 0, rollout.ACTOR)]
    spell = production_history(events.outbox(), rolled)[-1]
    assert (spell.version, spell.promoted_by) == (candidate, rollout.ACTOR)


def test_every_tenant_is_monitored_in_one_run_with_checks_per_tenant(dagster_postgres,
                                                                      server_resources):
    """What monitoring_schedule asks for many deployed tenants: one run over their range, one
    read of each tenant's window, each tenant's checks recorded as its own."""
    from ml_assets.monitoring import check_history

    instance, resources = dagster_postgres, server_resources
    drifting, steady = Tenant("batch-drifting"), Tenant("batch-steady")
    instance.add_dynamic_partitions("tenant", [drifting.key, steady.key])
    for tenant in (drifting, steady):
        assert register_with_profiles(resources["mlflow"], tenant, 1) == ["1"]
    write_log(resources, drifting, LogSpec(version="1", prediction_shift=3.0, seed=21))
    write_log(resources, steady, LogSpec(version="1", seed=22))
    result = dg.materialize([model_monitoring], instance=instance, resources=resources,
                            tags={"dagster/asset_partition_range_start": drifting.key,
                                  "dagster/asset_partition_range_end": steady.key})
    assert result.success
    steps = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert steps == ["churn__model_monitoring"]  # one step for both tenants
    history = {t.key: [e for _, e in check_history.evaluations(
        instance, monitoring.PREDICTION_DRIFT, t, limit=5)] for t in (drifting, steady)}
    assert [(e.passed, e.severity) for e in history[drifting.key]] == [
        (False, dg.AssetCheckSeverity.ERROR)]
    assert history[drifting.key][0].metadata["rows"].value == 2000
    assert [e.passed for e in history[steady.key]] == [True]
    # the run's own result of the check warns, naming the tenant (an error blocks nothing here,
    # but would block every tenant's steps after a blocking check)
    (run_level,) = [e for e in result.get_asset_check_evaluations()
                    if e.partition is None and e.check_name == monitoring.PREDICTION_DRIFT]
    assert not run_level.passed and run_level.severity == dg.AssetCheckSeverity.WARN
    assert f"failed: {drifting.key}" in run_level.description
    metadata = {e.partition: e.materialization.metadata
                for e in result.get_asset_materialization_events()}
    assert metadata[steady.key]["requests"].value == metadata[drifting.key]["requests"].value > 0
    outbox = resources["events"].outbox()
    assert [e.data["check"] for e in outbox.events(drifting.key)
            if e.type == EventType.MODEL_DRIFT_DETECTED] == [monitoring.PREDICTION_DRIFT]
    assert [e for e in outbox.events(steady.key) if e.type == EventType.MODEL_DRIFT_DETECTED] == []
