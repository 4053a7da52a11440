"""The experiment configuration: one pydantic model for the assets, the CLI and the API."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator


class ExperimentConfig(dg.Config):
    """Hyperparameters and scale of one training run of a tenant's churn classifier."""

    # part of the MLflow run name and the checkpoint path: no separators, nothing like ".."
    experiment_name: str = Field("churn-mlp", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$",
                                 description="letters, digits, '_' and '-'; a letter or "
                                 "digit first; at most 100")
    learning_rate: float = Field(1e-2, gt=0, le=1, description="Adam learning rate")
    batch_size: int = Field(64, ge=1, le=65536)
    epochs: int = Field(8, ge=1, le=1000)
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 32],
                                    description="width of each hidden layer")
    dropout: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    # one rank on both cores beats two DDP ranks on a 2-core machine (bench/training.py);
    # on a cluster, raise num_workers
    num_workers: int = Field(1, ge=1, le=256, description="Ray Train workers (DDP ranks)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(2.0, gt=0, description="Ray resources (CPUs) of each worker")
    max_failures: int = Field(2, ge=0, description="worker-group restarts from the last "
                              "checkpoint before the run fails")
    fault_injection_epoch: int | None = Field(
        None, ge=0, description="chaos testing: the last rank raises once at this epoch")
    seed: int = 0

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_layers(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError(f"hidden_sizes must be a non-empty list of positive ints, got {value}")
        return value
