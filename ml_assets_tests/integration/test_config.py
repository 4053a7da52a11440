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


def test_deploy_refuses_a_version_that_is_not_staged(graph, instance, resources):
    """A version in stage None (internal only) is never served."""
    trained = graph["acme"]["trained_model"]
    mlflow = resources["mlflow"]
    version = register_version(mlflow, Tenant("acme"), trained["model_uri"],
                               {"run_id": trained["run_id"]}).version
    version = str(version)
    result = materialize(instance, resources, "acme", selection=["deployed_endpoint"],
                         config={"ops": {"deployed_endpoint": {"config": {"version": version}}}},
                         raise_on_error=False)
    assert not result.success
    assert "stage None" in _failure_message(result)
    served = graph["acme"]["deployed_endpoint"]["version"]
    assert stages.stage_of(stages.model_version(mlflow.client(), Tenant("acme"), served)) \
        == stages.STAGING
