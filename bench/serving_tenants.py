"""Many tenants on one Serve replica: memory per loaded model, the first request to a tenant
whose model is not loaded (cold load), and closed-loop load spread uniformly at random over
every tenant, with the model cache holding them all and bounded below their number (every
miss a reload). The baseline, in the same run and app: one tenant under the same load.

Each tenant has its own registered churn model (untrained, real MLflow versions with lineage,
Production) and route; the app is the one `deployed_endpoint` starts, deployed directly (no
Dagster run per tenant), with the cache bounds its settings give.

    python -m bench.serving_tenants [--tenants 100] [--duration 20] [--bounded 32]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import report
from ml_assets import schema
from ml_assets.settings import load_settings
from ml_assets.tenants import Tenant
from ml_assets_testing.servers import free_port

HIDDEN = (64, 32)  # bench/serving.py's model
SLA_MS = 50.0
CONCURRENCY = 16


def prepare(settings, tenants: list[Tenant]) -> tuple[dict[str, str], float]:
    """A Production version and a predict key per tenant; the seconds registering took."""
    from ml_assets.access.keys import KeyStore, Role
    from ml_assets.resources import build_resources
    from ml_assets_testing.models import production_version

    resources = build_resources(settings)
    keys = KeyStore(settings.api_keys_path)
    started = time.perf_counter()
    for i, tenant in enumerate(tenants):
        production_version(resources["mlflow"], resources["events"], tenant, seed=i,
                           hidden=HIDDEN)
    took = time.perf_counter() - started
    return {t.key: keys.create(t, Role.predict)[1] for t in tenants}, took


def deploy(settings, env: dict[str, str], tenants: list[Tenant]) -> tuple[dict, object]:
    """The models app, fresh (empty cache), with the cache settings in `env`: each tenant's URL
    at its replica, and a handle."""
    from ray import serve

    from ml_assets.defs.serving.assets import direct_ingress_port, start_serve
    from ml_assets.resources import build_resources
    from ml_assets.serving.app import APP_NAME, ModelService
    from ml_assets.serving.request import ROUTE_PREFIX

    resources = build_resources(load_settings({**settings_env(settings), **env}))
    endpoint = resources["serve_endpoint"]
    start_serve(endpoint)
    if APP_NAME in serve.status().applications:
        serve.delete(APP_NAME)
    serve.run(ModelService.bind(resources["feast"].model_dump(),
                                resources["object_store"].model_dump(),
                                **endpoint.replica_config()),
              name=APP_NAME, route_prefix=ROUTE_PREFIX)
    port = direct_ingress_port(APP_NAME)
    return {t.key: endpoint.url(t, port) for t in tenants}, serve.get_app_handle(APP_NAME)


def settings_env(settings) -> dict[str, str]:
    return {"ML_ASSETS_STATE_DIR": str(settings.state_dir),
            "ML_ASSETS_SERVE_PORT": str(settings.serve_port), "ML_ASSETS_RAY_NUM_CPUS": "2"}


def run_load(targets: list[tuple[str, str]], duration: float, state: Path) -> dict:
    path = state / "targets.json"
    path.write_text(json.dumps(targets))
    out = subprocess.run([sys.executable, "-m", "bench.loadgen", "--targets", str(path),
                          str(CONCURRENCY), str(duration)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_requests(urls: dict[str, str], tenants: list[Tenant],
                   tokens: dict[str, str]) -> list[float]:
    """Milliseconds of one request to each tenant in turn (c=1), failing on any non-200."""
    from ml_assets.serving.client import post_json

    body = {"rows": [dict.fromkeys(schema.FEATURES, 1.0)]}
    took = []
    for tenant in tenants:
        started = time.perf_counter()
        status, _, answer = post_json(urls[tenant.key], body,
                                      token=tokens[tenant.key])
        took.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"{tenant.key}: {status} {answer}")
    return took


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "max_ms": float(max(values))}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--bounded", type=int, default=32,
                        help="ML_ASSETS_SERVE_MODELS_PER_REPLICA of the bounded run")
    args = parser.parse_args(argv)
    from ml_assets.resources import build_resources
    from ml_assets.serving.routing import Route, set_route

    n = args.tenants
    tenants = [Tenant(f"t{i:03d}") for i in range(n)]
    rows, notes = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        settings = load_settings({"ML_ASSETS_STATE_DIR": tmp, "ML_ASSETS_SERVE_PORT":
                                  str(free_port()), "ML_ASSETS_RAY_NUM_CPUS": "2"})
        tokens, register_s = prepare(settings, tenants)
        resources = build_resources(settings)
        resources["ray"].connect()
        for tenant in tenants:
            set_route(tenant, Route(registry_uri=settings.mlflow_tracking_uri, primary="1"))

        # every model fits: memory per model, cold loads, then the spread load
        urls, app = deploy(settings, {"ML_ASSETS_SERVE_MODELS_PER_REPLICA": str(n)}, tenants)
        first = first_requests(urls, tenants[:1], tokens)  # imports, the first model
        one = app.model_cache_stats.remote().result()
        cold = first_requests(urls, tenants[1:], tokens)
        full = app.model_cache_stats.remote().result()
        warm = first_requests(urls, tenants[1:], tokens)
        assert full["loaded"] == n and full["evictions"] == 0, full
        notes["memory per loaded model, replica RSS growth (KB)"] = round(
            (full["rss_bytes"] - one["rss_bytes"]) / (n - 1) / 1024, 1)
        notes["memory per loaded model, cache's measure (parameters + buffers, KB)"] = round(
            full["bytes"] / n / 1024, 1)
        notes["first request of the replica (imports + first load) ms"] = round(first[0], 1)
        notes[f"cold load: first request to each of {n - 1} tenants, c=1"] = {
            k: round(v, 1) for k, v in percentiles(cold).items()}
        notes["the same requests again, models loaded, c=1"] = {
            k: round(v, 1) for k, v in percentiles(warm).items()}

        single = [(urls[tenants[0].key], tokens[tenants[0].key])]
        spread = [(urls[t.key], tokens[t.key]) for t in tenants]
        rows.append({"tenants": 1, "models_per_replica": n, **run_load(single, args.duration,
                                                                        state)})
        before = app.model_cache_stats.remote().result()
        rows.append({"tenants": n, "models_per_replica": n, **run_load(spread, args.duration,
                                                                        state)})
        after = app.model_cache_stats.remote().result()
        rows[-1]["loads"] = after["loads"] - before["loads"]

        # room for fewer than the tenants, by count, then by bytes: most requests find their
        # model evicted
        bounded_mb = args.bounded * full["bytes"] / n / 2**20
        for bounds in ({"ML_ASSETS_SERVE_MODELS_PER_REPLICA": str(args.bounded)},
                       {"ML_ASSETS_SERVE_MODELS_PER_REPLICA": str(n),
                        "ML_ASSETS_SERVE_MODEL_CACHE_MB": f"{bounded_mb:.4f}"}):
            urls, app = deploy(settings, bounds, tenants)
            spread = [(urls[t.key], tokens[t.key]) for t in tenants]
            first_requests(urls, tenants[:1], tokens)
            before = app.model_cache_stats.remote().result()
            rows.append({"tenants": n, "models_per_replica": int(
                bounds["ML_ASSETS_SERVE_MODELS_PER_REPLICA"]),
                "cache_mb": bounds.get("ML_ASSETS_SERVE_MODEL_CACHE_MB"),
                **run_load(spread, args.duration, state)})
            after = app.model_cache_stats.remote().result()
            rows[-1].update({"loads": after["loads"] - before["loads"],
                             "evictions": after["evictions"] - before["evictions"],
                             "loaded_after": after["loaded"]})
        from ray import serve

        serve.shutdown()
    base = rows[0]
    for row in rows:
        row["p95_vs_1_tenant"] = row["p95_ms"] / base["p95_ms"]
    spread_all = rows[1]
    notes.update({
        "load": f"closed loop, c={CONCURRENCY}, 1 row per request, {args.duration:.0f} s after "
                "1 s warm-up, each request to a tenant drawn uniformly at random, loopback, "
                "load generator in its own process (aiohttp); one replica, direct ingress, "
                "prediction log on; MLflow embedded (sqlite, local artifacts)",
        "models": f"churn MLP {list(HIDDEN)}, untrained, one Production version per tenant",
        "registering the tenants' models (s)": round(register_s, 1),
        "target": f"{n} tenants, c={CONCURRENCY}: p95 < {SLA_MS:.0f} ms, zero errors",
        "met": spread_all["p95_ms"] < SLA_MS and spread_all["errors"] == 0,
    })
    report("serving_tenants", ["tenants", "models_per_replica", "cache_mb", "concurrency",
                               "requests", "rps", "p50_ms", "p95_ms", "p99_ms", "errors",
                               "loads", "evictions", "loaded_after", "p95_vs_1_tenant"], rows,
           notes)


if __name__ == "__main__":
    main(sys.argv[1:])
