"""What the consumers recorded for a tenant: its audit trail of lifecycle events and its model
catalog, read from the platform database (`ml-assets consumer run audit|catalog` fill it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from ml_assets.access.keys import Role
from ml_assets.consumers import audit, catalog, tables
from ml_assets.service.auth import Caller, Service, access, service
from ml_assets.service.errors import ERRORS, upstream
from ml_assets.service.schemas import AuditEntry, AuditQuery, CatalogVersion

router = APIRouter()
RESPONSES = {**ERRORS, 503: {"description": "the platform database did not answer"}}


@router.get("/v1/tenants/{tenant}/audit", tags=["lifecycle"], response_model=list[AuditEntry],
            responses=RESPONSES)
def audit_trail(caller: Annotated[Caller, Depends(access(Role.viewer))],
                svc: Annotated[Service, Depends(service)],
                query: Annotated[AuditQuery, Query()]) -> list[AuditEntry]:
    """The tenant's lifecycle events as the audit consumer recorded them, oldest first."""
    with upstream("the platform database"):
        engine = tables.engine(svc.settings.platform_db_url)
        found = audit.entries(engine, caller.tenant.key, query.type, query.since, query.limit)
    return [AuditEntry(**entry) for entry in found]


@router.get("/v1/tenants/{tenant}/catalog", tags=["lifecycle"],
            response_model=list[CatalogVersion], responses=RESPONSES)
def model_catalog(caller: Annotated[Caller, Depends(access(Role.viewer))],
                  svc: Annotated[Service, Depends(service)]) -> list[CatalogVersion]:
    """The tenant's model versions as the catalog consumer knows them: stage, metrics,
    lineage, deployment."""
    with upstream("the platform database"):
        found = catalog.versions(tables.engine(svc.settings.platform_db_url), caller.tenant.key)
    return [CatalogVersion(**entry) for entry in found]
