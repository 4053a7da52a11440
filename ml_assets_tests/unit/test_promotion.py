"""Promotion by job and CLI, rollback, and the ledger that answers "Production at time T"."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from ml_assets.defs.registry.promotion import promote_model
from ml_assets.registry import stages
from ml_assets.registry.actions import register_version, rollback
from ml_assets.registry.ledger import production_at, production_history
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.tenants import Tenant
from ml_assets_testing.models import lineage_tags, log_untrained_models

ACME = Tenant("acme")


@pytest.fixture
def registry(tmp_path):
    mlflow = MlflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                            artifact_root=(tmp_path / "artifacts").as_uri())
    uri = log_untrained_models(mlflow, [ACME.key])[ACME.key][0]
    events = LifecycleEvents(outbox_path=str(tmp_path / "outbox.db"))
    versions = []
    for _ in range(3):
        version = str(register_version(mlflow, ACME, uri, lineage_tags(mlflow, uri)).version)
        stages.transition(mlflow.client(), events, ACME, version, stages.STAGING, "test", "t")
        versions.append(version)
    return mlflow, events, versions


def promote_with_job(mlflow, events, version: str, reason: str) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [ACME.key])
        return promote_model.execute_in_process(
            partition_key=ACME.key, instance=instance, raise_on_error=False,
            resources={"mlflow": mlflow, "events": events},
            run_config={"ops": {"promote_version": {"config": {
                "version": version, "reason": reason, "actor": "alice"}}}},
        )


def now() -> datetime:
    return datetime.now(UTC)


def test_history_across_promote_promote_and_rollback(registry):
    mlflow, events, (v1, v2, _) = registry
    before = now()
    assert promote_with_job(mlflow, events, v1, "first release").success
    during_v1 = now()
    assert promote_with_job(mlflow, events, v2, "better auc").success
    during_v2 = now()
    back = rollback(mlflow.client(), events, ACME, actor="bob")
    assert str(back.version) == v1
    client = mlflow.client()
    assert stages.stage_of(stages.model_version(client, ACME, v1)) == stages.PRODUCTION
    assert stages.stage_of(stages.model_version(client, ACME, v2)) == stages.ARCHIVED

    spells = production_history(events.outbox(), ACME)
    assert [(s.version, s.promoted_by) for s in spells] == [(v1, "alice"), (v2, "alice"),
                                                             (v1, "bob")]
    assert spells[0].until <= spells[1].since and spells[-1].until is None
    assert "rollback from version" in spells[-1].reason
    outbox = events.outbox()
    assert production_at(outbox, ACME, before) is None
    assert production_at(outbox, ACME, during_v1) == v1
    assert production_at(outbox, ACME, during_v2) == v2
    assert production_at(outbox, ACME, now()) == v1


def test_promote_job_refuses_an_illegal_move_and_changes_nothing(registry):
    mlflow, events, (v1, _, v3) = registry
    stages.transition(mlflow.client(), events, ACME, v3, stages.ARCHIVED, "test", "t")
    result = promote_with_job(mlflow, events, v3, "skip staging")
    assert not result.success
    assert stages.stage_of(stages.model_version(mlflow.client(), ACME, v3)) == stages.ARCHIVED
    assert production_history(events.outbox(), ACME) == []


def test_promote_job_config_needs_a_reason(registry):
    mlflow, events, (v1, _, _) = registry
    result = promote_with_job(mlflow, events, v1, "")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "reason" in str(failure.event_specific_data.error.to_string())
    assert production_history(events.outbox(), ACME) == []


def test_rollback_without_an_earlier_production_is_refused(registry):
    mlflow, events, (v1, _, _) = registry
    assert promote_with_job(mlflow, events, v1, "only release").success
    with pytest.raises(stages.StageTransitionError, match="no earlier Production"):
        rollback(mlflow.client(), events, ACME, actor="bob")
    assert stages.stage_of(stages.model_version(mlflow.client(), ACME, v1)) == stages.PRODUCTION


def test_rollback_is_per_tenant(registry):
    mlflow, events, (v1, v2, _) = registry
    assert promote_with_job(mlflow, events, v1, "release one").success
    assert promote_with_job(mlflow, events, v2, "release two").success
    with pytest.raises(stages.StageTransitionError, match="'globex'"):
        rollback(mlflow.client(), events, Tenant("globex"), actor="mallory")
    assert production_at(events.outbox(), ACME, now()) == v2
