"""The churn task with no platform: one plain script (pandas merge_asof, a torch loop, one
MLflow run with the model registered, uvicorn serving it) on the same tenant data as
bench/graph.py, each phase timed with its imports, in a fresh process. Set beside the graph's
warm per-asset times (bench/results/graph.json), it gives the platform's overhead per phase.

    python -m bench.no_platform [--customers 2000] [--epochs 8]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.common import RESULTS, report

TENANT = "tenant-0"  # bench/graph.py's first tenant: the same generated data
PHASES = {  # plain phase -> the graph's step doing that work
    "features": "training_features",
    "training": "trained_model",
    "evaluation": "evaluation_report",
    "registry": "registered_model",
    "serving": "deployed_endpoint",
}


def plain_script(raw: Path, workdir: Path, epochs: int, batch_size: int) -> dict[str, float]:
    """The whole task, phase by phase; {phase: seconds}. Runs in its own process."""
    took: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        took[phase] = now - clock
        clock = now

    import numpy as np
    import pandas as pd

    from ml_assets.schema import ENTITY, FEATURES, LABEL, LABEL_TIMESTAMP, TIMESTAMP

    labels = pd.read_parquet(raw / TENANT / "churn" / "churn_labels.parquet").rename(
        columns={LABEL_TIMESTAMP: TIMESTAMP}).sort_values(TIMESTAMP, kind="stable")
    activity = pd.read_parquet(raw / TENANT / "churn" / "customer_activity.parquet").rename(
        columns={TIMESTAMP: "feature_time"}).sort_values("feature_time", kind="stable")
    frame = pd.merge_asof(labels, activity, left_on=TIMESTAMP, right_on="feature_time",
                          by=ENTITY, tolerance=pd.Timedelta(days=90)).reset_index(drop=True)
    n = len(frame)
    split = np.where(np.arange(n) < 0.7 * n, "train",
                     np.where(np.arange(n) < 0.85 * n, "validation", "holdout"))
    lap("features")

    import torch

    from ml_assets.training.model import ChurnMLP, ChurnModel

    torch.manual_seed(0)
    x_all = torch.tensor(frame[FEATURES].to_numpy(), dtype=torch.float32)
    y_all = torch.tensor(frame[LABEL].to_numpy(), dtype=torch.float32)
    train = torch.from_numpy(split == "train")
    impute = torch.nanmean(x_all[train], dim=0)
    x_filled = torch.where(torch.isnan(x_all), impute, x_all)
    mean, std = x_filled[train].mean(0), x_filled[train].std(0)
    mlp = ChurnMLP(len(FEATURES), [64, 32], 0.1)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-2, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x_train, y_train = ((x_filled[train] - mean) / std), y_all[train]
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss_fn(mlp(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    model = ChurnModel(mlp.eval(), impute, mean, std)
    lap("training")

    from ml_assets.training.metrics import binary_metrics

    holdout = torch.from_numpy(split == "holdout")
    with torch.no_grad():
        p = model(x_all[holdout]).numpy()
    metrics = binary_metrics(y_all[holdout].numpy(), p)
    lap("evaluation")

    import mlflow
    from mlflow import pytorch as mlflow_pytorch

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = mlflow.create_experiment("plain", artifact_location=(workdir / "a").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        mlflow.log_params({"epochs": epochs, "batch_size": batch_size, "hidden_sizes": [64, 32]})
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items() if v == v})
        info = mlflow_pytorch.log_model(model, name="model", serialization_format="pickle",
                                        registered_model_name="plain-churn",
                                        input_example=frame[FEATURES].head(2))
    lap("registry")

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    served = mlflow_pytorch.load_model(info.model_uri)

    async def predict(request):
        rows = (await request.json())["rows"]
        with torch.no_grad():
            out = served(torch.tensor([[r[f] for f in FEATURES] for r in rows]))
        return JSONResponse({"churn_probability": out.tolist()})

    from ml_assets_testing.servers import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/predict", predict,
                                                                   methods=["POST"])]),
                                           host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    body = json.dumps({"rows": frame[FEATURES].fillna(0).head(1).to_dict("records")}).encode()
    while True:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                assert 0 <= json.load(response)["churn_probability"][0] <= 1
            break
        except OSError:
            time.sleep(0.05)
    lap("serving")
    server.should_exit = True
    thread.join(10)
    took["holdout_roc_auc"] = metrics["roc_auc"]
    return took


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--plain", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(plain_script(args.plain, Path(workdir), args.epochs,
                                          args.batch_size)))
        return
    from ml_assets.data.churn_data import ChurnDataSpec, write

    with tempfile.TemporaryDirectory() as tmp:
        write(TENANT, ChurnDataSpec(customers=args.customers), Path(tmp))
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bench.no_platform", "--plain", tmp, "--epochs",
             str(args.epochs), "--batch-size", str(args.batch_size)],
            capture_output=True, text=True)
        wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"the plain script failed:\n{done.stderr[-3000:]}")
    plain = json.loads(done.stdout.strip().splitlines()[-1])
    graph = _graph_warm()
    rows = []
    for phase, step in PHASES.items():
        platform = graph.get(step)
        rows.append({"phase": phase, "plain_s": plain[phase], "platform_step": step,
                     "platform_s": platform,
                     "overhead_ratio": platform / plain[phase] if platform else None})
    platform_wall = graph.get("wall_s")
    rows.append({"phase": "whole task (process wall)", "plain_s": wall,
                 "platform_step": "the graph run", "platform_s": platform_wall,
                 "overhead_ratio": platform_wall / wall if platform_wall else None})
    report("no_platform", ["phase", "plain_s", "platform_step", "platform_s",
                           "overhead_ratio"], rows,
           {"plain script": "pandas merge_asof, torch loop (same MLP, epochs, batch), one "
            "MLflow run + registered model, uvicorn+Starlette serving to a first prediction; "
            "each phase includes its imports",
            "plain holdout roc_auc": round(plain["holdout_roc_auc"], 3),
            "platform numbers": "bench/results/graph.json, '1 tenant, warm' "
            + ("(not found: run bench.graph first)" if not graph else "(same `make bench`)"),
            "data": f"{args.customers:,} customers, same generator and tenant as bench.graph"})


def _graph_warm() -> dict:
    path = RESULTS / "graph.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return next((r for r in rows if r["scenario"] == "1 tenant, warm"), {})


if __name__ == "__main__":
    main()
