"""MLflow's built-in authentication (`mlflow server --app-name basic-auth`, as deploy/ runs
it): the platform's identity owns each tenant's experiment and registered model; a person
given READ on them reads versions but cannot create one, move an alias or log a run there,
and a user granted nothing reads nothing."""

from __future__ import annotations

import os
import subprocess

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ml_assets.registry import stages
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.tenants import Tenant
from ml_assets_testing.models import log_untrained_models, register
from ml_assets_testing.servers import free_port, venv_bin, wait_for_http

ACME = Tenant("acme")
PLATFORM = ("admin", "platform-secret-1")  # the identity every step and service runs as


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-auth")
    config = root / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = {PLATFORM[0]}\n"
        f"admin_password = {PLATFORM[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    server = subprocess.Popen(
        [venv_bin("mlflow"), "server", "--app-name", "basic-auth",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", (root / "artifacts").as_uri(),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config),
             "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key"})
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health", server)
    yield url, root
    server.terminate()
    server.wait(timeout=30)


def as_user(monkeypatch, username: str, password: str) -> None:
    # the MLflow client reads these on every request
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_only_the_platform_identity_writes_a_tenants_registry(auth_server, monkeypatch):
    from mlflow.server import get_app_client

    url, root = auth_server
    as_user(monkeypatch, *PLATFORM)
    registry = MlflowRegistry(tracking_uri=url)
    events = LifecycleEvents(outbox_path=str(root / "outbox.db"))
    uri = log_untrained_models(registry, [ACME.key])[ACME.key][0]
    version = register(registry, ACME, uri)
    platform = registry.client()
    stages.transition(platform, events, ACME, version, stages.STAGING, "test", "pytest")
    experiment_id = registry.experiment_id(ACME)

    users = get_app_client("basic-auth", tracking_uri=url)
    users.create_user("acme-analyst", "analyst-secret-1")
    users.create_user("mallory", "mallory-secret-1")
    users.grant_user_permission("acme-analyst", "registered_model",
                                ACME.registered_model_name, "READ")
    users.grant_user_permission("acme-analyst", "experiment", experiment_id, "READ")

    as_user(monkeypatch, "acme-analyst", "analyst-secret-1")
    analyst = MlflowClient(url, url)
    assert analyst.get_model_version(ACME.registered_model_name, version).version == version
    source = platform.get_model_version(ACME.registered_model_name, version)
    attempts = {
        "new version": lambda: analyst.create_model_version(
            ACME.registered_model_name, source=source.source, run_id=source.run_id),
        "alias": lambda: analyst.set_registered_model_alias(
            ACME.registered_model_name, "production", version),
        "run": lambda: analyst.create_run(experiment_id),
    }
    for attempt in attempts.values():
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
            attempt()
    as_user(monkeypatch, "mallory", "mallory-secret-1")
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        MlflowClient(url, url).get_model_version(ACME.registered_model_name, version)
    as_user(monkeypatch, "mallory", "wrong")
    with pytest.raises(MlflowException):
        MlflowClient(url, url).search_experiments()

    as_user(monkeypatch, *PLATFORM)  # what the attempts left: one version, still Staging
    versions = platform.search_model_versions(f"name = '{ACME.registered_model_name}'")
    assert [v.version for v in versions] == [version]
    assert stages.version_with_alias(platform, ACME, stages.PRODUCTION) is None
