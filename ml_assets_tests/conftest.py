"""Shared fixtures: a throw-away state folder, one Ray per test session, a Dagster instance.

Tests live in unit/ (no server, no Ray: `make test-unit`) and integration/ (real servers and a
Ray cluster: `make test-integration`); a unit test that asks for a server fixture is an error."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.data import churn_data
from ml_assets.resources import build_resources
from ml_assets.settings import Settings, load_settings
from ml_assets_testing.servers import (
    S3_KEYS,
    Broker,
    free_port,
    s3_store,
    start_s3,
    start_triton,
    venv_bin,
    wait_for_http,
)

TENANTS = ("acme", "globex")
SERVER_FIXTURES = {"ray_cluster", "graph", "s3_endpoint", "mlflow_server", "broker",
                   "postgres_database", "triton_server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder; keep servers and Ray out of unit/."""
    for item in items:
        folder = item.path.parent.name
        if folder in ("unit", "integration"):
            item.add_marker(getattr(pytest.mark, folder))
        servers = sorted(SERVER_FIXTURES & set(getattr(item, "fixturenames", ())))
        if folder == "unit" and servers:
            raise pytest.UsageError(f"{item.nodeid} is a unit test but uses {servers}: "
                                    "move it to ml_assets_tests/integration/")
TEST_SPEC = churn_data.ChurnDataSpec(customers=1000)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    state = tmp_path_factory.mktemp("state")
    return load_settings({"ML_ASSETS_STATE_DIR": str(state),
                          "ML_ASSETS_SERVE_PORT": str(free_port()),
                          "ML_ASSETS_TRITON_URL": f"http://127.0.0.1:{free_port()}"})


@pytest.fixture(scope="session")
def resources(settings: Settings) -> dict:
    return build_resources(settings)


@pytest.fixture(scope="session")
def tenant_data(settings: Settings) -> Path:
    for tenant in TENANTS:
        churn_data.write(tenant, TEST_SPEC, settings.raw_data_dir)
    return settings.raw_data_dir


@pytest.fixture(scope="session")
def predict(settings: Settings) -> Callable[..., tuple[int, dict, dict]]:
    """post_json with a key of the tenant the URL names (staging scope: both its routes)."""
    from ml_assets.access.keys import KeyStore, Role
    from ml_assets.serving.client import post_json
    from ml_assets.tenants import Tenant

    keys, tokens = KeyStore(settings.api_keys_path), {}

    def call(url: str, body: dict, **kwargs) -> tuple[int, dict, dict]:
        tenant = url.split("/v1/", 1)[1].split("/", 1)[0]
        if tenant not in tokens:
            tokens[tenant] = keys.create(Tenant(tenant), Role.staging)[1]
        return post_json(url, body, token=tokens[tenant], **kwargs)

    return call


@pytest.fixture(scope="session")
def ray_cluster(resources: dict) -> Iterator[None]:
    """One local Ray (and Serve, once started) for the whole session: start-up costs ~10-20 s."""
    import ray

    resources["ray"].connect()
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster"))) as inst:
        inst.add_dynamic_partitions("tenant", list(TENANTS))
        yield inst


EPOCHS = 5
MLFLOW_BUCKET = "mlflow-artifacts"


def graph_assets() -> list[dg.AssetsDefinition]:
    from ml_assets import names
    from ml_assets_testing.chain import chain

    return [chain().asset(name) for name in names.MODEL_GRAPH]


# a tiny space around values that train well, so the searched model still passes the gate
SEARCH = {"enabled": True, "num_samples": 6, "max_epochs": 4, "grace_period": 1,
          "learning_rate": [5e-3, 3e-2], "dropout": [0.0, 0.2],
          "hidden_sizes": [[64, 32], [32, 16]], "batch_size": [64]}


def run_config(search: bool = False, **trained_model: object) -> dict:
    ops = {"churn__trained_model": {"config": {"epochs": EPOCHS, **trained_model}}}
    if search:
        ops["churn__hyperparameter_search"] = {"config": SEARCH}
    return {"ops": ops}


def materialize(instance: dg.DagsterInstance, resources: dict, tenant: str,
                selection: list[str] | None = None, config: dict | None = None,
                raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    # churn's assets, by name or by key
    selection = None if selection is None else [
        name if "/" in name else f"churn/{name}" for name in selection]
    if config is None:
        trains = selection is None or "churn/trained_model" in selection
        config = run_config() if trains else {}
    return dg.materialize(
        graph_assets(),
        selection=selection,
        partition_key=tenant,
        instance=instance,
        resources=resources,
        run_config=config,
        raise_on_error=raise_on_error,
    )


@pytest.fixture(scope="session")
def graph(instance, resources, tenant_data, ray_cluster) -> dict[str, dict[str, object]]:
    """The whole graph for both tenants: acme one asset at a time (no search), globex in one
    run with the hyperparameter search on.

    Returns, per tenant, each asset's output value and materialization metadata.
    """
    made: dict[str, dict[str, object]] = {}
    acme_results = [
        materialize(instance, resources, "acme", selection=[asset.key.to_user_string()])
        for asset in graph_assets()
    ]
    globex_result = materialize(instance, resources, "globex", config=run_config(search=True))
    for tenant, results in (("acme", acme_results), ("globex", [globex_result])):
        made[tenant] = {}
        for result in results:
            for event in result.get_asset_materialization_events():
                key = event.asset_key.path[-1]  # churn/trained_model: step churn__trained_model
                made[tenant][key] = result.output_for_node(event.step_key)
                made[tenant][f"{key}.metadata"] = {
                    k: v.value for k, v in event.materialization.metadata.items()
                }
            for evaluation in result.get_asset_check_evaluations():
                made[tenant][f"check.{evaluation.check_name}"] = evaluation
    return made


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database on the machine's PostgreSQL (its name), dropped afterwards."""
    import psycopg2

    name = f"ml_assets_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@contextmanager
def server_path_resources(state: Path, s3_endpoint: str, mlflow_server: str, bucket: str,
                          **env: str) -> Iterator[dict]:
    """The resources the settings give on the server path (S3 keys from the environment, as
    deployed), the bucket created; `env`: more settings."""
    from ml_assets.resources import bootstrap

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ML_ASSETS_S3_ACCESS_KEY", S3_KEYS["AWS_ACCESS_KEY_ID"])
        patch.setenv("ML_ASSETS_S3_SECRET_KEY", S3_KEYS["AWS_SECRET_ACCESS_KEY"])
        resources = build_resources(load_settings({
            "ML_ASSETS_STATE_DIR": str(state), "MLFLOW_TRACKING_URI": mlflow_server,
            "ML_ASSETS_S3_ENDPOINT": s3_endpoint, "ML_ASSETS_S3_BUCKET": bucket, **env}))
        bootstrap(resources)
        yield resources


@contextmanager
def postgres_instance(home: Path, tenants: list[str]) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance from deploy/dagster.yaml on a fresh PostgreSQL database."""
    import shutil

    from ml_assets.settings import PROJECT_ROOT

    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with fresh_database() as name, pytest.MonkeyPatch.context() as env:
        for key, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432",
                           "DAGSTER_PG_USER": "postgres", "DAGSTER_PG_PASSWORD": "",
                           "DAGSTER_PG_DB": name}.items():
            env.setenv(key, value)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions("tenant", tenants)
            yield instance


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    with fresh_database() as name:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    endpoint, server = start_s3()
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(postgres_database, s3_endpoint) -> Iterator[str]:
    """`mlflow server`: PostgreSQL backend store, artifacts proxied to the S3 server."""
    s3_store(s3_endpoint, MLFLOW_BUCKET).ensure_bucket()
    port = free_port()
    server = subprocess.Popen(
        [venv_bin("mlflow"), "server", "--backend-store-uri", postgres_database,
         "--artifacts-destination", f"s3://{MLFLOW_BUCKET}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint},
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health", server)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def triton_server(settings: Settings) -> Iterator[str]:
    """One tritonserver for the session (explicit model control) at the settings' URL."""
    server = start_triton(settings.state_dir / "triton", settings.triton_url)
    yield settings.triton_url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def broker(s3_endpoint) -> Iterator[Broker]:
    """A broker that tests may kill and start again; not started until a test asks."""
    broker = Broker(s3_endpoint)
    yield broker
    broker.kill()
