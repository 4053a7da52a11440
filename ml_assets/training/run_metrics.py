"""Metrics a training worker writes into the tenant's MLflow run as it goes (rank 0 only), so
MLflow charts them by step while the run is still training."""

from __future__ import annotations

import time
from typing import Any

MLFLOW_BATCH = 1000  # MLflow's log_batch takes at most 1000 metrics per call


class RunMetrics:
    """Buffers (key, value, step) points and writes them in batches to one MLflow run."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self.pending: list[Any] = []

    def logged_steps(self, key: str) -> set[int]:
        """The steps of `key` already in the run: what an earlier attempt wrote before dying."""
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    def add(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> None:
        for start in range(0, len(self.pending), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=self.pending[start:start + MLFLOW_BATCH])
        self.pending = []
