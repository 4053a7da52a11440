"""What people and monitors do to a tenant's versions: register, promote, roll back, send canary
traffic, abort a canary. The one code path of the CLI, the ML Service, the `promote_model` job and
the canary guard; deployment follows through the stage-change sensor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_assets.events import EventType
from ml_assets.registry import stages
from ml_assets.registry.ledger import production_history
from ml_assets.serving.routing import Route, RouteError, get_route, set_route
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from ml_assets.resources.events import LifecycleEvents
    from ml_assets.resources.mlflow import MlflowRegistry
    from ml_assets.resources.ray import RayCluster

CANARY_GUARD = "dagster:model_monitoring"


def register_version(mlflow: MlflowRegistry, tenant: Tenant, model_uri: str,
                     tags: dict[str, str]) -> ModelVersion:
    """Create a version of the tenant's registered model, in stage None, with lineage tags."""
    from mlflow.exceptions import MlflowException

    client = mlflow.client()
    name = tenant.registered_model_name
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={"tenant": tenant.key},
                                       description=f"Churn classifier of tenant {tenant.key}")
    # A logged model's URI (models:/m-<id>) must name its id, or the tracking server refuses it.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    return client.create_model_version(name, source=model_uri, run_id=tags.get("run_id") or None,
                                       tags={**tags, stages.STAGE_TAG: stages.NONE},
                                       model_id=model_id)


def promote(client: MlflowClient, events: LifecycleEvents, tenant: Tenant, version: str,
            reason: str, actor: str) -> ModelVersion:
    """A Staging version to Production (the previous Production is archived)."""
    return stages.transition(client, events, tenant, version, stages.PRODUCTION, reason, actor)


def rollback(client: MlflowClient, events: LifecycleEvents, tenant: Tenant,
             actor: str) -> ModelVersion:
    """Put the Production version before the current one back (Archived -> Staging ->
    Production); the current one is archived by the promotion."""
    current = stages.version_with_alias(client, tenant, stages.PRODUCTION)
    current_version = str(current.version) if current else None
    earlier = [s.version for s in production_history(events.outbox(), tenant)
               if s.version != current_version]
    if not earlier:
        raise stages.StageTransitionError(
            f"tenant {tenant.key!r} has no earlier Production version to roll back to")
    target = earlier[-1]
    reason = f"rollback from version {current_version}"
    if stages.stage_of(stages.model_version(client, tenant, target)) != stages.STAGING:
        stages.transition(client, events, tenant, target, stages.STAGING, reason, actor)
    return promote(client, events, tenant, target, reason, actor)


def production_version(client: MlflowClient, tenant: Tenant) -> str:
    """The tenant's Production version; an error naming the tenant when it has none."""
    version = stages.version_with_alias(client, tenant, stages.PRODUCTION)
    if version is None:
        raise stages.StageTransitionError(
            f"tenant {tenant.key!r} has no Production model version: promote one first")
    return str(version.version)


def set_canary_weight(client: MlflowClient, events: LifecycleEvents, tenant: Tenant,
                      weight: int, actor: str) -> Route:
    """Send `weight` percent of the tenant's keys to its Staging version. 100 promotes the
    canary to Production (stage layer); 0 aborts the canary, Production untouched."""
    if not 0 <= weight <= 100:
        raise RouteError(f"canary weight must be 0-100, got {weight}")
    current = get_route(tenant)
    if current is None:
        raise RouteError(f"tenant {tenant.key!r} is not deployed: materialize deployed_endpoint")
    canary = current.canary
    if canary is None and weight > 0:
        staging = stages.version_with_alias(client, tenant, stages.STAGING)
        if staging is None or str(staging.version) == current.primary:
            raise RouteError(f"tenant {tenant.key!r} has no Staging version to send traffic to")
        canary = str(staging.version)
    if weight == 100:
        promote(client, events, tenant, canary, "canary promoted at weight 100", actor)
        route = Route(registry_uri=current.registry_uri, primary=canary)
    else:  # validated again: a canary needs a Production version beside it
        route = current.changed(canary=canary if weight else None, canary_weight=weight)
    set_route(tenant, route)
    events.emit(EventType.MODEL_TRAFFIC_ROUTED, tenant, model=tenant.registered_model_name,
                requested_weight=weight, primary=route.primary, canary=route.canary,
                canary_weight=route.canary_weight, actor=actor)
    return route


def abort_canary(ray: RayCluster, mlflow: MlflowRegistry, events: LifecycleEvents,
                 tenant: Tenant, canary: str, reason: str, observed: dict) -> bool:
    """A canary worse than Production (Ray Serve has no automatic rollback:
    ray-project/ray#63016): weight to 0 (Production keeps every request), the version back out
    of Staging (Archived), CANARY_ROLLED_BACK emitted. False when the live route no longer has
    this canary (already rolled back or promoted): nothing to do, nothing emitted twice."""
    ray.connect()
    route = get_route(tenant)
    if route is None or route.canary != canary or route.canary_weight == 0:
        return False
    client = mlflow.client()
    after = set_canary_weight(client, events, tenant, 0, CANARY_GUARD)
    if stages.stage_of(stages.model_version(client, tenant, canary)) == stages.STAGING:
        stages.transition(client, events, tenant, canary, stages.ARCHIVED, reason, CANARY_GUARD)
        if after.staging == canary:  # Archived: no route may name it
            set_route(tenant, after.changed(staging=None, shadow=False))
    events.emit(EventType.CANARY_ROLLED_BACK, tenant, model=tenant.registered_model_name,
                version=canary, production_version=route.primary, reason=reason, **observed)
    return True
