"""Promotion by a person (the `promote_model` job, the CLI) and rollback, via the stage layer."""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ml_assets.defs.registry import stages
from ml_assets.defs.registry.ledger import production_history
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.tenants import Tenant, tenant_partitions

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def rollback(client: "MlflowClient", events: LifecycleEvents, tenant: Tenant,
             actor: str) -> "ModelVersion":
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
    return stages.transition(client, events, tenant, target, stages.PRODUCTION, reason, actor)


class PromoteConfig(dg.Config):
    """Which Staging version of the partition's tenant goes to Production, and why."""

    version: str = Field(min_length=1)
    reason: str = Field(min_length=3, description="recorded in the ledger with the move")
    actor: str = Field("dagster-ui", min_length=1)


@dg.op(description="Move a Staging version to Production through the stage layer.")
def promote_version(context: dg.OpExecutionContext, config: PromoteConfig,
                    mlflow: MlflowRegistry, events: LifecycleEvents) -> str:
    tenant = Tenant(context.partition_key)
    version = stages.transition(mlflow.client(), events, tenant, config.version,
                                stages.PRODUCTION, config.reason, config.actor)
    context.log.info(f"tenant {tenant.key}: version {version.version} is Production")
    return str(version.version)


@dg.job(partitions_def=tenant_partitions,
        description="Promote a tenant's Staging model version to Production (pick the tenant "
        "partition, give the version and a reason). The stage-change sensor redeploys.")
def promote_model() -> None:
    promote_version()
