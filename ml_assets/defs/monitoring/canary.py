"""Canary guard: a canary worse than Production on the live log is rolled back automatically
(Ray Serve has none: ray-project/ray#63016)."""

from ml_assets import monitoring
from ml_assets.events import EventType
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.ray import RayCluster
from ml_assets.tenants import Tenant

ACTOR = "dagster:model_monitoring"


def roll_back(ray: RayCluster, mlflow: MlflowRegistry, events: LifecycleEvents, tenant: Tenant,
              canary: str, verdict: monitoring.Outcome) -> bool:
    """Canary weight to 0 (Production keeps every request), the canary version back out of
    Staging (Archived), CANARY_ROLLED_BACK emitted. False when the live route no longer has
    this canary (already rolled back or promoted): nothing to do, nothing emitted twice."""
    from ml_assets import routing
    from ml_assets.defs.registry import stages

    ray.connect()
    route = routing.get_route(tenant)
    if route is None or route.canary != canary or route.canary_weight == 0:
        return False
    client = mlflow.client()
    routing.set_canary_weight(client, events, tenant, 0, ACTOR)
    reason = f"canary worse than Production on {', '.join(verdict.details['breached'])}"
    if stages.stage_of(stages.model_version(client, tenant, canary)) == stages.STAGING:
        stages.transition(client, events, tenant, canary, stages.ARCHIVED, reason, ACTOR)
    events.emit(EventType.CANARY_ROLLED_BACK, tenant, model=tenant.registered_model_name,
                version=canary, production_version=route.primary, reason=reason,
                canary=verdict.details["canary"], production=verdict.details["production"])
    return True
