"""The Ray Train GPU path (`use_gpu`): the worker trains the churn model on the GPU, checkpoints
it, a second fit resumes from that checkpoint on the GPU, and the driver loads it on the CPU.

Needs CUDA, so it is skipped on the CPU machines CI runs on; on a GPU machine without the
project's servers: `pytest --noconftest ml_assets_tests/integration/test_training_gpu.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_assets.schema import FEATURES, LABEL

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LOOP = {"seed": 0, "hidden_sizes": [64, 32], "dropout": 0.1, "learning_rate": 1e-2,
        "weight_decay": 0.0, "batch_size": 256}


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.normal(0, 1, (rows, len(FEATURES))).astype("float32"),
                        columns=FEATURES)
    data.loc[data.index[::50], FEATURES[1]] = np.nan  # the imputer has work to do
    data[LABEL] = (data[FEATURES[0]] + 0.5 * rng.normal(0, 1, rows) > 0).astype("float32")
    data["split"] = "train"
    data.loc[data.index[-5000:], "split"] = "validation"
    return data


def _optimizer_devices(state: dict) -> set[str]:
    return {t.device.type for s in state["optimizer"]["state"].values()
            for t in s.values() if torch.is_tensor(t) and t.dim() > 0}


def test_training_on_the_gpu_checkpoints_resumes_and_loads_on_the_cpu(tmp_path: Path) -> None:
    import pyarrow.fs
    import ray
    from mlflow import MlflowClient

    from ml_assets.training import ray_training
    from ml_assets.training.model import ChurnMLP

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("gpu", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(experiment).info.run_id
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False)
    try:
        data = ray_training.preprocess(_frame(50_000), FEATURES, LABEL)

        def fit(epochs: int, run_name: str, resume_from: str | None = None):
            return ray_training.fit(
                data, {**LOOP, "epochs": epochs, "tracking_uri": client.tracking_uri,
                       "run_id": run_id},
                num_workers=1, use_gpu=True, cpus_per_worker=1.0,
                storage_path=str(tmp_path / "checkpoints"),
                storage_filesystem=pyarrow.fs.LocalFileSystem(), run_name=run_name,
                resume_from=resume_from)

        first = fit(2, "first")
        assert first.error is None
        assert first.metrics["epoch"] == 1
        # Adam's moments are saved as they were in training: on the GPU
        with first.checkpoint.as_directory() as directory:
            raw = torch.load(Path(directory) / ray_training.STATE_FILE, weights_only=True)
        assert _optimizer_devices(raw) == {"cuda"}

        second = fit(4, "second", resume_from=first.checkpoint.path)
        assert second.error is None
        history = second.metrics_dataframe
        assert list(history["epoch"]) == [2, 3]
        assert set(history["resumed_from_epoch"]) == {1}
        assert second.metrics["val_roc_auc"] > 0.8
    finally:
        ray.shutdown()

    steps = [m.step for m in client.get_metric_history(run_id, "val_loss")]
    assert sorted(steps) == [0, 1, 2, 3]
    # the driver (no GPU needed) loads the checkpoint on the CPU and rebuilds the model
    state = ray_training.load_state(second.checkpoint)
    assert state["epoch"] == 3
    assert _optimizer_devices(state) == {"cpu"}
    model = ChurnMLP(len(FEATURES), LOOP["hidden_sizes"], LOOP["dropout"])
    model.load_state_dict(state["model"])
    assert all(p.device.type == "cpu" for p in model.parameters())
