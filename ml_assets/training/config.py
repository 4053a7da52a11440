"""The experiment configuration: one pydantic model per model family, discriminated by `family`,
shared by the assets, the CLI and the API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import ConfigDict, Field, TypeAdapter, field_validator

Family = Literal["torch_mlp", "xgboost", "lightgbm"]
FAMILIES: tuple[str, ...] = ("torch_mlp", "xgboost", "lightgbm")


class CommonConfig(dg.Config):
    """What every family's training run has: its name, seed, scale and fault tolerance."""

    # a field of another family is an error naming it, not a value silently dropped
    model_config = ConfigDict(extra="forbid")

    # part of the MLflow run name and the checkpoint path: no separators, nothing like ".."
    experiment_name: str = Field("churn-mlp", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$",
                                 description="letters, digits, '_' and '-'; a letter or "
                                 "digit first; at most 100")
    # one rank on both cores beats two DDP ranks on a 2-core machine (bench/training.py);
    # on a cluster, raise num_workers
    num_workers: int = Field(1, ge=1, le=256, description="Ray Train workers")
    cpus_per_worker: float = Field(2.0, gt=0, description="Ray resources (CPUs) of each worker")
    max_failures: int = Field(2, ge=0, description="worker-group restarts from the last "
                              "checkpoint before the run fails")
    seed: int = 0


class ExperimentConfig(CommonConfig):
    """Hyperparameters and scale of one training run of a tenant's PyTorch MLP."""

    family: Literal["torch_mlp"] = "torch_mlp"
    learning_rate: float = Field(1e-2, gt=0, le=1, description="Adam learning rate")
    batch_size: int = Field(64, ge=1, le=65536)
    epochs: int = Field(8, ge=1, le=1000)
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 32],
                                    description="width of each hidden layer")
    dropout: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    use_gpu: bool = False
    log_every_n_steps: int | None = Field(
        None, ge=1, description="also log the training loss every N optimizer steps "
        "(MLflow step = global step); None: per epoch only")
    fault_injection_epoch: int | None = Field(
        None, ge=0, description="chaos testing: the last rank raises once at this epoch")

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_layers(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError(f"hidden_sizes must be a non-empty list of positive ints, got {value}")
        return value




class BoostingConfig(CommonConfig):
    """What both gradient-boosted-tree families share: rounds, step size, regularization,
    checkpoint cadence."""

    experiment_name: str = Field("gbm", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$",
                                 description="letters, digits, '_' and '-'; a letter or "
                                 "digit first; at most 100")
    num_boost_round: int = Field(100, ge=1, le=100_000, description="boosting rounds (trees)")
    learning_rate: float = Field(0.1, gt=0, le=1, description="shrinkage (XGBoost's eta)")
    subsample: float = Field(1.0, gt=0, le=1, description="row fraction per tree")
    colsample_bytree: float = Field(1.0, gt=0, le=1, description="feature fraction per tree")
    reg_lambda: float = Field(1.0, ge=0, description="L2 regularization on leaf weights")
    checkpoint_every_rounds: int = Field(10, ge=1, description="checkpoint the booster to the "
                                         "object store every N rounds (and at the end)")
    fault_injection_round: int | None = Field(
        None, ge=1, description="chaos testing: the last rank raises once after this many "
        "rounds")


class XGBoostConfig(BoostingConfig):
    """One XGBoost training run (hist tree method) through Ray Train's XGBoostTrainer."""

    family: Literal["xgboost"] = "xgboost"
    max_depth: int = Field(6, ge=1, le=64)
    min_child_weight: float = Field(1.0, ge=0)
    max_bin: int = Field(256, ge=2, le=65536)


class LightGBMConfig(BoostingConfig):
    """One LightGBM training run through Ray Train's LightGBMTrainer."""

    family: Literal["lightgbm"] = "lightgbm"
    num_leaves: int = Field(31, ge=2, le=131072)
    max_depth: int = Field(-1, ge=-1, le=64, description="-1: no limit")
    min_data_in_leaf: int = Field(20, ge=0)
    max_bin: int = Field(255, ge=2, le=65536)


FamilyConfig = Annotated[ExperimentConfig | XGBoostConfig | LightGBMConfig,
                         Field(discriminator="family")]
_FAMILY_CONFIG: TypeAdapter[Any] = TypeAdapter(FamilyConfig)
CONFIG_CLASSES: dict[str, type[CommonConfig]] = {
    "torch_mlp": ExperimentConfig, "xgboost": XGBoostConfig, "lightgbm": LightGBMConfig}
# reruns of the same training with a different fault injected are the same training
FAULT_FIELDS = {"fault_injection_epoch", "fault_injection_round"}


def experiment_config_for(family: str, values: dict[str, Any] | None = None
                          ) -> ExperimentConfig | XGBoostConfig | LightGBMConfig:
    """The validated config of `family` from `values` (which may repeat the family). A field of
    another family, or a bad value, raises pydantic's ValidationError naming the field."""
    if family not in CONFIG_CLASSES:
        raise ValueError(f"unknown model family {family!r}: one of {list(FAMILIES)}")
    values = dict(values or {})
    if values.setdefault("family", family) != family:
        raise ValueError(f"config says family {values['family']!r} but {family!r} was asked")
    return _FAMILY_CONFIG.validate_python(values)


class TrainingRequest(dg.PermissiveConfig):
    """The `trained_model` run config: `family` (None: the use case's) and that family's fields
    (ExperimentConfig, XGBoostConfig or LightGBMConfig), checked by `resolve` when the step
    starts, before any run or event."""

    # a str, not the Family Literal: Dagster's config types have no Literal
    family: str | None = Field(None, description="torch_mlp, xgboost or lightgbm; None: "
                               "the use case's training.family")


def resolve(request: dict[str, Any], default_family: str,
            defaults: dict[str, Any] | None = None
            ) -> ExperimentConfig | XGBoostConfig | LightGBMConfig:
    """The validated config a run asked for: its family (or `default_family`), `defaults` (the
    use case's training.params, for its own family only) under the fields it set."""
    values = {k: v for k, v in request.items() if not (k == "family" and v is None)}
    family = values.get("family", default_family)
    base = dict(defaults or {}) if family == default_family else {}
    return experiment_config_for(family, {**base, **values})
