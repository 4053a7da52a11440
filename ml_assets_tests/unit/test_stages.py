"""The stage layer on MLflow 3 aliases + tags, against a real MLflow registry (sqlite)."""

import pytest

from ml_assets.events import EventType
from ml_assets.registry import stages
from ml_assets.registry.actions import register_version
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.tenants import Tenant
from ml_assets_testing.models import lineage_tags, log_untrained_models

ACME, GLOBEX = Tenant("acme"), Tenant("globex")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    registry = MlflowRegistry(tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                              artifact_root=(root / "artifacts").as_uri())
    uris = log_untrained_models(registry, [ACME.key, GLOBEX.key])
    return registry, {tenant: models[0] for tenant, models in uris.items()}


@pytest.fixture
def events(tmp_path):
    return LifecycleEvents(outbox_path=str(tmp_path / "outbox.db"))


def new_version(registry, tenant: Tenant) -> str:
    mlflow, uris = registry
    return register_version(mlflow, tenant, uris[tenant.key],
                            lineage_tags(mlflow, uris[tenant.key])).version


def stage(registry, tenant: Tenant, version: str) -> str:
    return stages.stage_of(stages.model_version(registry[0].client(), tenant, version))


def move(registry, events, tenant, version, to):
    return stages.transition(registry[0].client(), events, tenant, version, to,
                             reason="test", actor="pytest")


def test_a_new_version_starts_in_none(registry):
    assert stage(registry, ACME, new_version(registry, ACME)) == stages.NONE


def test_promotion_path_sets_aliases_tags_and_events(registry, events):
    version = new_version(registry, ACME)
    move(registry, events, ACME, version, stages.STAGING)
    assert stages.version_with_alias(registry[0].client(), ACME, stages.STAGING).version == version
    moved = move(registry, events, ACME, version, stages.PRODUCTION)
    assert moved.tags[stages.STAGE_TAG] == stages.PRODUCTION
    assert moved.aliases == ["production"]  # the staging alias left with the move
    changes = [(e.data["from_stage"], e.data["to_stage"], e.data["actor"])
               for e in events.outbox().events("acme")]
    assert changes == [(stages.NONE, stages.STAGING, "pytest"),
                       (stages.STAGING, stages.PRODUCTION, "pytest")]
    assert all(e.type == EventType.MODEL_STAGE_CHANGED for e in events.outbox().events())


def test_promoting_archives_the_previous_production(registry, events):
    first, second = new_version(registry, ACME), new_version(registry, ACME)
    for version in (first, second):
        move(registry, events, ACME, version, stages.STAGING)
        move(registry, events, ACME, version, stages.PRODUCTION)
    assert stage(registry, ACME, first) == stages.ARCHIVED
    assert stage(registry, ACME, second) == stages.PRODUCTION
    client = registry[0].client()
    versions = client.search_model_versions(f"name='{ACME.registered_model_name}'")
    productions = [v.version for v in versions
                   if stage(registry, ACME, v.version) == stages.PRODUCTION]
    assert productions == [second]


def test_archived_cannot_skip_staging(registry, events):
    version = new_version(registry, ACME)
    move(registry, events, ACME, version, stages.ARCHIVED)
    with pytest.raises(stages.StageTransitionError, match="Archived -> Production"):
        move(registry, events, ACME, version, stages.PRODUCTION)
    assert stage(registry, ACME, version) == stages.ARCHIVED


def test_unknown_stage_and_version_are_refused(registry, events):
    with pytest.raises(stages.StageTransitionError, match="unknown stage 'Live'"):
        move(registry, events, ACME, "1", "Live")
    with pytest.raises(stages.StageTransitionError, match="no model version '999'"):
        move(registry, events, ACME, "999", stages.STAGING)
    assert events.outbox().events() == []


def test_a_tenant_cannot_move_another_tenants_version(registry, events):
    acme_only = new_version(registry, ACME)  # globex registers no version in this module
    globex_versions = {v.version for v in registry[0].client().search_model_versions(
        f"name='{GLOBEX.registered_model_name}'")}
    assert acme_only not in globex_versions
    with pytest.raises(stages.StageTransitionError, match="tenant 'globex' has no model"):
        move(registry, events, GLOBEX, acme_only, stages.STAGING)
    assert stage(registry, ACME, acme_only) == stages.NONE


def test_runs_of_another_tenant_are_refused(registry):
    mlflow, _ = registry
    acme_run = mlflow.start_run(ACME, "isolation", tags={})
    assert mlflow.tenant_run(ACME, acme_run).info.run_id == acme_run
    with pytest.raises(PermissionError, match="not in tenant 'globex'"):
        mlflow.tenant_run(GLOBEX, acme_run)


PATHS = {  # legal moves that bring a new version into each stage
    stages.NONE: [],
    stages.STAGING: [stages.STAGING],
    stages.PRODUCTION: [stages.STAGING, stages.PRODUCTION],
    stages.ARCHIVED: [stages.ARCHIVED],
}


@pytest.mark.parametrize("from_stage", stages.STAGES)
@pytest.mark.parametrize("to_stage", stages.STAGES)
def test_every_move_is_allowed_exactly_when_the_stage_graph_says(registry, events, from_stage,
                                                                 to_stage):
    version = new_version(registry, GLOBEX)
    for step in PATHS[from_stage]:
        move(registry, events, GLOBEX, version, step)
    assert stage(registry, GLOBEX, version) == from_stage
    if to_stage in stages.LEGAL_MOVES[from_stage]:
        move(registry, events, GLOBEX, version, to_stage)
        assert stage(registry, GLOBEX, version) == to_stage
    else:
        with pytest.raises(stages.StageTransitionError, match=f"{from_stage} -> {to_stage}"):
            move(registry, events, GLOBEX, version, to_stage)
        assert stage(registry, GLOBEX, version) == from_stage
