"""`ml-assets promote|rollback|route|history`: act on a tenant's versions through the stage
layer (`ml_assets.registry.actions`, as the ML Service does). Deployment follows the registry:
the stage-change sensor redeploys, or `ml-assets deploy TENANT` where no daemon runs."""

from __future__ import annotations

import argparse
import os
from datetime import datetime

from ml_assets.cli.common import actor, registry
from ml_assets.cli.ray_cluster import reachable
from ml_assets.settings import Settings
from ml_assets.tenants import Tenant

REDEPLOY = "the stage-change sensor redeploys it (no daemon: `ml-assets deploy {tenant}`)"


def connect_ray(settings: Settings) -> None:
    """Join the Ray cluster whose route table serves the tenants."""
    from ml_assets.resources.ray import RayCluster

    if not settings.ray_address or not reachable(settings.ray_address):
        raise ValueError("no Ray cluster serves the endpoint: set RAY_ADDRESS or run `make demo`")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    RayCluster(address=settings.ray_address).connect()


def promote(settings: Settings, tenant: Tenant, version: str, reason: str) -> str:
    from ml_assets.registry import actions

    client, events = registry(settings)
    moved = actions.promote(client, events, tenant, version, reason, actor())
    return (f"tenant {tenant.key}: version {moved.version} is Production; "
            + REDEPLOY.format(tenant=tenant.key))


def rollback(settings: Settings, tenant: Tenant) -> str:
    from ml_assets.registry import actions

    client, events = registry(settings)
    moved = actions.rollback(client, events, tenant, actor())
    return (f"tenant {tenant.key}: rolled back to version {moved.version}; "
            + REDEPLOY.format(tenant=tenant.key))


def route(settings: Settings, tenant: Tenant, canary_weight: int) -> str:
    """Send canary_weight percent of the tenant's request keys to its Staging version."""
    from ml_assets.registry import actions

    connect_ray(settings)
    client, events = registry(settings)
    moved = actions.set_canary_weight(client, events, tenant, canary_weight, actor())
    canary = f"canary version {moved.canary} on {moved.canary_weight} % of keys" \
        if moved.canary else "no canary"
    return f"tenant {tenant.key}: version {moved.primary} serves, {canary}"


def rollout(settings: Settings, tenant: Tenant, action: str) -> str:
    """Pause, resume or abort the progressive rollout of the tenant's Staging version."""
    from ml_assets.registry import rollout as rollouts

    connect_ray(settings)
    if action == "abort":
        client, events = registry(settings)
        rollouts.abort(client, events, tenant, "aborted from the CLI", actor())
        return f"tenant {tenant.key}: rollout aborted, the Staging version Archived"
    rollouts.set_paused(tenant, action == "pause")
    return f"tenant {tenant.key}: rollout {'paused' if action == 'pause' else 'resumed'}"


def history(settings: Settings, tenant: Tenant, at: str | None) -> str:
    from ml_assets.registry.ledger import production_at, production_history

    _, events = registry(settings)
    if at is not None:
        when = datetime.fromisoformat(at)
        version = production_at(events.outbox(), tenant, when)
        return f"tenant {tenant.key} at {when.isoformat()}: Production = {version or 'none'}"
    lines = [f"{'version':>8}  {'since':32}  {'until':32}  by / reason"]
    for spell in production_history(events.outbox(), tenant):
        until = spell.until.isoformat() if spell.until else "(now)"
        lines.append(f"{spell.version:>8}  {spell.since.isoformat():32}  {until:32}  "
                     f"{spell.promoted_by} / {spell.reason}")
    return "\n".join(lines)


def add_commands(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("promote", help="move a Staging version to Production")
    cmd.add_argument("tenant")
    cmd.add_argument("version")
    cmd.add_argument("--reason", default="promoted from the CLI")
    cmd.set_defaults(run=lambda s, a: promote(s, Tenant(a.tenant), a.version, a.reason))
    cmd = commands.add_parser("rollback", help="put the previous Production version back")
    cmd.add_argument("tenant")
    cmd.set_defaults(run=lambda s, a: rollback(s, Tenant(a.tenant)))
    cmd = commands.add_parser("history", help="the tenant's Production versions over time")
    cmd.add_argument("tenant")
    cmd.add_argument("--at", help="ISO time (with offset): which version was Production")
    cmd.set_defaults(run=lambda s, a: history(s, Tenant(a.tenant), a.at))
    cmd = commands.add_parser(
        "route", help="canary traffic: percent of request keys on the Staging version "
        "(0 aborts the canary, 100 promotes it)")
    cmd.add_argument("tenant")
    cmd.add_argument("--canary", type=int, required=True, metavar="PERCENT")
    cmd.set_defaults(run=lambda s, a: route(s, Tenant(a.tenant), a.canary))
    cmd = commands.add_parser("rollout", help="hold, let go on, or stop the Staging version's "
                              "progressive rollout (shadow, canary steps, promotion)")
    cmd.add_argument("tenant")
    cmd.add_argument("action", choices=["pause", "resume", "abort"])
    cmd.set_defaults(run=lambda s, a: rollout(s, Tenant(a.tenant), a.action))
