"""A tenant's model versions: list them, read the promotion ledger, promote one to Production or
roll Production back. Another tenant's version is a 404."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Path, Query

from ml_assets.access.keys import Role
from ml_assets.registry import actions, stages
from ml_assets.registry.ledger import production_at, production_history
from ml_assets.service.auth import Caller, Service, access, service
from ml_assets.service.errors import BODY_ERRORS, ERRORS, upstream
from ml_assets.service.schemas import (
    HistoryQuery,
    ModelVersionInfo,
    ProductionSpellInfo,
    PromoteRequest,
    PromotionHistory,
)
from ml_assets.tenants import Tenant

VERSION = r"^[1-9][0-9]{0,9}$"
LINEAGE_TAGS = ("run_id", "data_version", "code_version", "dagster_run_id", "baseline",
                "holdout_roc_auc")

router = APIRouter()


def _version_info(client, version) -> ModelVersionInfo:
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    return ModelVersionInfo(
        name=version.name, version=str(version.version), stage=stages.stage_of(version),
        aliases=sorted(version.aliases or []),
        created_at=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
        metrics=metrics,
        lineage={tag: version.tags[tag] for tag in LINEAGE_TAGS if tag in version.tags})


@router.get("/v1/tenants/{tenant}/models", tags=["models"],
            response_model=list[ModelVersionInfo], responses=ERRORS)
def list_models(caller: Annotated[Caller, Depends(access(Role.viewer))],
                svc: Annotated[Service, Depends(service)]) -> list[ModelVersionInfo]:
    """Every version of the tenant's registered model: stage, metrics, lineage."""
    name = caller.tenant.registered_model_name  # a validated tenant: safe in the filter
    with upstream("MLflow"):
        client = svc.mlflow.client()
        found = client.search_model_versions(f"name = '{name}'")
        # search results may omit aliases, which decide the stage: read each version
        versions = [client.get_model_version(name, v.version) for v in found]
        return [_version_info(client, v) for v in sorted(versions, key=lambda v: int(v.version))]


@router.get("/v1/tenants/{tenant}/models/history", tags=["models"],
            response_model=PromotionHistory, responses=ERRORS)
def promotion_history(
    caller: Annotated[Caller, Depends(access(Role.viewer))],
    svc: Annotated[Service, Depends(service)],
    query: Annotated[HistoryQuery, Query()],
) -> PromotionHistory:
    """The tenant's Production versions over time, from the promotion ledger."""
    at = query.at
    outbox = svc.events.outbox()
    spells = [ProductionSpellInfo(**vars(spell))
              for spell in production_history(outbox, caller.tenant)]
    return PromotionHistory(
        tenant=caller.tenant.key, spells=spells, at=at,
        production_at=production_at(outbox, caller.tenant, at) if at else None)


def _existing_version(client, tenant: Tenant, version: str):
    try:
        return stages.model_version(client, tenant, version)
    except stages.StageTransitionError as exc:
        raise HTTPException(404, f"this tenant has no model version {version}") from exc


@router.post("/v1/tenants/{tenant}/models/{version}/promote", tags=["models"],
             response_model=ModelVersionInfo,
             responses={**BODY_ERRORS,
                        409: {"description": "the stage graph forbids the move"}})
def promote(version: Annotated[str, Path(pattern=VERSION)], body: PromoteRequest,
            caller: Annotated[Caller, Depends(access(Role.promoter))],
            svc: Annotated[Service, Depends(service)],
            background: BackgroundTasks) -> ModelVersionInfo:
    """Move a Staging version to Production (the previous Production is archived); the
    stage-change sensor redeploys."""
    with upstream("MLflow"):
        client = svc.mlflow.client()
        _existing_version(client, caller.tenant, version)
        try:
            moved = actions.promote(client, svc.events, caller.tenant, version, body.reason,
                                    f"api:{caller.key.id}")
        except stages.StageTransitionError as exc:
            raise HTTPException(409, str(exc)) from exc
        background.add_task(svc.events.relay_soon)
        return _version_info(client, moved)


@router.post("/v1/tenants/{tenant}/models/{version}/rollback", tags=["models"],
             response_model=ModelVersionInfo,
             responses={**ERRORS, 409: {"description": "the version is not Production, or "
                                        "there is no earlier Production to go back to"}})
def rollback(version: Annotated[str, Path(pattern=VERSION)],
             caller: Annotated[Caller, Depends(access(Role.promoter))],
             svc: Annotated[Service, Depends(service)],
             background: BackgroundTasks) -> ModelVersionInfo:
    """Roll the Production `version` back to the Production version before it. Naming the
    version makes a retried rollback a 409, not a second step back."""
    with upstream("MLflow"):
        client = svc.mlflow.client()
        _existing_version(client, caller.tenant, version)
        current = stages.version_with_alias(client, caller.tenant, stages.PRODUCTION)
        if current is None or str(current.version) != version:
            raise HTTPException(409, f"version {version} is not this tenant's Production version")
        try:
            moved = actions.rollback(client, svc.events, caller.tenant,
                                     actor=f"api:{caller.key.id}")
        except stages.StageTransitionError as exc:
            raise HTTPException(409, str(exc)) from exc
        background.add_task(svc.events.relay_soon)
        return _version_info(client, moved)
