"""The tenant's churn classifier, trained on Ray and tracked in MLflow."""


import dagster as dg
import pandas as pd

from ml_assets import names
from ml_assets.data.versions import content_hash
from ml_assets.defs.scope import tenant_of, use_case_asset, use_case_of
from ml_assets.events import EventType
from ml_assets.monitoring.statistics import PROFILE_ARTIFACT, reference_profile
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.ray import RayCluster
from ml_assets.tenants import Tenant
from ml_assets.training.config import FAULT_FIELDS, ExperimentConfig, TrainingRequest, resolve
from ml_assets.training.progress import streamed_lines
from ml_assets.use_case import UseCase


def _log_model(mlflow: MlflowRegistry, run_id: str, state: dict, data, config: ExperimentConfig,
               example: pd.DataFrame, train_rows: pd.DataFrame, task: str) -> str:
    """Log the served model (preprocessing inside) with signature and input example, and the
    reference profile monitoring compares live traffic with (train rows, their predictions)."""
    import mlflow as mlflow_api
    import torch
    from mlflow import pytorch as mlflow_pytorch
    from mlflow.models import infer_signature

    from ml_assets.training.families import MODEL_ARTIFACT, model_requirements, torch_model

    model = torch_model(state, data, config, task)
    with torch.no_grad():
        output = model(torch.tensor(example.to_numpy(), dtype=torch.float32)).numpy()
        train_predictions = model(torch.tensor(train_rows.to_numpy(), dtype=torch.float32))
    profile = reference_profile(train_rows, train_predictions.numpy())
    with mlflow_api.start_run(run_id=run_id, log_system_metrics=False):
        info = mlflow_pytorch.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=model_requirements("torch_mlp"),
            # pt2 (MLflow 3's default) needs tensor examples and fixes shapes; pickle keeps the
            # named-column signature. ml_assets is installed wherever the model is loaded.
            serialization_format="pickle",
        )
        mlflow_api.log_dict(profile, PROFILE_ARTIFACT)
    return info.model_uri


def _training_key(config: ExperimentConfig, data_version: str) -> str:
    """Same config on the same data = same training: what a rerun resumes instead of redoing."""
    import hashlib
    import json

    body = json.dumps({"config": config.model_dump(exclude=FAULT_FIELDS),
                       "data_version": data_version}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def _unfinished_run(mlflow: MlflowRegistry, tenant: Tenant,
                    training_key: str) -> tuple[str | None, str | None]:
    """(run id, run name) of this training's MLflow run if an attempt died before finishing."""
    runs = mlflow.client().search_runs(
        [mlflow.experiment_id(tenant)],
        filter_string=f"tags.training_key = '{training_key}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return (runs[0].info.run_id, runs[0].info.run_name) if runs else (None, None)


EPOCH_METRICS = ["train_loss", "val_loss", "val_accuracy", "val_f1", "val_roc_auc"]
# what each boosting round logs (ml_assets/training/boosting.py), per task
ROUND_METRICS = {"binary_classification": ["train_logloss", "val_logloss", "val_auc"],
                 "regression": ["train_rmse", "val_rmse"]}


def progress_lines(mlflow: MlflowRegistry, run_id: str, keys: list[str], unit: str,
                   total: int) -> list[str]:
    """One line per epoch (or boosting round) from the MLflow run's history: complete even
    when the run resumed in a new process after the driver died (the Ray result only holds
    the last attempt)."""
    by_step: dict[int, dict[str, float]] = {}
    for key in keys:
        for point in mlflow.metric_history(run_id, key):
            by_step.setdefault(point.step, {})[key] = point.value
    return [f"{unit} {step + 1}/{total} " + " ".join(f"{k}={v:.4f}" for k, v in sorted(
            values.items(), key=lambda kv: keys.index(kv[0])))
            for step, values in sorted(by_step.items())
            if len(values) == len(keys)]  # a step being written is not done


def epoch_lines(mlflow: MlflowRegistry, run_id: str, epochs: int) -> list[str]:
    return progress_lines(mlflow, run_id, EPOCH_METRICS, "epoch", epochs)


def _latest_checkpoint(object_store: ObjectStore, tenant: Tenant, run_name: str) -> str | None:
    """The newest complete epoch checkpoint an earlier attempt of this run left, if any."""
    from ml_assets.training.boosting import BOOSTER_FILES
    from ml_assets.training.ray_training import STATE_FILE

    files = tuple(f"/{name}" for name in (STATE_FILE, *BOOSTER_FILES.values()))
    epochs = sorted(key.rsplit("/", 2)[-2] for key in
                    object_store.list(tenant, "checkpoints", run_name) if key.endswith(files))
    return object_store.path(tenant, "checkpoints", run_name, epochs[-1]) if epochs else None


def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingRequest,
    training_features: pd.DataFrame,
    hyperparameter_search: dict,
    ray: RayCluster,
    mlflow: MlflowRegistry,
    object_store: ObjectStore,
    events: LifecycleEvents,
) -> dg.Output[dict]:
    """An MLP churn classifier trained with Ray Train (DDP) on the tenant's train split; every
    epoch's validation metrics go to MLflow and its checkpoint to the tenant's object-store
    prefix. The model is logged to MLflow with its signature and preprocessing inside."""
    from ml_assets.training import ray_training
    from ml_assets.training.families import CheckpointStorage, fit_args, fit_torch

    tenant, case = tenant_of(context), use_case_of(context)
    config = resolve(config.model_dump(), case.training.family, case.training.params)
    object_store.check()
    if hyperparameter_search["best_config"] and config.family == "torch_mlp":
        config = config.model_copy(update=hyperparameter_search["best_config"])
        context.log.info(f"training with the searched config: {config.model_dump()}")
    data_version = content_hash(training_features)
    training_key = _training_key(config, data_version)
    run_id, run_name = _unfinished_run(mlflow, tenant, training_key)
    if run_id is None:
        run_name = f"{config.experiment_name}-{training_key}-{context.run.run_id[:8]}"
        run_id = mlflow.start_run(tenant, run_name, tags={
            "experiment_name": config.experiment_name,
            "model_type": config.family,
            "use_case": case.name,
            "data_version": data_version,
            "training_key": training_key,
            "dagster_run_id": context.run.run_id,
        })
    else:
        context.log.info(f"resuming MLflow run {run_id} and Ray Train run {run_name}: an "
                         "earlier attempt with this config and data did not finish")
    client = mlflow.client()
    try:  # from here on any failure ends the MLflow run FAILED: none is left RUNNING
        resume_from = _latest_checkpoint(object_store, tenant, run_name)
        logged = client.get_run(run_id).data.params
        for key, value in config.model_dump().items():
            if key not in logged:
                client.log_param(run_id, key, value)
        events.emit(EventType.MODEL_TRAINING_STARTED, tenant, run_id=run_id,
                    experiment_name=config.experiment_name, data_version=data_version)
        ray.connect()
        if config.family != "torch_mlp":
            return _trained_boosting(context, config, training_features, tenant, run_id,
                                     run_name, resume_from, data_version, mlflow, object_store,
                                     events, ray.task_max_rows)
        loop_config = {**config.model_dump(), "tracking_uri": mlflow.tracking_uri,
                       "run_id": run_id, "task": case.label.task}
        run = fit_args(config, CheckpointStorage(object_store.path(tenant, "checkpoints"),
                                                 object_store.filesystem()),
                       run_name, resume_from)
        # rank 0 (or the task) logs each epoch to MLflow as it ends: the run log shows it
        with streamed_lines(lambda: epoch_lines(mlflow, run_id, config.epochs),
                            context.log.info):
            result, data = fit_torch(config, training_features, case.features,
                                     case.label.column, loop_config, run, ray.task_max_rows)
        history = result.metrics_dataframe
        for resumed in sorted({int(e) for e in history.get("resumed_from_epoch", []) if e >= 0}):
            context.log.info(f"restored from checkpoint epoch_{resumed:04d} and continued")
        log_lines = epoch_lines(mlflow, run_id, config.epochs)  # every attempt's epochs
        client.log_text(run_id, "\n".join(log_lines) + "\n", "training_log.txt")
        train_rows = training_features.loc[training_features["split"] == "train", case.features]
        example = train_rows.dropna().head(5)
        model_uri = _log_model(mlflow, run_id, ray_training.load_state(result.checkpoint), data,
                               config, example.reset_index(drop=True), train_rows,
                               case.label.task)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    final = {k: float(v) for k, v in result.metrics.items() if k.startswith(("val_", "train_"))}
    events.emit(EventType.MODEL_TRAINING_COMPLETED, tenant, run_id=run_id, model_uri=model_uri,
                metrics=final)
    checkpoints = object_store.list(tenant, "checkpoints", run_name)
    return dg.Output(
        {"run_id": run_id, "model_uri": model_uri, "data_version": data_version,
         "family": "torch_mlp", "metrics": final,
         "checkpoint_dir": object_store.uri(tenant, "checkpoints", run_name)},
        metadata={
            "mlflow_run_id": run_id,
            **mlflow.run_links(tenant, run_id),
            "model_uri": model_uri,
            "epochs": len(log_lines),
            "checkpoints": len([k for k in checkpoints if k.endswith(ray_training.STATE_FILE)]),
            **{k: dg.MetadataValue.float(v) for k, v in final.items()},
            "training_log": dg.MetadataValue.md("```\n" + "\n".join(log_lines) + "\n```"),
        },
    )


def _trained_boosting(context: dg.AssetExecutionContext, config, training_features: pd.DataFrame,
                      tenant: Tenant, run_id: str, run_name: str, resume_from: str | None,
                      data_version: str, mlflow: MlflowRegistry, object_store: ObjectStore,
                      events: LifecycleEvents, task_max_rows: int) -> dg.Output[dict]:
    """trained_model for the boosted-tree families: train through Ray Train (per-round metrics
    in MLflow, checkpoints on the object store), log the reference profile, finish the run."""
    from ml_assets.training.families import CheckpointStorage, Tracking, train

    case = use_case_of(context)
    keys = ROUND_METRICS[case.label.task]
    # each round's metrics in the run log as the worker logs them to MLflow
    with streamed_lines(lambda: progress_lines(mlflow, run_id, keys, "round",
                                               config.num_boost_round), context.log.info):
        trained = train(config, training_features, features=case.features,
                        label=case.label.column, task=case.label.task,
                        storage=CheckpointStorage(object_store.path(tenant, "checkpoints"),
                                                  object_store.filesystem()),
                        tracking=Tracking(mlflow.tracking_uri, run_id), run_name=run_name,
                        resume_from=resume_from, task_max_rows=task_max_rows)
    resumed = int(trained.result.metrics.get("resumed_at_round", 0))
    if resumed:
        context.log.info(f"restored from checkpoint round_{resumed:05d} and continued")
    train_rows = training_features.loc[training_features["split"] == "train", case.features]
    client = mlflow.client()
    client.log_dict(run_id, reference_profile(train_rows, trained.predict(train_rows.to_numpy())),
                    PROFILE_ARTIFACT)
    client.set_terminated(run_id, status="FINISHED")
    events.emit(EventType.MODEL_TRAINING_COMPLETED, tenant, run_id=run_id,
                model_uri=trained.model_uri, metrics=trained.metrics)
    checkpoints = object_store.list_dirs(tenant, "checkpoints", run_name)
    return dg.Output(
        {"run_id": run_id, "model_uri": trained.model_uri, "data_version": data_version,
         "metrics": trained.metrics, "family": config.family,
         "checkpoint_dir": object_store.uri(tenant, "checkpoints", run_name)},
        metadata={
            "mlflow_run_id": run_id,
            **mlflow.run_links(tenant, run_id),
            "model_uri": trained.model_uri,
            "family": config.family,
            "rounds": int(trained.result.metrics["round"]),
            "checkpoints": len([d for d in checkpoints if d.rsplit("/", 1)[-1].startswith(
                "round_")]),
            **{k: dg.MetadataValue.float(v) for k, v in trained.metrics.items()},
        },
    )


# tenants a run over many trains at once: their Ray tasks share the cluster's CPUs while
# the step's threads start runs and log models to MLflow
TENANTS_AT_ONCE = 8


def build(use_case: UseCase) -> list[dg.AssetsDefinition]:
    return [use_case_asset(use_case, trained_model, names.TRAINED_MODEL, "training",
                           {"ray", "pytorch", "mlflow", "s3"},  # s3: the checkpoints
                           upstream=(names.TRAINING_FEATURES, names.HYPERPARAMETER_SEARCH),
                           threads=TENANTS_AT_ONCE)]
