"""Progressive rollout of a tenant's Staging version, one decision per monitoring window:
shadow for N requests, then canary steps (e.g. 10 -> 50 -> 100 %), each held until the canary
check passed on enough requests and minutes; 100 promotes. A breach is handled before this by
the canary guard (rolled back, Archived). Neither Ray Serve nor KServe automates this; every
step is a MODEL_TRAFFIC_ROUTED event, the promotion a MODEL_STAGE_CHANGED in the ledger."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_assets.events import EventType
from ml_assets.registry import actions, stages
from ml_assets.serving.routing import Route, get_route, set_route
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    from ml_assets.resources.events import LifecycleEvents
    from ml_assets.resources.rollout import RolloutSteps

ACTOR = "dagster:rollout"


@dataclass(frozen=True)
class Traffic:
    """What the window shows since the route's current step began."""

    shadow_answers: int  # Staging's shadow answers
    shadow_errors: int  # of them 5xx
    canary_requests: int
    canary_check_passed: bool  # the canary check passed with enough data


def next_step(route: Route, steps: RolloutSteps, traffic: Traffic,
              now: float) -> tuple[str, int | None]:
    """(what to do, canary weight): hold, shadow, canary, promote or abort."""
    if route.staging is None or route.primary is None or route.paused or not steps.enabled:
        return "hold", None
    if not route.shadow and route.canary is None:  # a new Staging version: start
        return ("shadow", None) if steps.shadow_requests else ("canary", steps.canary_steps[0])
    if route.shadow:
        if traffic.shadow_errors:
            return "abort", None
        if traffic.shadow_answers < steps.shadow_requests:
            return "hold", None
        return "canary", steps.canary_steps[0]
    long_enough = now - (route.since or now) >= steps.min_minutes * 60
    if not (traffic.canary_check_passed and traffic.canary_requests >= steps.min_requests
            and long_enough):
        return "hold", None
    later = [s for s in steps.canary_steps if s > route.canary_weight]
    return ("promote", 100) if not later or later[0] == 100 else ("canary", later[0])


def advance(client, events: LifecycleEvents, tenant: Tenant, route: Route, steps: RolloutSteps,
            traffic: Traffic, now: float | None = None) -> str:
    """Take the next step from the tenant's live `route` (a Ray connection is needed); what it
    did."""
    now = time.time() if now is None else now
    action, weight = next_step(route, steps, traffic, now)
    if action == "promote":
        actions.set_canary_weight(client, events, tenant, 100, ACTOR)
    elif action == "abort":
        abort(client, events, tenant, f"shadow answered {traffic.shadow_errors} requests 5xx")
    elif action in ("shadow", "canary"):
        moved = route.changed(shadow=action == "shadow", canary=route.staging if weight else None,
                              canary_weight=weight or 0, since=now)
        set_route(tenant, moved)
        events.emit(EventType.MODEL_TRAFFIC_ROUTED, tenant, model=tenant.registered_model_name,
                    primary=moved.primary, canary=moved.canary,
                    canary_weight=moved.canary_weight, shadow=moved.shadow, actor=ACTOR,
                    step=action)
    return action


def set_paused(tenant: Tenant, paused: bool) -> Route:
    """A person holds the rollout where it is (or lets it go on)."""
    route = get_route(tenant)
    if route is None:
        raise stages.StageTransitionError(f"tenant {tenant.key!r} is not deployed")
    moved = route.changed(paused=paused)
    set_route(tenant, moved)
    return moved


def abort(client, events: LifecycleEvents, tenant: Tenant, reason: str,
          actor: str = ACTOR) -> Route:
    """No more Staging traffic (shadow and canary off) and the Staging version Archived."""
    route = get_route(tenant)
    if route is None or route.staging is None:
        raise stages.StageTransitionError(f"tenant {tenant.key!r} has no rollout to abort")
    moved = route.changed(shadow=False, canary=None, canary_weight=0, staging=None, since=None)
    set_route(tenant, moved)
    stages.transition(client, events, tenant, route.staging, stages.ARCHIVED, reason, actor)
    events.emit(EventType.MODEL_TRAFFIC_ROUTED, tenant, model=tenant.registered_model_name,
                primary=moved.primary, canary=None, canary_weight=0, shadow=False, actor=actor,
                step="abort", reason=reason)
    return moved
