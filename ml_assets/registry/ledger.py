"""The promotion ledger: which version was Production for a tenant, and when.

MLflow keeps no history of stage moves (mlflow/mlflow#2169); the MODEL_STAGE_CHANGED events in
the outbox do, including moves made outside ml_assets that the stage-change sensor observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ml_assets.events import EventType, Outbox
from ml_assets.registry import stages
from ml_assets.tenants import Tenant


@dataclass(frozen=True)
class ProductionSpell:
    """A version's time in Production: [since, until); until None while it still is."""

    version: str
    since: datetime
    until: datetime | None
    promoted_by: str
    reason: str


def production_history(outbox: Outbox, tenant: Tenant) -> list[ProductionSpell]:
    spells: list[ProductionSpell] = []
    current: ProductionSpell | None = None
    for event in outbox.events(tenant.key):
        if event.type != EventType.MODEL_STAGE_CHANGED:
            continue
        if event.data.get("model", tenant.registered_model_name) != tenant.registered_model_name:
            continue  # another model of the tenant: its LLM has its own ledger
        version, to_stage = event.data["version"], event.data["to_stage"]
        leaving = current is not None and (
            to_stage == stages.PRODUCTION
            or (version == current.version and event.data["from_stage"] == stages.PRODUCTION)
        )
        if leaving:
            spells.append(ProductionSpell(current.version, current.since, event.time,
                                          current.promoted_by, current.reason))
            current = None
        if to_stage == stages.PRODUCTION:
            current = ProductionSpell(version, event.time, None, event.data.get("actor", ""),
                                      event.data.get("reason", ""))
    return spells + ([current] if current else [])


def production_at(outbox: Outbox, tenant: Tenant, at: datetime) -> str | None:
    """The version that was Production for the tenant at `at`, if any."""
    for spell in production_history(outbox, tenant):
        if spell.since <= at and (spell.until is None or at < spell.until):
            return spell.version
    return None
