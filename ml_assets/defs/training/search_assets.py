"""The tenant's best hyperparameters, found by Ray Tune, for `trained_model` to train with."""

import dagster as dg
import pandas as pd
from pydantic import Field, model_validator

from ml_assets import names
from ml_assets.defs.scope import tenant_of, use_case_asset, use_case_of
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.ray import RayCluster
from ml_assets.use_case import UseCase


class SearchConfig(dg.Config):
    """Switch and search space. Off by default: trained_model then uses its own config."""

    enabled: bool = False
    num_samples: int = Field(8, ge=1, le=1000, description="trials")
    max_epochs: int = Field(6, ge=1, le=200)
    grace_period: int = Field(1, ge=1, description="epochs before ASHA may stop a trial")
    learning_rate: list[float] = Field([1e-3, 3e-2], description="log-uniform [low, high]")
    dropout: list[float] = Field([0.0, 0.3], description="uniform [low, high]")
    hidden_sizes: list[list[int]] = Field([[64, 32], [32, 16], [128, 64]])
    batch_size: list[int] = Field([32, 64, 128])
    seed: int = 0

    @model_validator(mode="after")
    def _valid_space(self) -> "SearchConfig":
        low, high = (self.learning_rate + [0, 0])[:2]
        if len(self.learning_rate) != 2 or not 0 < low < high <= 1:
            raise ValueError(f"learning_rate must be [low, high] in (0, 1], got "
                             f"{self.learning_rate}")
        if len(self.dropout) != 2 or not 0 <= self.dropout[0] <= self.dropout[1] < 1:
            raise ValueError(f"dropout must be [low, high] in [0, 1), got {self.dropout}")
        if not self.hidden_sizes or any(not h or min(h) < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be non-empty lists of positive ints, got "
                             f"{self.hidden_sizes}")
        if not self.batch_size or min(self.batch_size) < 1:
            raise ValueError(f"batch_size must be positive ints, got {self.batch_size}")
        if self.grace_period > self.max_epochs:
            raise ValueError("grace_period must not exceed max_epochs")
        return self

    def param_space(self) -> dict:
        from ray import tune

        return {
            "learning_rate": tune.loguniform(*self.learning_rate),
            "dropout": tune.uniform(*self.dropout),
            "hidden_sizes": tune.choice([tuple(h) for h in self.hidden_sizes]),
            "batch_size": tune.choice(self.batch_size),
        }


def hyperparameter_search(
    context: dg.AssetExecutionContext,
    config: SearchConfig,
    training_features: pd.DataFrame,
    ray: RayCluster,
    mlflow: MlflowRegistry,
    object_store: ObjectStore,
) -> dg.Output[dict]:
    """Bayesian search (Optuna TPE) with ASHA early stopping over the configured space; each
    trial is an MLflow child run of one parent run. Disabled: passes nothing on."""
    if not config.enabled:
        return dg.Output({"enabled": False, "best_config": {}}, metadata={"enabled": False})
    from ml_assets.training import ray_training, search
    from ml_assets.training.progress import trial_progress

    tenant, case = tenant_of(context), use_case_of(context)
    if case.training.family != "torch_mlp" or not case.binary:
        raise ValueError(f"hyperparameter_search searches torch_mlp binary classifiers; use "
                         f"case {case.name!r} trains {case.training.family} on a "
                         f"{case.label.task} label: set enabled: false")
    object_store.check()
    name = f"search-{context.run.run_id[:8]}"
    parent = mlflow.start_run(tenant, name, tags={"search": "optuna+asha"})
    ray.connect()
    results = search.search(
        ray_training.preprocess(training_features, case.features, case.label.column),
        config.param_space(),
        {"seed": config.seed, "max_epochs": config.max_epochs,
         "grace_period": config.grace_period, "tracking_uri": mlflow.tracking_uri,
         "experiment_id": mlflow.experiment_id(tenant), "parent_run_id": parent,
         "tenant": tenant.key},
        num_samples=config.num_samples,
        storage_path=object_store.path(tenant, "tuning"),
        storage_filesystem=object_store.filesystem(),
        name=name,
        callbacks=[trial_progress(context.log.info)],  # each trial in the run log as it ends
    )
    best = results.get_best_result()
    best_config = {**best.config, "hidden_sizes": list(best.config["hidden_sizes"])}
    trials = [{"epochs": int(r.metrics["training_iteration"]),
               "val_roc_auc": float(r.metrics["val_roc_auc"]),
               **{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.config.items()}}
              for r in results]
    client = mlflow.client()
    client.log_dict(parent, {"best_config": best_config, "trials": trials}, "search.json")
    client.set_terminated(parent)
    stopped = sum(t["epochs"] < config.max_epochs for t in trials)
    return dg.Output(
        {"enabled": True, "best_config": best_config, "trials": trials, "parent_run_id": parent},
        metadata={
            "trials": len(trials),
            "stopped_early": stopped,
            "best_val_roc_auc": float(best.metrics["val_roc_auc"]),
            "best_config": dg.MetadataValue.json(best_config),
            "mlflow_parent_run_id": parent,
        },
    )


def build(use_case: UseCase) -> list[dg.AssetsDefinition]:
    return [use_case_asset(use_case, hyperparameter_search, names.HYPERPARAMETER_SEARCH,
                           "training", {"ray", "optuna", "mlflow"},
                           upstream=(names.TRAINING_FEATURES,))]
