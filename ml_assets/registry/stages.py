"""The four registry stages (None, Staging, Production, Archived) on MLflow 3 aliases + tags.

MLflow deprecated stages; here a version's stage is its `stage` tag, Staging and Production are
also aliases (`staging`, `production`), and every move is a MODEL_STAGE_CHANGED event, so the
event log answers "which version was Production at time T".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_assets.events import EventType
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from ml_assets.resources.events import LifecycleEvents

NONE, STAGING, PRODUCTION, ARCHIVED = "None", "Staging", "Production", "Archived"
STAGES = (NONE, STAGING, PRODUCTION, ARCHIVED)
STAGE_TAG = "stage"
ALIASES = {STAGING: "staging", PRODUCTION: "production"}
LEGAL_MOVES = {
    NONE: {STAGING, ARCHIVED},
    STAGING: {PRODUCTION, ARCHIVED},
    PRODUCTION: {ARCHIVED},
    ARCHIVED: {STAGING},
}
SERVABLE = {STAGING, PRODUCTION}


class StageTransitionError(ValueError):
    """An unknown stage or version, or a move the stage graph does not allow."""


def model_version(client: MlflowClient, tenant: Tenant, version: str) -> ModelVersion:
    """The tenant's model version; other tenants' models are not addressable from here."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(tenant.registered_model_name, str(version))
    except MlflowException as exc:
        raise StageTransitionError(
            f"tenant {tenant.key!r} has no model version {version!r}"
        ) from exc


def stage_of(version: ModelVersion) -> str:
    """The alias wins over the tag: moving the `production` alias in the MLflow UI is a move."""
    aliases = set(version.aliases or [])
    for stage in (PRODUCTION, STAGING):
        if ALIASES[stage] in aliases:
            return stage
    tagged = version.tags.get(STAGE_TAG, NONE)
    # Production lost its alias to another version outside the stage layer: it was replaced.
    return ARCHIVED if tagged == PRODUCTION else tagged


def version_with_alias(client: MlflowClient, tenant: Tenant, stage: str) -> ModelVersion | None:
    """The version holding the stage's alias (Staging, Production), if any."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(tenant.registered_model_name, ALIASES[stage])
    except MlflowException:
        return None


def _set_stage(client: MlflowClient, version: ModelVersion, stage: str) -> None:
    for alias_stage, alias in ALIASES.items():
        if alias_stage != stage and alias in (version.aliases or []):
            client.delete_registered_model_alias(version.name, alias)
    if stage in ALIASES:
        client.set_registered_model_alias(version.name, ALIASES[stage], version.version)
    client.set_model_version_tag(version.name, version.version, STAGE_TAG, stage)


def transition(
    client: MlflowClient,
    events: LifecycleEvents,
    tenant: Tenant,
    version: str,
    to_stage: str,
    reason: str,
    actor: str,
) -> ModelVersion:
    """Move a version to a stage; promoting to Production archives the previous Production.
    Into Staging or Production only with verified lineage (`registry.lineage`)."""
    if to_stage not in STAGES:
        raise StageTransitionError(f"unknown stage {to_stage!r}: expected one of {STAGES}")
    current = model_version(client, tenant, version)
    from_stage = stage_of(current)
    if to_stage not in LEGAL_MOVES[from_stage]:
        raise StageTransitionError(
            f"version {version} of tenant {tenant.key!r} cannot move {from_stage} -> {to_stage}; "
            f"allowed from {from_stage}: {sorted(LEGAL_MOVES[from_stage])}"
        )
    if to_stage in SERVABLE:  # every promote path passes here: API, CLI, job, canary, graph
        from ml_assets.registry import lineage

        lineage.verify(client, tenant, current)
    if to_stage == PRODUCTION:
        previous = version_with_alias(client, tenant, PRODUCTION)
        if previous is not None and previous.version != current.version:
            transition(client, events, tenant, previous.version, ARCHIVED,
                       f"replaced by version {current.version}", actor)
    _set_stage(client, current, to_stage)
    events.emit(
        EventType.MODEL_STAGE_CHANGED,
        tenant,
        model=tenant.registered_model_name,
        version=str(current.version),
        from_stage=from_stage,
        to_stage=to_stage,
        actor=actor,
        reason=reason,
    )
    return model_version(client, tenant, version)
