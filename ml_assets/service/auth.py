"""Who may call the ML Service: every tenant path checks the API key first (401), its rate
limit (429), then that the key is the path's tenant and its role is high enough (403)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ml_assets.access.keys import ApiKey, KeyStore, Role
from ml_assets.access.rate_limit import RateLimiter
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.service.dagster_runs import DagsterRuns
from ml_assets.settings import Settings
from ml_assets.tenants import Tenant


@dataclass
class Service:
    """What the routes share: settings, keys, the limiter and the systems they talk to."""

    settings: Settings
    keys: KeyStore
    limiter: RateLimiter
    runs: DagsterRuns
    mlflow: MlflowRegistry
    events: LifecycleEvents

    def experiment_link(self, experiment_id: str | None) -> str | None:
        if self.settings.mlflow_ui_url is None or experiment_id is None:
            return None
        return f"{self.settings.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}"


def service(request: Request) -> Service:
    return request.app.state.service


bearer = HTTPBearer(auto_error=False, description="an API key from `ml-assets api-key create`")


def api_key(request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
            svc: Annotated[Service, Depends(service)]) -> ApiKey:
    key = svc.keys.verify(credentials.credentials) if credentials else None
    if key is None:
        raise HTTPException(401, "missing or invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.key_id = key.id
    wait = svc.limiter.acquire(key.id)
    if wait:
        raise HTTPException(429, "rate limit reached for this API key",
                            headers={"Retry-After": str(math.ceil(wait))})
    return key


@dataclass(frozen=True)
class Caller:
    key: ApiKey
    tenant: Tenant


def access(role: Role):
    """A dependency: the caller's key is the path tenant's and has at least `role`."""

    def check(tenant: Annotated[str, Path(description="the tenant key")],
              key: Annotated[ApiKey, Depends(api_key)]) -> Caller:
        # compared before any use of the path value: it is only ever the key's own tenant
        if tenant != key.tenant.key:
            raise HTTPException(403, "this API key is not for the tenant in the path")
        if key.role < role:
            raise HTTPException(403, f"role {key.role.name} may not do this: needs {role.name}")
        return Caller(key, key.tenant)

    return check
