"""Bad input fails before compute, naming what was wrong, and writes nothing."""

import pytest
from pydantic import ValidationError

from ml_assets.events import Outbox
from ml_assets.registry import stages
from ml_assets.registry.actions import register_version
from ml_assets.tenants import Tenant
from ml_assets.training.config import ExperimentConfig
from ml_assets_tests.conftest import materialize, run_config


@pytest.mark.parametrize("field, value", [
    ("learning_rate", -0.1), ("learning_rate", 0), ("epochs", 0), ("batch_size", 0),
    ("num_workers", 0), ("dropout", 1.0), ("hidden_sizes", []), ("hidden_sizes", [8, 0]),
])
def test_experiment_config_names_the_bad_field(field, value):
    with pytest.raises(ValidationError, match=field):
        ExperimentConfig(**{field: value})


def _failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.event_specific_data.error
    return "".join(part.message for part in (error, error.cause) if part)


def test_bad_run_config_fails_before_any_training(graph, instance, resources, settings):
    """Launching with epochs=0 fails at step start: no MLflow run, no lifecycle event."""
    client = resources["mlflow"].client()
    experiment = resources["mlflow"].experiment_id(Tenant("acme"))
    runs_before = len(client.search_runs([experiment]))
    events_before = len(Outbox(settings.outbox_path).events("acme"))
    result = materialize(instance, resources, "acme", selection=["trained_model"],
                         config=run_config(epochs=0), raise_on_error=False)
    assert not result.success
    assert "epochs" in _failure_message(result)
    assert len(client.search_runs([experiment])) == runs_before
    assert len(Outbox(settings.outbox_path).events("acme")) == events_before


def test_unknown_tenant_is_refused(graph, instance, resources, settings):
    events_before = len(Outbox(settings.outbox_path).events())
    with pytest.raises(Exception, match="nobody"):
        materialize(instance, resources, "nobody", selection=["training_features"])
    assert len(Outbox(settings.outbox_path).events()) == events_before


def test_a_version_in_stage_none_is_never_loaded(graph, resources, settings):
    """A route naming a None (internal only) version gets a 503 from the replica itself: it
    checks the stage before it loads a model."""
    import time

    from ml_assets.access.keys import KeyStore, Role
    from ml_assets.serving.client import post_json
    from ml_assets.serving.routing import Route, get_route, set_route

    trained, acme = graph["acme"]["trained_model"], Tenant("acme")
    mlflow = resources["mlflow"]
    version = str(register_version(mlflow, acme, trained["model_uri"], {
        "run_id": trained["run_id"], "data_version": trained["data_version"],
        "dagster_run_id": "pytest"}).version)
    token = KeyStore(settings.api_keys_path).create(acme, Role.predict)[1]
    endpoint, saved = graph["acme"]["deployed_endpoint"], get_route(acme)
    set_route(acme, Route(registry_uri=mlflow.tracking_uri, primary=version))
    try:
        for _ in range(100):  # until the replica has the route
            status, _, body = post_json(endpoint["url"], {"rows": [endpoint["sample_row"]]},
                                        token=token)
            if status != 200:
                break
            time.sleep(0.1)
        assert status == 503 and f"version {version} is None" in body["error"], body
    finally:
        set_route(acme, saved)
    assert stages.stage_of(stages.model_version(mlflow.client(), acme, version)) == stages.NONE