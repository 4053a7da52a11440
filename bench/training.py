"""Training throughput: the Ray Train path (Ray Data preprocessing + TorchTrainer DDP) against a
plain single-process torch loop on the same rows and epochs, in the same run. Ray's fixed cost
(a fit on 1,000 rows) is reported separately and taken out of the Ray throughput.

    python -m bench.training [--rows 100000 1000000] [--epochs 1] [--batch-size 1024]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import report
from ml_assets.churn_data import FEATURES, LABEL


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

    from ml_assets.churn_model import ChurnMLP

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


def ray_path(data: pd.DataFrame, epochs: int, batch_size: int, workdir: Path,
             workers: int) -> float:
    import pyarrow.fs
    from mlflow import MlflowClient

    from ml_assets.defs.training import ray_training

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bench") or client.get_experiment(
        client.create_experiment("bench", artifact_location=(workdir / "a").as_uri()))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    started = time.perf_counter()
    ray_training.fit(
        ray_training.preprocess(data),
        {"seed": 0, "hidden_sizes": [64, 32], "dropout": 0.1, "learning_rate": 1e-2,
         "weight_decay": 0.0, "epochs": epochs, "batch_size": batch_size,
         "tracking_uri": client.tracking_uri, "run_id": run_id},
        # the machine's 2 cores split among the workers: DDP ranks or one rank on both
        num_workers=workers, use_gpu=False, cpus_per_worker=2.0 / workers,
        storage_path=str(workdir / "checkpoints"),
        storage_filesystem=pyarrow.fs.LocalFileSystem(), run_name=f"bench-{run_id[:8]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    rows_out = []
    with tempfile.TemporaryDirectory() as workdir:
        fixed = ray_path(frame(3000), args.epochs, args.batch_size, Path(workdir), 1)
        for n in args.rows:
            data = frame(n)
            plain = plain_loop(data, args.epochs, args.batch_size)
            for workers in args.workers:
                ray_total = ray_path(data, args.epochs, args.batch_size, Path(workdir), workers)
                trained = n - 2000
                net = ray_total - fixed  # None: the run is within the fixed cost's own noise
                net = net if net > 0.1 * fixed else None
                rows_out.append({
                    "rows": n, "ray_workers": workers, "plain_s": plain,
                    "plain_rows_per_s": trained * args.epochs / plain, "ray_s": ray_total,
                    "ray_rows_per_s_net": trained * args.epochs / net if net else None,
                    "ratio_total": ray_total / plain,
                    "ratio_net_of_fixed": net / plain if net else None,
                })
    ray.shutdown()
    report("training", ["rows", "ray_workers", "plain_s", "plain_rows_per_s", "ray_s",
                        "ray_rows_per_s_net", "ratio_total", "ratio_net_of_fixed"], rows_out,
           {"ray_fixed_cost_s (fit on 3,000 rows)": round(fixed, 1), "epochs": args.epochs,
            "batch_size": args.batch_size, "cpus": "2 per Ray path, split among its workers",
            "hidden_sizes": [64, 32]})


if __name__ == "__main__":
    main()
