"""Verified lineage: a version made from another tenant's run (or with its lineage forged or
missing) is refused on every promote path, and an alias moved onto it in MLflow is moved back."""

import dagster as dg
import pytest

from ml_assets.cli import main
from ml_assets.defs.registry.promotion import promote_model
from ml_assets.defs.registry.sensors import mlflow_stage_change_sensor
from ml_assets.events import EventType
from ml_assets.registry import actions, lineage, stages
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.settings import load_settings
from ml_assets.tenants import Tenant
from ml_assets_testing.models import log_untrained_models, register

ACME, GLOBEX = Tenant("acme"), Tenant("globex")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    """The embedded setup of a state folder (what the CLI uses too), with a model per tenant."""
    root = tmp_path_factory.mktemp("state")
    settings = load_settings({"ML_ASSETS_STATE_DIR": str(root)})
    (root / "mlflow").mkdir()
    mlflow = MlflowRegistry(tracking_uri=settings.mlflow_tracking_uri,
                            artifact_root=settings.mlflow_artifact_root)
    events = LifecycleEvents(outbox_path=str(settings.outbox_path))
    uris = log_untrained_models(mlflow, [ACME.key, GLOBEX.key])
    return root, (mlflow, events, {key: found[0] for key, found in uris.items()})


@pytest.fixture
def state(state_dir, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_STATE_DIR", str(state_dir[0]))
    return state_dir[1]


def forged(mlflow, tenant: Tenant, donor_uri: str, run_id: str | None = None,
           tags: dict | None = None) -> str:
    """A version of `tenant`'s model made straight through the MLflow client."""
    client = mlflow.client()
    donor = client.get_model_version(*_registered(mlflow, donor_uri))
    name = tenant.registered_model_name
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - it exists already
        pass
    made = client.create_model_version(
        name, source=donor.source, run_id=run_id or donor.run_id,
        tags=tags if tags is not None else dict(donor.tags), model_id=donor.model_id)
    return str(made.version)


def _registered(mlflow, uri: str) -> tuple[str, str]:
    """(name, version) of a lineage-complete registration of the donor model in acme's name."""
    return ACME.registered_model_name, register(mlflow, ACME, uri)


def test_the_graphs_kind_of_version_is_verified(state):
    mlflow, events, uris = state
    version = register(mlflow, GLOBEX, uris[GLOBEX.key])
    found = stages.model_version(mlflow.client(), GLOBEX, version)
    assert lineage.problems(mlflow.client(), GLOBEX, found) == []
    moved = stages.transition(mlflow.client(), events, GLOBEX, version, stages.STAGING, "t", "t")
    assert stages.stage_of(moved) == stages.STAGING


def test_another_tenants_run_is_refused_on_every_promote_path(state, capsys):
    mlflow, events, uris = state
    version = forged(mlflow, GLOBEX, uris[ACME.key])  # acme's run, model and tags
    client = mlflow.client()
    why = "not in the tenant's experiment 'ml_assets/globex'"
    with pytest.raises(lineage.LineageError, match=why):
        stages.transition(client, events, GLOBEX, version, stages.STAGING, "t", "mallory")
    # staged by hand in MLflow: every promote path still refuses
    client.set_model_version_tag(GLOBEX.registered_model_name, version, "stage", "Staging")
    client.set_registered_model_alias(GLOBEX.registered_model_name, "staging", version)
    with pytest.raises(lineage.LineageError, match=why):
        actions.promote(client, events, GLOBEX, version, "api or cli", "mallory")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [GLOBEX.key])
        result = promote_model.execute_in_process(
            partition_key=GLOBEX.key, instance=instance, raise_on_error=False,
            resources={"mlflow": mlflow, "events": events},
            run_config={"ops": {"promote_version": {"config": {
                "version": version, "reason": "job", "actor": "mallory"}}}})
    assert not result.success
    assert main(["promote", GLOBEX.key, version, "--reason", "cli"]) == 2
    assert why in capsys.readouterr().err
    assert stages.version_with_alias(client, GLOBEX, stages.PRODUCTION) is None
    moves = [e for e in events.outbox().events(GLOBEX.key)
             if e.type == EventType.MODEL_STAGE_CHANGED and e.data["version"] == version]
    assert moves == []


@pytest.mark.parametrize("attack, why", [
    ("no tags", "lineage tags"),
    ("own run, acme's model", "was not logged by its run"),
    ("own run, wrong data version", "data_version"),
])
def test_forged_or_missing_lineage_is_named(state, attack, why):
    mlflow, events, uris = state
    client = mlflow.client()
    own_run = client.get_logged_model(uris[GLOBEX.key].removeprefix("models:/")).source_run_id
    own = {"run_id": own_run, "data_version": "untrained", "dagster_run_id": "x"}
    version = {
        "no tags": lambda: forged(mlflow, GLOBEX, uris[ACME.key], tags={}),
        "own run, acme's model": lambda: forged(mlflow, GLOBEX, uris[ACME.key], own_run, own),
        "own run, wrong data version": lambda: register_as(
            mlflow, uris[GLOBEX.key], {**own, "data_version": "other"}),
    }[attack]()
    with pytest.raises(lineage.LineageError, match=why):
        stages.transition(client, events, GLOBEX, version, stages.STAGING, "t", "mallory")


def register_as(mlflow, uri: str, tags: dict, tenant: Tenant = GLOBEX) -> str:
    return str(actions.register_version(mlflow, tenant, uri, tags).version)


def test_the_tenants_own_run_of_another_use_case_is_refused(state):
    """globex's churn run registered as globex's spend model: same tenant, same experiment,
    complete tags, but the run trained another use case."""
    mlflow, events, uris = state
    client = mlflow.client()
    spend = Tenant(GLOBEX.key, "spend")
    own_run = client.get_logged_model(uris[GLOBEX.key].removeprefix("models:/")).source_run_id
    tags = {"run_id": own_run, "data_version": "untrained", "dagster_run_id": "x"}
    version = register_as(mlflow, uris[GLOBEX.key], tags, tenant=spend)
    assert spend.registered_model_name == "globex-spend"
    with pytest.raises(lineage.LineageError, match="trained use case 'churn', not 'spend'"):
        stages.transition(client, events, spend, version, stages.STAGING, "t", "mallory")
    assert stages.version_with_alias(client, spend, stages.STAGING) is None


def test_an_alias_moved_in_mlflow_onto_a_refused_version_is_moved_back(state):
    mlflow, events, uris = state
    client = mlflow.client()
    good = register(mlflow, GLOBEX, uris[GLOBEX.key])
    for stage in (stages.STAGING, stages.PRODUCTION):
        stages.transition(client, events, GLOBEX, good, stage, "t", "t")
    donor_tags = stages.model_version(mlflow.client(), ACME, register(
        mlflow, ACME, uris[ACME.key])).tags
    foreign = forged(mlflow, GLOBEX, uris[ACME.key], tags={**donor_tags, "stage": "Staging"})
    unstaged = register(mlflow, GLOBEX, uris[GLOBEX.key])  # lineage fine, stage None
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [GLOBEX.key])
        resources = {"mlflow": mlflow, "events": events}
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            cursor = mlflow_stage_change_sensor(context).cursor
        for bad, why in ((foreign, "not in the tenant's experiment"), (unstaged, "was None")):
            client.set_registered_model_alias(GLOBEX.registered_model_name, "production", bad)
            with dg.build_sensor_context(instance=instance, cursor=cursor,
                                         resources=resources) as context:
                result = mlflow_stage_change_sensor(context)
            cursor = result.cursor
            assert result.run_requests == []  # nothing to redeploy: the move was undone
            production = stages.version_with_alias(client, GLOBEX, stages.PRODUCTION)
            assert str(production.version) == good
            reverted = [e for e in events.outbox().events(GLOBEX.key)
                        if e.type == EventType.MODEL_STAGE_REVERTED][-1]
            assert (reverted.data["version"], reverted.data["restored_version"]) == (bad, good)
            assert why in reverted.data["reason"]
            assert reverted.data["actor"] == "mlflow_stage_change_sensor"


def test_the_cli_summary_shows_the_stage_from_the_versions_alias(state_dir, capsys):
    """Search results omit aliases: the summary once called a Production version Archived."""
    from ml_assets.cli.demo import summary
    from ml_assets.data import churn_data

    root, (mlflow, events, uris) = state_dir
    settings = load_settings({"ML_ASSETS_STATE_DIR": str(root)})
    churn_data.write(ACME.key, churn_data.ChurnDataSpec(customers=50), settings.raw_data_dir)
    version = register(mlflow, ACME, uris[ACME.key])
    for stage in (stages.STAGING, stages.PRODUCTION):
        stages.transition(mlflow.client(), events, ACME, version, stage, "t", "t")
    shown = summary(settings, ACME, token="mla_example")
    assert f"version {version} (stage Production)" in shown
    assert "authorization: Bearer mla_example" in shown
