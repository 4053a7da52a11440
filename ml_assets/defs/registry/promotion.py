"""Promotion by a person from the Dagster UI: the `promote_model` job."""

import dagster as dg
from pydantic import Field

from ml_assets import names
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.registry import actions
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.tenants import Tenant
from ml_assets.use_case import load


class PromoteConfig(dg.Config):
    """Which Staging version of the partition's tenant goes to Production, and why."""

    use_case: str = Field("churn", description="whose registered model: the tenant's model "
                          "of this use case")
    version: str = Field(min_length=1)
    reason: str = Field(min_length=3, description="recorded in the ledger with the move")
    actor: str = Field("dagster-ui", min_length=1)


@dg.op(description="Move a Staging version to Production through the stage layer.")
def promote_version(context: dg.OpExecutionContext, config: PromoteConfig,
                    mlflow: MlflowRegistry, events: LifecycleEvents) -> str:
    tenant = Tenant(context.partition_key, load(config.use_case).name)
    version = actions.promote(mlflow.client(), events, tenant, config.version, config.reason,
                              config.actor)
    context.log.info(f"tenant {tenant.key}: version {version.version} is Production")
    return str(version.version)


@dg.job(name=names.PROMOTE_MODEL_JOB, partitions_def=tenant_partitions,
        description="Promote a tenant's Staging model version to Production (pick the tenant "
        "partition, give the version and a reason). The stage-change sensor redeploys.")
def promote_model() -> None:
    promote_version()
