"""Serving latency under closed-loop load: the multi-tenant Ray Serve app (as deployed by
`deployed_endpoint`, with the prediction log on) against the floor, a bare uvicorn process
serving the same model with the same request checks. Each server runs in its own process,
so does the load generator; Serve settings are compared on a fresh Ray each.

    python -m bench.serving [--duration 20] [--concurrency 1 16 64] [--configs NAME ...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import report
from ml_assets import schema
from ml_assets.data import churn_data
from ml_assets.settings import load_settings
from ml_assets.tenants import Tenant
from ml_assets_testing.servers import free_port, wait_for_http

TENANT = Tenant("bench")
USE_CASE = "churn"
SLA_MS = 50.0
# Serve 2.60 knobs (ray/serve/_private/constants.py), read when its processes start: RAY_SERVE_*
# go into the cluster's environment, ML_ASSETS_* into the project's settings. Loop and log knobs
# are spelled out at Ray's defaults so nothing inherited changes them.
RAY_DEFAULTS = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    "RAY_SERVE_LOG_TO_STDERR": "1",
}
# "tuned" is RAY_SERVE_THROUGHPUT_OPTIMIZED's loop and log part: user code and router on the
# replica's main loop, request-path logs buffered, no stderr copy
TUNED = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}
NO_DIRECT = {"ML_ASSETS_SERVE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
SERVE_CONFIGS = {
    # every request through Serve's HTTP proxy, which forwards it to the replica
    "ray serve (proxy, ray defaults)": {**RAY_DEFAULTS, **NO_DIRECT},
    # the project's defaults (ServeEndpoint.controller_env): the replica answers HTTP on its own
    # port, the URL deployed_endpoint returns, user code on the replica's main loop
    "ray serve (project: direct ingress + main loop)": {},
    # no gain over the proxy row on a quiet machine (README): selectable, not run by default
    "ray serve (proxy, tuned)": {**TUNED, **NO_DIRECT},
    "ray serve (proxy, tuned + grpc hop)": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", **NO_DIRECT},
}
DEFAULT_CONFIGS = ["ray serve (proxy, ray defaults)",
                   "ray serve (project: direct ingress + main loop)"]


def forward_ms(model) -> float:
    """One row through the model in-process: what @serve.batch could at most amortize."""
    import torch

    row = torch.ones(1, len(schema.FEATURES))
    with torch.no_grad():
        for _ in range(100):
            model(row)
        started = time.perf_counter()
        for _ in range(2000):
            model(row)
    return (time.perf_counter() - started) / 2000 * 1000


def prepare(state: Path) -> tuple[str, float, str]:
    """A tenant with source data and a (randomly initialised, real) Production model; the
    tracking URI, the model's one-row forward time and a predict key of the tenant."""
    import mlflow
    import pandas as pd
    import torch
    from mlflow import pytorch as mlflow_pytorch

    from ml_assets.access.keys import KeyStore, Role
    from ml_assets.registry import stages
    from ml_assets.registry.actions import register_version
    from ml_assets.resources import build_resources
    from ml_assets.training.model import ChurnMLP, ChurnModel

    settings = load_settings({"ML_ASSETS_STATE_DIR": str(state)})
    churn_data.write(TENANT.key, churn_data.ChurnDataSpec(customers=2000), settings.raw_data_dir)
    resources = build_resources(settings)
    registry, events = resources["mlflow"], resources["events"]
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    n = len(schema.FEATURES)
    torch.manual_seed(0)
    model = ChurnModel(ChurnMLP(n, [64, 32], 0.1), torch.zeros(n), torch.zeros(n), torch.ones(n))
    run_id = registry.start_run(TENANT, "bench-serving", tags={"data_version": "bench"})
    with mlflow.start_run(run_id=run_id):
        info = mlflow_pytorch.log_model(
            model.eval(), name="model", serialization_format="pickle",
            input_example=pd.DataFrame([[1.0] * n], columns=schema.FEATURES))
    lineage = {"run_id": run_id, "data_version": "bench", "dagster_run_id": "bench"}
    version = str(register_version(registry, TENANT, info.model_uri, lineage).version)
    client = registry.client()
    for stage in (stages.STAGING, stages.PRODUCTION):
        stages.transition(client, events, TENANT, version, stage, "bench", "bench")
    token = KeyStore(settings.api_keys_path).create(TENANT, Role.predict)[1]
    return registry.tracking_uri, forward_ms(model.eval()), token


def serve_worker(state: str, port: int, settings_overrides: dict[str, str]) -> None:
    """Deploy through the asset, print its output (URLs), keep Ray (and Serve) up until stdin
    closes."""
    import dagster as dg

    from ml_assets_testing.chain import chain
    deployed_endpoint = chain().asset("deployed_endpoint")
    from ml_assets.resources import build_resources

    settings = load_settings({"ML_ASSETS_STATE_DIR": state, "ML_ASSETS_SERVE_PORT": str(port),
                              "ML_ASSETS_RAY_NUM_CPUS": "2", **settings_overrides})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [TENANT.key])
        result = dg.materialize([deployed_endpoint], partition_key=TENANT.key, instance=instance,
                                resources=build_resources(settings))
    print(json.dumps(result.output_for_node("churn__deployed_endpoint")), flush=True)
    sys.stdin.read()


def run_load(url: str, concurrency: int, duration: float, token: str | None) -> dict:
    env = {**os.environ, **({"ML_ASSETS_KEY": token} if token else {})}
    out = subprocess.run([sys.executable, "-m", "bench.loadgen", url, str(concurrency),
                          str(duration)], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


FLOOR = "bare uvicorn (floor)"
SECURED_FLOOR = "bare uvicorn + key, rate limit, log"


def floor(state: Path, tracking_uri: str, token: str, args, secured: bool) -> list[dict]:
    """The bare route; `secured` adds what the replica does around it (bench/serving_floor)."""
    port = free_port()
    env = {**os.environ, "MODEL_URI": f"models:/{TENANT.registered_model_name}/1",
           "MLFLOW_TRACKING_URI": tracking_uri, "FLOOR_SECURED": "1" if secured else "0",
           "KEYS_PATH": str(state / "api_keys.db"), "OBJECTS_DIR": str(state / "floor-objects")}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.serving_floor:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"], env=env)
    try:
        url = f"http://127.0.0.1:{port}/v1/{TENANT.key}/{USE_CASE}/predict"
        wait_for_http(f"http://127.0.0.1:{port}/healthz", server)
        return [{"server": SECURED_FLOOR if secured else FLOOR,
                 **run_load(url, c, args.duration, token if secured else None)}
                for c in args.concurrency]
    finally:
        server.terminate()
        server.wait(timeout=30)


def trust_cpu(state: Path, tracking_uri: str, token: str, requests: int = 20_000) -> dict:
    """CPU per request, in this process, of the bare route's own work (parse, validate, model,
    JSON answer) and of what the replica adds (key check, rate limit, prediction log and its
    write): a ratio the machine's noise does not move the way closed-loop throughput does."""
    import mlflow
    import mlflow.pytorch
    import torch
    from starlette.responses import JSONResponse

    from ml_assets.access.guard import authorize
    from ml_assets.access.keys import REPLICA_CACHE_S, KeyStore, Role
    from ml_assets.access.rate_limit import RateLimiter
    from ml_assets.data.object_store import ObjectStoreClient
    from ml_assets.serving import prediction_log
    from ml_assets.serving.request import decode_json, parse_body, validate_rows

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pytorch.load_model(f"models:/{TENANT.registered_model_name}/1").eval()
    body = json.dumps({"rows": [dict.fromkeys(schema.FEATURES, 1.0)], "key": "k"}).encode()
    keys, limiter = KeyStore(state / "api_keys.db", cache_s=REPLICA_CACHE_S), RateLimiter(10**9)
    store = ObjectStoreClient(root=str(state / "cpu-objects"))
    header = f"Bearer {token}"

    def bare() -> list:
        matrix = validate_rows(parse_body(decode_json(body))[1], schema.FEATURES)
        with torch.no_grad():
            predictions = model(torch.tensor(matrix, dtype=torch.float32)).tolist()
        JSONResponse({"tenant": TENANT.key, "predictions": predictions})
        return matrix

    def added(buffer, matrix: list) -> None:
        authorize(keys, limiter, header, TENANT.key, Role.predict)
        buffer.add("1", "production", 200, 1.0, [None], matrix, [0.5])

    def timed(work) -> float:
        started = time.process_time()
        work()
        return (time.process_time() - started) / requests * 1e6

    matrix = bare()
    bare_us = timed(lambda: [bare() for _ in range(requests)])
    buffer = prediction_log.LogBuffer(TENANT.key, USE_CASE)
    request_us = timed(lambda: [added(buffer, matrix) for _ in range(requests)])
    write_us = timed(lambda: prediction_log.write_buffer(store, buffer))
    return {"bare route us/request": round(bare_us, 1),
            "key + limit + log append us/request": round(request_us, 1),
            "log write us/row (off the request path)": round(write_us, 1),
            "added CPU / bare CPU": round((request_us + write_us) / bare_us, 3)}


def trust_cost(rows: list[dict]) -> dict:
    """What the key check, rate limit and log cost on the same bare route, this run."""
    by = {(r["server"], r["concurrency"]): r for r in rows}
    cost = {}
    if (FLOOR, 16) in by and (SECURED_FLOOR, 16) in by:
        cost["c=16 throughput, secured / bare"] = round(
            by[SECURED_FLOOR, 16]["rps"] / by[FLOOR, 16]["rps"], 3)
    if (FLOOR, 1) in by and (SECURED_FLOOR, 1) in by:
        cost["c=1 p50 added ms"] = round(by[SECURED_FLOOR, 1]["p50_ms"] - by[FLOOR, 1]["p50_ms"],
                                         3)
    return cost


def ray_serve(name: str, overrides: dict, state: Path, token: str,
              args) -> tuple[list[dict], float]:
    """Load results of one Serve configuration and the in-replica p50 from the prediction log."""
    from ml_assets.resources import build_resources
    from ml_assets.serving import prediction_log

    port = free_port()
    ray_env = {k: v for k, v in overrides.items() if not k.startswith("ML_ASSETS_")}
    settings = {k: v for k, v in overrides.items() if k.startswith("ML_ASSETS_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "bench.serving", "--serve-worker", str(state), "--port",
         str(port), "--settings", json.dumps(settings)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, **ray_env, "RAY_AUTH_MODE": "token"})
    try:
        line = ""
        while not line.startswith('{"url"'):  # Feast prints progress on stdout too
            line = worker.stdout.readline()
            if not line:
                raise RuntimeError(f"{name}: the Serve worker exited before deploying")
        url = json.loads(line)["url"]
        expect_direct = overrides.get("ML_ASSETS_SERVE_DIRECT_INGRESS", "1") == "1"
        if expect_direct == url.startswith(f"http://127.0.0.1:{port}/"):
            raise RuntimeError(f"{name}: deployed at {url}, the proxy port is {port}")
        started = time.time()
        rows = [{"server": name, **run_load(url, c, args.duration, token)}
                for c in args.concurrency]
        time.sleep(3)  # the replica flushes its prediction log every 2 s
    finally:
        worker.stdin.close()
        worker.wait(timeout=120)
    from datetime import UTC, datetime

    store = build_resources(load_settings({"ML_ASSETS_STATE_DIR": str(state)}))["object_store"]
    log = prediction_log.read(store, TENANT, USE_CASE, columns=["latency_ms", "status"],
                              since=datetime.fromtimestamp(started, UTC)).to_pandas()
    return rows, float(np.percentile(log["latency_ms"], 50)) if len(log) else float("nan")


def _mean_of_repeats(rows: list[dict]) -> list[dict]:
    """One row per (server, concurrency): the mean of its repeats' numbers."""
    grouped: dict[tuple, list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["server"], row["concurrency"]), []).append(row)
    return [{**runs[0], **{k: float(np.mean([r[k] for r in runs])) for k in runs[0]
                           if k not in ("server", "concurrency")}}
            for runs in grouped.values()]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                        choices=list(SERVE_CONFIGS), metavar="CONFIG",
                        help=f"Serve configurations to run, of {list(SERVE_CONFIGS)} "
                             f"(default: {DEFAULT_CONFIGS})")
    parser.add_argument("--serve-worker", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_worker:
        serve_worker(args.serve_worker, args.port, json.loads(args.settings))
        return
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        tracking_uri, model_ms, token = prepare(state)
        # alternated twice: the machine drifts, the ratio between neighbours is what counts
        rows = [row for secured in (False, True, False, True)
                for row in floor(state, tracking_uri, token, args, secured)]
        rows = _mean_of_repeats(rows)
        cpu = trust_cpu(state, tracking_uri, token)
        in_replica = {}
        for name in args.configs:
            overrides = SERVE_CONFIGS[name]
            serve_rows, in_replica[name] = ray_serve(name, overrides, state, token, args)
            rows += serve_rows
    floor_p50 = {r["concurrency"]: r["p50_ms"] for r in rows if r["server"] == FLOOR}
    for row in rows:
        row["p50_vs_floor"] = row["p50_ms"] / floor_p50[row["concurrency"]]
    best = min((r for r in rows if r["server"] in SERVE_CONFIGS and r["concurrency"] == 1),
               key=lambda r: r["p50_ms"], default=None)
    notes = {
        "load": f"closed loop, 1 row per request, {args.duration:.0f} s per concurrency after "
                "1 s warm-up, loopback, load generator in its own process (aiohttp)",
        "in-replica p50 ms (validation + routing + model + log, from the prediction log)":
            {k: round(v, 3) for k, v in in_replica.items()},
        "model forward, 1 row, in-process ms (the most @serve.batch could save per request)":
            round(model_ms, 3),
        "targets": f"p95 < {SLA_MS:.0f} ms at concurrency 16, zero errors, c=1 p50 within 5x "
                   "of the floor; key + limit + log cost <= 10 % of c=16 throughput and "
                   "<= 0.2 ms of c=1 p50 on the same route",
        "key check + rate limit + prediction log, same bare route, this run (closed loop)":
            trust_cost(rows),
        "the same, CPU per request in one process": cpu,
    }
    if best is not None:
        notes["best serve config at c=1"] = f"{best['server']}: {best['p50_vs_floor']:.1f}x floor"
    report("serving", ["server", "concurrency", "requests", "rps", "p50_ms", "p95_ms", "p99_ms",
                       "errors", "p50_vs_floor"], rows, notes)


if __name__ == "__main__":
    main(sys.argv[1:])
