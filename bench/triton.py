"""Triton against a bare ONNX Runtime loop on the same model (one row per request, closed
loop), and a tenant's Serve route scored by Triton against the same route scored in-process.
Every load generator runs in its own process; Triton is the server nvidia-pytriton bundles
(python backend running ONNX Runtime, dynamic batching), as `ml-assets triton up` starts it.

    python -m bench.triton [--duration 10] [--concurrency 1 16 64] [--no-serve]
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.common import report
from bench.serving import TENANT, prepare, run_load
from ml_assets.schema import FEATURES
from ml_assets.settings import PROJECT_ROOT, TRITON_VENV, load_settings
from ml_assets_testing.servers import free_port

ORT, TRITON = "onnx runtime loop (in-process, no server)", "triton (python backend + ORT)"
SERVE_TRITON, SERVE_RAY = "serve route -> triton", "serve route, in-process torch"


def summary(concurrency: int, latencies: list[float], errors: int, elapsed: float) -> dict:
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (0, 0, 0)
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors,
            "rps": len(latencies) / elapsed, "p50_ms": float(p50), "p95_ms": float(p95),
            "p99_ms": float(p99)}


def ort_load(onnx_path: str, concurrency: int, duration: float) -> dict:
    """`concurrency` threads, each scoring one row at a time on one shared session."""
    import onnxruntime

    from ml_assets.serving.triton import INPUT

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # as inside Triton's model
    session = onnxruntime.InferenceSession(onnx_path, options,
                                           providers=["CPUExecutionProvider"])
    row = np.ones((1, len(FEATURES)), dtype=np.float32)

    def client(end: float, out: list) -> None:
        while time.perf_counter() < end:
            started = time.perf_counter()
            session.run(None, {INPUT: row})
            out.append((time.perf_counter() - started) * 1000)

    def run(seconds: float) -> tuple[list[float], float]:
        latencies: list[float] = []
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(started + seconds, latencies))
                   for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return latencies, time.perf_counter() - started

    run(1.0)  # warm-up
    latencies, elapsed = run(duration)
    return summary(concurrency, latencies, 0, elapsed)


async def triton_load(url: str, version: str, concurrency: int, duration: float) -> dict:
    """`concurrency` clients on Triton's HTTP API, through the replica's own call."""
    import aiohttp

    from ml_assets.serving.triton import TritonError, infer_async

    row = [[1.0] * len(FEATURES)]

    async def client(session, end: float, latencies: list, errors: list) -> None:
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                await infer_async(session, url, TENANT, version, row)
                latencies.append((time.perf_counter() - started) * 1000)
            except TritonError:
                errors.append(1)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, time.perf_counter() + 1, [], [])
                               for _ in range(concurrency)))
        latencies: list[float] = []
        errors: list[int] = []
        started = time.perf_counter()
        await asyncio.gather(*(client(session, started + duration, latencies, errors)
                               for _ in range(concurrency)))
        return summary(concurrency, latencies, len(errors), time.perf_counter() - started)


def in_process(*args: str) -> dict:
    """This module with `args` as its own process: the JSON line it prints."""
    out = subprocess.run([sys.executable, "-m", "bench.triton", *args], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve_worker(state: str, port: int, triton_url: str) -> None:
    """Deploy the tenant on Serve and Triton, print triton_endpoint's output; each line on
    stdin names the engine to route to next (an empty one ends it)."""
    import dagster as dg

    from ml_assets_testing.chain import chain
    deployed_endpoint = chain().asset("deployed_endpoint")
    triton_endpoint = chain().asset("triton_endpoint")
    from ml_assets.resources import build_resources

    settings = load_settings({"ML_ASSETS_STATE_DIR": state, "ML_ASSETS_SERVE_PORT": str(port),
                              "ML_ASSETS_RAY_NUM_CPUS": "2", "ML_ASSETS_TRITON_URL": triton_url})
    resources = build_resources(settings)
    assets, engine = [deployed_endpoint, triton_endpoint], "triton"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [TENANT.key])
        while engine:
            result = dg.materialize(assets, partition_key=TENANT.key, instance=instance,
                                    resources=resources, run_config={"ops": {
                                        "churn__triton_endpoint": {"config": {"engine": engine}}}})
            print(json.dumps(result.output_for_node("churn__triton_endpoint")), flush=True)
            assets, engine = [triton_endpoint], sys.stdin.readline().strip()


def serve_rows(state: Path, triton_url: str, token: str, args) -> list[dict]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "bench.triton", "--serve-worker", str(state), "--port",
         str(free_port()), "--triton-url", triton_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "RAY_AUTH_MODE": "token"})

    def deployed() -> str:
        line = ""
        while not line.startswith('{"url"'):  # Feast prints progress on stdout too
            line = worker.stdout.readline()
            if not line:
                raise RuntimeError("the Serve worker exited before deploying")
        return json.loads(line)["url"]

    rows = []
    try:
        url = deployed()
        rows += [{"server": SERVE_TRITON, **run_load(url, c, args.duration, token)}
                 for c in args.concurrency]
        worker.stdin.write("ray\n")
        worker.stdin.flush()
        url = deployed()
        rows += [{"server": SERVE_RAY, **run_load(url, c, args.duration, token)}
                 for c in args.concurrency]
    finally:
        worker.stdin.close()
        worker.wait(timeout=120)
    return rows


def batching(url: str) -> str:
    with urllib.request.urlopen(f"{url}/v2/models/{TENANT.registered_model_name}/stats") as r:
        stats = json.loads(r.read())["model_stats"]
    inferences = sum(int(s["inference_count"]) for s in stats)
    executions = sum(int(s["execution_count"]) for s in stats)
    return f"{inferences} requests in {executions} model executions " \
           f"({inferences / max(executions, 1):.2f} per execution)"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--no-serve", action="store_true", help="skip the Serve route rows")
    parser.add_argument("--ort", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--triton", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--serve-worker", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--triton-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ort:
        print(json.dumps(ort_load(args.ort[0], int(args.ort[1]), float(args.ort[2]))))
        return
    if args.triton:
        url, version, concurrency, duration = args.triton
        print(json.dumps(asyncio.run(triton_load(url, version, int(concurrency),
                                                 float(duration)))))
        return
    if args.serve_worker:
        serve_worker(args.serve_worker, args.port, args.triton_url)
        return
    import mlflow
    import mlflow.pytorch

    from ml_assets.cli.triton import start, wait_ready
    from ml_assets.serving.triton import TritonRepository, export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        tracking_uri, _, token = prepare(state)  # the bench tenant, version 1 in Production
        mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.pytorch.load_model(f"models:/{TENANT.registered_model_name}/1").eval()
        onnx_path = state / "model.onnx"
        onnx_path.write_bytes(export_onnx(model, len(FEATURES)))
        url = f"http://127.0.0.1:{free_port()}"
        server = start(PROJECT_ROOT / TRITON_VENV, state / "triton", int(url.rsplit(":", 1)[1]),
                       state / "triton.log")
        try:
            wait_ready(url, server)
            started = time.perf_counter()
            TritonRepository(url).load(TENANT, {"1": onnx_path.read_bytes()}, "python",
                                       str(PROJECT_ROOT / TRITON_VENV))
            load_s = time.perf_counter() - started
            d = str(args.duration)
            rows = [{"server": ORT, **in_process("--ort", str(onnx_path), str(c), d)}
                    for c in args.concurrency]
            rows += [{"server": TRITON, **in_process("--triton", url, "1", str(c), d)}
                     for c in args.concurrency]
            batched = batching(url)
            if not args.no_serve:
                rows += serve_rows(state, url, token, args)
        finally:
            server.terminate()
            server.wait(timeout=30)
    notes = {
        "load": f"closed loop, 1 row per request, {args.duration:.0f} s per concurrency after "
                "1 s warm-up, loopback; each load generator in its own process",
        "model": "the serving bench's MLP (64, 32) exported to ONNX; ORT with 1 intra-op thread",
        "triton": "Triton 2.51 (nvidia-pytriton 0.7.0), python backend, one instance, dynamic "
                  "batching (500 us queue delay), binary-tensor HTTP (the replica's call)",
        "model load on Triton, s": round(load_s, 2),
        "dynamic batching (direct Triton rows)": batched,
    }
    report("triton", ["server", "concurrency", "requests", "rps", "p50_ms", "p95_ms",
                      "p99_ms", "errors"], rows, notes)


if __name__ == "__main__":
    main(sys.argv[1:])
