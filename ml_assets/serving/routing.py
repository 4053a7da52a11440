"""Per-(tenant, use case) traffic routes of the one Serve application: which versions answer,
canary split.

Stages mean access: the production route serves only the Production version; the Staging
version is reachable only as a canary share, a shadow, or at the pre-production route.

The routes live in one named Ray actor, keyed "tenant/use_case", so a change for one is atomic,
never a read-modify-write of the whole app's config, and reaches every Serve replica by long-poll in
milliseconds without restarting it (a redeploy with a new `user_config` restarts replicas:
Serve gives imperative `serve.run` a random code version each time).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ml_assets.serving.prediction_log import CANARY_ROUTE, PRODUCTION_ROUTE
from ml_assets.tenants import Tenant

VERSION_HEADER = "x-model-version"  # every response names the version that answered
ROUTE_HEADER = "x-model-route"  # and whether it was the production or the canary route
KEY_HEADER = "x-routing-key"  # the request key the canary split hashes (else body "key")
ENGINE_HEADER = "x-model-engine"  # what scored it: "ray" (in the replica) or "triton"
RAY, TRITON = "ray", "triton"
ROUTE_TABLE_NAME = "ml_assets_route_table"
NAMESPACE = "ml_assets"
# the use case of callers not keyed by use case yet (the registry's actions and rollout, the
# monitoring assets): their registered model is the tenant's churn model


class RouteError(ValueError):
    """A route that cannot be set: no canary version, an undeployed tenant, a bad weight."""


class Route(BaseModel, frozen=True):
    """Which registered versions of one (tenant, use case) answer, and the canary's share of
    keys."""

    registry_uri: str = Field(description="the MLflow registry the versions live in")
    primary: str | None = Field(
        None, description="the Production version; None: the production route answers 503")
    staging: str | None = Field(
        None, description="the Staging version at the pre-production route")
    canary: str | None = Field(None, description="the Staging version on a share of keys")
    canary_weight: int = Field(0, ge=0, le=100, description="percent of keys sent to canary")
    shadow: bool = Field(False, description="Staging also answers every production request; "
                         "its answers are logged, never returned")
    since: float | None = Field(None, description="when the rollout's current step began")
    paused: bool = Field(False, description="a person holds the rollout where it is")
    engine: Literal["ray", "triton"] = Field(
        RAY, description="what scores the production route: the replica's in-process model, "
        "or the Production version loaded on the Triton server at triton_url")
    triton_url: str | None = Field(None, description="the Triton server of engine triton")

    @model_validator(mode="after")
    def _canary_needs_a_version(self) -> Route:
        if self.canary_weight and self.canary is None:
            raise RouteError(f"canary weight {self.canary_weight} without a canary version")
        if self.canary is not None and self.primary is None:
            raise RouteError("a canary needs a Production version beside it")
        if self.canary is not None and self.canary == self.primary:
            raise RouteError(f"version {self.canary} cannot be its own canary")
        if self.shadow and (self.staging is None or self.primary is None):
            raise RouteError("a shadow needs a Production and a Staging version")
        if self.engine == TRITON and (self.primary is None or not self.triton_url):
            raise RouteError("engine triton needs a Production version and a Triton URL")
        return self

    def pick(self, tenant: str, key: str | None, use_case: str) -> tuple[str, str]:
        """(version, route) for a production request: one key always lands on the same
        version. RouteError without a Production version."""
        if self.primary is None:
            where = f": its Staging version {self.staging} answers at the pre-production " \
                    f"route /v1/{tenant}/{use_case}/staging/predict" if self.staging else ""
            raise RouteError(f"tenant {tenant!r} has no Production version of {use_case!r}"
                             f"{where}")
        if self.canary is None or self.canary_weight == 0:
            return self.primary, PRODUCTION_ROUTE
        bucket = key_bucket(tenant, key) if key is not None else random.randrange(100)
        if bucket < self.canary_weight:
            return self.canary, CANARY_ROUTE
        return self.primary, PRODUCTION_ROUTE

    def changed(self, **fields) -> Route:
        """A copy with `fields` changed, validated again (model_copy would not validate)."""
        return Route(**{**self.model_dump(), **fields})

    def engine_for(self, route: str) -> str:
        """Triton serves only the Production version: canary, staging, shadow stay in-process."""
        return self.engine if route == PRODUCTION_ROUTE else RAY

    def shadow_version(self) -> str | None:
        """The version that also scores production requests, unseen by the caller."""
        return self.staging if self.shadow else None


def key_bucket(tenant: str, key: str) -> int:
    """A stable bucket 0-99 per (tenant, key); salted by tenant so tenants split independently."""
    digest = hashlib.blake2b(f"{tenant}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def table_key(tenant: str, use_case: str) -> str:
    return f"{tenant}/{use_case}"


def split_key(key: str) -> tuple[str, str]:
    """(tenant, use case) of a route table key."""
    tenant, _, use_case = key.partition("/")
    return tenant, use_case


class RouteTable:
    """The Ray actor holding every (tenant, use case)'s route, keyed by table_key; replicas
    long-poll it for changes."""

    def __init__(self) -> None:
        self.routes: dict[str, dict] = {}
        self.version = 0
        self.changed = asyncio.Event()

    async def set(self, key: str, route: dict | None) -> int:
        if route is None:
            self.routes.pop(key, None)
        else:
            self.routes[key] = route
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()
        return self.version

    async def get(self, key: str) -> dict | None:
        return self.routes.get(key)

    async def wait_newer(self, seen: int, timeout_s: float) -> tuple[int, dict[str, dict]]:
        """The table once its version passes `seen` (or after timeout_s): a long-poll."""
        if self.version <= seen:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout_s)
            except TimeoutError:
                pass
        return self.version, dict(self.routes)


def route_table():
    """The cluster's route table actor, created on first use; needs a Ray connection."""
    import ray

    return (
        ray.remote(RouteTable)
        .options(name=ROUTE_TABLE_NAME, namespace=NAMESPACE, lifetime="detached",
                 get_if_exists=True, num_cpus=0)
        .remote()
    )


def get_route(tenant: Tenant) -> Route | None:
    """The route of the tenant's use case, if it has one."""
    import ray

    found = ray.get(route_table().get.remote(table_key(tenant.key, tenant.use_case)))
    return None if found is None else Route(**found)


def set_route(tenant: Tenant, route: Route | None) -> int:
    """Set (or with None remove) the route of the tenant's use case; the table version after
    the change."""
    import ray

    return ray.get(route_table().set.remote(
        table_key(tenant.key, tenant.use_case), None if route is None else route.model_dump()))

