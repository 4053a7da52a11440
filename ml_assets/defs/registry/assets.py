"""The tenant's model version in the MLflow Model Registry, staged through the stage layer."""


import dagster as dg
from pydantic import Field

from ml_assets import __version__, names
from ml_assets.defs.scope import tenant_of, use_case_asset
from ml_assets.events import EventType
from ml_assets.registry import actions, stages
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.use_case import UseCase

ACTOR = "dagster:registered_model"


class RegistrationConfig(dg.Config):
    """Where a version that passed the blocking beats_baseline check goes past Staging."""

    auto_promote: bool = Field(False, description="every passing version to Production")
    first_version_to_production: bool = Field(
        True, description="a tenant with no Production version gets this one as Production: "
        "it beat the reference baseline by the gate's margin, the only comparison there is; "
        "later versions stay in Staging for a canary or a person")


def registered_model(
    context: dg.AssetExecutionContext,
    config: RegistrationConfig,
    trained_model: dict,
    evaluation_report: dict,
    mlflow: MlflowRegistry,
    events: LifecycleEvents,
) -> dg.Output[dict]:
    """A new version of the tenant's registered model, tagged with its lineage (MLflow run,
    data version, code version, Dagster run, evaluation), in Staging; a tenant's first version
    (or every one, with `auto_promote`) goes on to Production. Runs only if the blocking
    `beats_baseline` check passed."""
    tenant = tenant_of(context)
    mlflow.tenant_run(tenant, trained_model["run_id"])
    tags = {
        "tenant": tenant.key,
        "use_case": tenant.use_case,
        "model_type": trained_model.get("family", "torch_mlp"),  # the family serving loads
        "run_id": trained_model["run_id"],
        "data_version": trained_model["data_version"],
        "code_version": __version__,
        "dagster_run_id": context.run.run_id,
        "baseline": evaluation_report["baseline"],
        **{f"holdout_{metric}": f"{value:.4f}"
           for metric, value in evaluation_report["candidate"].items()},
    }
    version = actions.register_version(mlflow, tenant, trained_model["model_uri"], tags)
    # Registered in stage None is a whole state (internal, never served): if staging fails the
    # version stays there, announced, rather than half-moved.
    events.emit(EventType.MODEL_REGISTERED, tenant, model=version.name,
                version=str(version.version), run_id=trained_model["run_id"], stage=stages.NONE,
                lineage=tags)  # the catalog consumer's lineage of the version
    version = stages.transition(mlflow.client(), events, tenant, version.version, stages.STAGING,
                                reason="passed beats_baseline", actor=ACTOR)
    gate = evaluation_report["gate"]
    first = (config.first_version_to_production
             and evaluation_report["baseline"] in names.REFERENCE_BASELINES.values()
             and stages.version_with_alias(mlflow.client(), tenant, stages.PRODUCTION) is None)
    if config.auto_promote or first:
        policy = "first_version_to_production" if first else "auto_promote"
        version = actions.promote(
            mlflow.client(), events, tenant, version.version, actor=ACTOR,
            reason=f"{policy}: {gate['metric']} beat {evaluation_report['baseline']} by "
                   f"{gate['improvement']:.4f} (margin {gate['margin']})")
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


def build(use_case: UseCase) -> list[dg.AssetsDefinition]:
    return [use_case_asset(
        use_case, registered_model, names.REGISTERED_MODEL, "registry",
        {"mlflow", "kafka"},  # kafka: MODEL_REGISTERED and stage events
        upstream=(names.TRAINED_MODEL, names.EVALUATION_REPORT),
        # the registry is a server: ride out a restart rather than fail the run
        retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL))]
