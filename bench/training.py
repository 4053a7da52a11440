"""Training throughput: the Ray Train path (Ray Data preprocessing + TorchTrainer DDP) against a
plain single-process torch loop on the same rows and epochs, in the same run: the training
passes' throughput as a ratio, and the rest of Ray's wall time (its fixed cost) beside it.

    python -m bench.training [--rows 100000 1000000] [--epochs 1] [--batch-size 1024] [--gpu]

--gpu adds the Ray path with one GPU worker (2 CPUs beside it) on a machine that has one.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import local_ray_and_tracking, report
from ml_assets.schema import FEATURES, LABEL


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(rng.normal(0, 1, (rows, len(FEATURES))).astype("float32"),
                        columns=FEATURES)
    data[LABEL] = (data[FEATURES[0]] + rng.normal(0, 1, rows) > 0).astype("float32")
    data["split"] = "train"
    data.loc[data.index[-2000:], "split"] = "validation"
    return data


def plain_loop(data: pd.DataFrame, epochs: int, batch_size: int) -> float:
    import torch

    from ml_assets.training.model import ChurnMLP

    train = data[data["split"] == "train"]
    x = train[FEATURES].to_numpy()
    x = torch.from_numpy((x - x.mean(0)) / x.std(0))
    y = torch.from_numpy(train[LABEL].to_numpy())
    model = ChurnMLP(len(FEATURES), [64, 32], 0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            optimizer.zero_grad()
            loss_fn(model(x[start:start + batch_size]), y[start:start + batch_size]).backward()
            optimizer.step()
    return time.perf_counter() - started


def ray_path(data: pd.DataFrame, epochs: int, batch_size: int, workers: int,
             storage: Path, client, use_gpu: bool = False) -> tuple[float, float]:
    """The asset's path (Ray Data preprocessing, then a TorchTrainer fit with its per-epoch
    validation, MLflow logging and checkpoints): its wall time, and the time its training
    passes took inside the workers (rank 0's `epoch_train_seconds`)."""
    import pyarrow.fs

    from ml_assets.training import ray_training

    run_id = client.create_run(client.get_experiment_by_name("bench").experiment_id).info.run_id
    started = time.perf_counter()
    result = ray_training.fit(
        ray_training.preprocess(data, FEATURES, LABEL),
        {"seed": 0, "hidden_sizes": [64, 32], "dropout": 0.1, "learning_rate": 1e-2,
         "weight_decay": 0.0, "epochs": epochs, "batch_size": batch_size,
         "tracking_uri": client.tracking_uri, "run_id": run_id},
        # the machine's 2 cores split among the workers: DDP ranks or one rank on both
        num_workers=workers, use_gpu=use_gpu, cpus_per_worker=2.0 / workers,
        storage_path=str(storage), storage_filesystem=pyarrow.fs.LocalFileSystem(),
        run_name=f"bench-{run_id[:8]}")
    total = time.perf_counter() - started
    return total, float(result.metrics_dataframe["epoch_train_seconds"].sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args(argv)
    rows_out = []
    with tempfile.TemporaryDirectory() as workdir:
        client = local_ray_and_tracking(Path(workdir))
        for n in args.rows:
            data = frame(n)
            plain = plain_loop(data, args.epochs, args.batch_size)
            paths = [(w, False) for w in args.workers] + [(1, True)] * args.gpu
            for workers, use_gpu in paths:
                total, training = ray_path(data, args.epochs, args.batch_size, workers,
                                           Path(workdir) / "checkpoints", client, use_gpu)
                trained = (n - 2000) * args.epochs
                rows_out.append({
                    "rows": n, "ray_workers": f"{workers} GPU" if use_gpu else workers,
                    "plain_s": plain,
                    "plain_rows_per_s": trained / plain, "ray_train_s": training,
                    "ray_rows_per_s": trained / training, "ratio": training / plain,
                    "ray_fixed_s": total - training, "ray_total_s": total,
                })
    import ray

    ray.shutdown()
    report("training", ["rows", "ray_workers", "plain_s", "plain_rows_per_s", "ray_train_s",
                        "ray_rows_per_s", "ratio", "ray_fixed_s", "ray_total_s"], rows_out,
           {"epochs": args.epochs, "batch_size": args.batch_size,
            "cpus": "2 per Ray path, split among its workers", "hidden_sizes": [64, 32],
            "ray_train_s": "the training passes inside the Ray Train workers (rank 0's "
            "epoch_train_seconds: Ray Data batches from the object store, forward, backward, "
            "step), timed like plain_s (the plain loop's passes over tensors in memory)",
            "ray_fixed_s": "the rest of the Ray path's wall time: Ray Data preprocessing, "
            "controller and worker start, per-epoch validation, MLflow logging, checkpoints",
            "goal": "ratio <= 1.5 at 1M rows"})


if __name__ == "__main__":
    main()
