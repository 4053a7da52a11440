"""Where a tenant's MLP stops being "small": the same fit (default torch config: 8 epochs,
batch 64) through Ray Train with one worker and in one Ray task (training.many_models), at
growing row counts, in the same local Ray. The Ray Train fit's wall minus its training passes
is its fixed cost; the task's wall is almost all training; `ML_ASSETS_MANY_MODELS_MAX_ROWS`
is set where the task's wall reaches the Ray Train fit's fixed cost.

    python -m bench.many_models [--rows 2000 20000 100000]
"""

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.fs

from bench.common import local_ray_and_tracking, report
from bench.training import frame
from ml_assets.schema import FEATURES, LABEL
from ml_assets.training import many_models, ray_training
from ml_assets.training.config import ExperimentConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 20000, 100000])
    args = parser.parse_args()
    rows_out = []
    with tempfile.TemporaryDirectory() as workdir:
        client = local_ray_and_tracking(Path(workdir))
        experiment = client.get_experiment_by_name("bench").experiment_id
        config = ExperimentConfig(cpus_per_worker=1).model_dump()
        storage = {"storage_path": str(Path(workdir) / "checkpoints"),
                   "storage_filesystem": pyarrow.fs.LocalFileSystem()}
        for rows in args.rows:
            data = frame(rows + 2000)  # rows to train on, and 2,000 validation rows
            row = {"rows": rows}
            for way in ("ray_train", "task"):
                run_id = client.create_run(experiment).info.run_id
                loop = {**config, "tracking_uri": client.tracking_uri, "run_id": run_id,
                        "task": "binary_classification"}
                started = time.perf_counter()
                if way == "ray_train":
                    result = ray_training.fit(
                        ray_training.preprocess(data, FEATURES, LABEL), loop, num_workers=1,
                        use_gpu=False, cpus_per_worker=1, run_name=f"t-{rows}", **storage)
                else:
                    result = many_models.fit_in_task(data, FEATURES, LABEL, loop,
                                                     run_name=f"k-{rows}", **storage)
                wall = time.perf_counter() - started
                passes = float(result.metrics_dataframe["epoch_train_seconds"].sum())
                row.update({f"{way}_s": wall, f"{way}_passes_s": passes,
                            f"{way}_fixed_s": wall - passes})
            rows_out.append(row)
    report("many_models", ["rows", "ray_train_s", "ray_train_passes_s", "ray_train_fixed_s",
                           "task_s", "task_passes_s", "task_fixed_s"], rows_out,
           {"config": "torch_mlp defaults (8 epochs, batch 64, [64, 32]), 1 CPU each"})


if __name__ == "__main__":
    main()
