"""The same graph against real servers: Dagster on PostgreSQL, checkpoints on S3, MLflow server
(PostgreSQL + S3 artifacts), events on Kafka; and what happens when one of them is down."""


import dagster as dg
import pytest

from ml_assets.data import churn_data
from ml_assets.events import EventType, read_events
from ml_assets.registry import stages
from ml_assets.resources import bootstrap, build_resources
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.settings import load_settings
from ml_assets.tenants import Tenant
from ml_assets_tests.conftest import (
    EPOCHS,
    MLFLOW_BUCKET,
    S3_KEYS,
    TEST_SPEC,
    free_port,
    materialize,
    postgres_instance,
    s3_store,
)

UMBRELLA = Tenant("umbrella")
BUCKET = "ml-assets-servers"


@pytest.fixture(scope="module")
def dagster_postgres(tmp_path_factory):
    """A Dagster instance from deploy/dagster.yaml, on a fresh PostgreSQL database."""
    with postgres_instance(tmp_path_factory.mktemp("dagster-home"), [UMBRELLA.key]) as instance:
        yield instance


@pytest.fixture(scope="module")
def server_resources(settings, s3_endpoint, mlflow_server, broker, tmp_path_factory):
    state = tmp_path_factory.mktemp("server-state")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ML_ASSETS_S3_ACCESS_KEY", S3_KEYS["AWS_ACCESS_KEY_ID"])
        env.setenv("ML_ASSETS_S3_SECRET_KEY", S3_KEYS["AWS_SECRET_ACCESS_KEY"])
        env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a dead server fails fast
        server_settings = load_settings({
            "ML_ASSETS_STATE_DIR": str(state),
            "MLFLOW_TRACKING_URI": mlflow_server,
            "ML_ASSETS_S3_ENDPOINT": s3_endpoint,
            "ML_ASSETS_S3_BUCKET": BUCKET,
            "ML_ASSETS_KAFKA_BOOTSTRAP": broker.bootstrap,
            "ML_ASSETS_SERVE_PORT": str(settings.serve_port),  # one Serve proxy per cluster
            "ML_ASSETS_API_KEYS": str(settings.api_keys_path),  # and one key store it checks
        })
        resources = build_resources(server_settings)
        churn_data.write(UMBRELLA.key, TEST_SPEC, server_settings.raw_data_dir)
        broker.start()
        bootstrap(resources)  # the deployment's own bootstrap: bucket and topic
        yield resources
        broker.kill()


@pytest.fixture(scope="module")
def server_run(dagster_postgres, server_resources, ray_cluster):
    from ray import serve

    from ml_assets.serving.app import APP_NAME

    result = materialize(dagster_postgres, server_resources, UMBRELLA.key)
    yield {key: result.output_for_node(f"churn__{key}") for key in
           ("training_features", "trained_model", "registered_model", "deployed_endpoint")}
    # the session's one Serve app may have started here, logging to this module's S3 bucket:
    # the next module's deploy starts it again with its own object store
    serve.delete(APP_NAME)


def test_runs_and_materializations_live_in_postgres(server_run, dagster_postgres):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(dagster_postgres.run_storage, PostgresRunStorage)
    assert isinstance(dagster_postgres.event_log_storage, PostgresEventLogStorage)
    for key in ("training_features", "registered_model", "deployed_endpoint"):
        event = dagster_postgres.get_latest_materialization_event(dg.AssetKey(["churn", key]))
        assert event.dagster_event.partition == UMBRELLA.key


def test_checkpoints_are_on_s3_under_the_tenant_prefix(server_run, server_resources):
    store = server_resources["object_store"].process_config_and_initialize()
    run_dir = server_run["trained_model"]["checkpoint_dir"]
    assert run_dir.startswith(f"s3://{BUCKET}/tenants/umbrella/checkpoints/")
    keys = store.list(UMBRELLA, "checkpoints")
    assert len([k for k in keys if k.endswith("state.pt")]) == EPOCHS
    client = store._minio()
    every_key = [o.object_name for o in client.list_objects(BUCKET, recursive=True)
                 if not o.object_name.endswith("/")]  # pyarrow's directory markers
    assert every_key and all(k.startswith("tenants/umbrella/") for k in every_key)


def test_model_is_registered_on_the_server_with_artifacts_on_s3(server_run, server_resources,
                                                                s3_endpoint):
    registered = server_run["registered_model"]
    client = server_resources["mlflow"].client()
    version = stages.model_version(client, UMBRELLA, registered["version"])
    assert stages.stage_of(version) == stages.PRODUCTION  # the tenant's first version
    artifacts = [o.object_name for o in s3_store(s3_endpoint, MLFLOW_BUCKET)._minio()
                 .list_objects(MLFLOW_BUCKET, recursive=True)]
    assert any(name.endswith("MLmodel") for name in artifacts)
    assert any(name.endswith("evaluation/report.json") for name in artifacts)


def test_lifecycle_events_reach_kafka_in_order(server_run, server_resources):
    events = server_resources["events"]
    published = read_events(events.kafka_bootstrap, events.topic, tenant=UMBRELLA.key)
    assert [e.type for e in published] == [
        EventType.MODEL_TRAINING_STARTED, EventType.MODEL_TRAINING_COMPLETED,
        EventType.MODEL_REGISTERED, EventType.MODEL_STAGE_CHANGED,  # None -> Staging
        EventType.MODEL_STAGE_CHANGED, EventType.MODEL_DEPLOYED]  # -> Production: the first
    assert [e.id for e in published] == [e.id for e in events.outbox().events(UMBRELLA.key)]


def _versions(resources) -> int:
    return len(resources["mlflow"].client().search_model_versions(
        f"name='{UMBRELLA.registered_model_name}'"))


def _failure_text(result) -> str:
    return "\n".join(e.event_specific_data.error.to_string()
                     for e in result.all_events if e.is_step_failure)


def test_unreachable_s3_fails_training_before_compute(server_run, server_resources,
                                                      dagster_postgres):
    dead = s3_store(f"http://127.0.0.1:{free_port()}", BUCKET)
    client = server_resources["mlflow"].client()
    experiment = server_resources["mlflow"].experiment_id(UMBRELLA)
    runs, versions = len(client.search_runs([experiment])), _versions(server_resources)
    result = materialize(dagster_postgres, {**server_resources, "object_store": dead},
                         UMBRELLA.key, selection=["trained_model"], raise_on_error=False)
    assert not result.success
    assert f"object store {dead.endpoint}" in _failure_text(result)
    assert len(client.search_runs([experiment])) == runs
    assert _versions(server_resources) == versions


def test_mlflow_down_at_registration_then_a_rerun_registers_exactly_one(
        server_run, server_resources, dagster_postgres):
    dead_url = f"http://127.0.0.1:{free_port()}"
    before = _versions(server_resources)
    result = materialize(dagster_postgres, {**server_resources,
                                            "mlflow": MlflowRegistry(tracking_uri=dead_url)},
                         UMBRELLA.key, selection=["registered_model"], raise_on_error=False)
    assert not result.success
    assert dead_url in _failure_text(result)
    restarts = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert len(restarts) == 2  # the retry policy rode it out twice, then gave up
    assert _versions(server_resources) == before
    rerun = materialize(dagster_postgres, server_resources, UMBRELLA.key,
                        selection=["registered_model"])
    assert rerun.success
    assert _versions(server_resources) == before + 1
