"""The tenant's model version in the MLflow Model Registry, staged through the stage layer."""


import dagster as dg

from ml_assets import __version__
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.events import EventType
from ml_assets.registry import actions, stages
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.tenants import Tenant

ACTOR = "dagster:registered_model"


class RegistrationConfig(dg.Config):
    """Promote straight to Production when the blocking beats_baseline check passed."""

    auto_promote: bool = False


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="registry",
    kinds={"mlflow", "kafka"},  # kafka: MODEL_REGISTERED and stage events
    # the registry is a server: ride out a restart rather than fail the run
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def registered_model(
    context: dg.AssetExecutionContext,
    config: RegistrationConfig,
    trained_model: dict,
    evaluation_report: dict,
    mlflow: MlflowRegistry,
    events: LifecycleEvents,
) -> dg.Output[dict]:
    """A new version of the tenant's registered model, in Staging (Production with
    `auto_promote`), tagged with its lineage (MLflow run, data version, code version,
    evaluation). Runs only if the blocking `beats_baseline` check passed."""
    tenant = Tenant(context.partition_key)
    mlflow.tenant_run(tenant, trained_model["run_id"])
    tags = {
        "tenant": tenant.key,
        "run_id": trained_model["run_id"],
        "data_version": trained_model["data_version"],
        "code_version": __version__,
        "dagster_run_id": context.run.run_id,
        "baseline": evaluation_report["baseline"],
        "holdout_roc_auc": f"{evaluation_report['candidate']['roc_auc']:.4f}",
    }
    version = actions.register_version(mlflow, tenant, trained_model["model_uri"], tags)
    # Registered in stage None is a whole state (internal, never served): if staging fails the
    # version stays there, announced, rather than half-moved.
    events.emit(EventType.MODEL_REGISTERED, tenant, model=version.name,
                version=str(version.version), run_id=trained_model["run_id"], stage=stages.NONE)
    version = stages.transition(mlflow.client(), events, tenant, version.version, stages.STAGING,
                                reason="passed beats_baseline", actor=ACTOR)
    if config.auto_promote:
        version = actions.promote(mlflow.client(), events, tenant, version.version,
                                  reason="auto_promote: passed "
                                    "beats_baseline", actor=ACTOR)
    stage = stages.stage_of(version)
    return dg.Output(
        {"name": version.name, "version": str(version.version), "stage": stage,
         "model_uri": f"models:/{version.name}/{version.version}",
         "run_id": trained_model["run_id"]},
        metadata={
            "registered_model": version.name,
            "version": str(version.version),
            "stage": stage,
            "mlflow_run_id": trained_model["run_id"],
            **mlflow.version_links(version.name, str(version.version)),
            **mlflow.run_links(tenant, trained_model["run_id"]),
        },
    )
