"""Serving a tenant's LLM version locally: its vLLM server (blue/green: the new version's server
starts and answers before the route moves and the old one stops) and the one gateway process in
front of every tenant's server. No Dagster: the `llm_endpoint` asset and the tests call this."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

from ml_assets.llm import vllm_server
from ml_assets.llm.routes import LlmRoute, read_routes, set_route
from ml_assets.llm.vllm_server import VllmOptions
from ml_assets.tenants import Tenant


def serve_version(options: VllmOptions, routes_path: Path, logs_dir: Path, tenant: Tenant,
                  model: str, version: str, model_dir: Path) -> tuple[LlmRoute, bool]:
    """The tenant's route to a server of `version`: (route, whether a server was started).
    A server already serving the version is kept; another version's is stopped once the new
    one answers (requests in flight on it may fail: vLLM cannot swap a model in place)."""
    current = read_routes(routes_path).get(tenant.key)
    if current is not None and current.version == version and vllm_server.alive(current.pid):
        return current, False
    served = [f"{model}:{version}", model]  # the first is what answers name
    pid, url = vllm_server.start(options, model_dir, served,
                                 logs_dir / f"vllm-{tenant.key}-{version}.log")
    route = LlmRoute(url=url, model=model, version=str(version),
                     max_model_len=options.max_model_len, pid=pid)
    set_route(routes_path, tenant.key, route)
    mark_production(model_dir)
    if current is not None and current.pid != pid:
        vllm_server.stop(current.pid)
    return route, True


def mark_production(model_dir: Path) -> None:
    """Point `production` beside the version's directory at it (what a cluster's vLLM pod
    serves, deploy/k8s/81-vllm.yaml); moved atomically."""
    link = model_dir.parent / "production"
    partial = model_dir.parent / f".production.{os.getpid()}"
    partial.unlink(missing_ok=True)
    partial.symlink_to(model_dir.name)
    partial.replace(link)


def stop_tenant(routes_path: Path, tenant: Tenant) -> None:
    """Take the tenant's LLM route down and stop its server."""
    current = read_routes(routes_path).get(tenant.key)
    set_route(routes_path, tenant.key, None)
    if current is not None:
        vllm_server.stop(current.pid)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def ensure_gateway(state_dir: Path, host: str, port: int, config: dict,
                   timeout_s: float = 60.0) -> str:
    """The gateway's URL, started (detached, in this interpreter) unless one with the same
    config answers there already. It re-reads the routes file, so routes need no restart."""
    state_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    pid_file, config_file = state_dir / "gateway.json", state_dir / "gateway-config.json"
    running = json.loads(pid_file.read_text()) if pid_file.exists() else {}
    if running.get("config") == config and vllm_server.alive(running.get("pid")) and _healthy(url):
        return url
    vllm_server.stop(running.get("pid"))
    config_file.write_text(json.dumps(config))
    log = open(state_dir / "gateway.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        [sys.executable, "-m", "ml_assets.serving.llm_gateway", str(config_file),
         "--host", host, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env=os.environ.copy())
    log.close()
    deadline = time.monotonic() + timeout_s
    while not _healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            vllm_server.stop(process.pid)
            tail = (state_dir / "gateway.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"LLM gateway at {url} did not start:\n{tail}")
        time.sleep(0.2)
    pid_file.write_text(json.dumps({"pid": process.pid, "url": url, "config": config}))
    return url


def gateway_config(keys_path: str, routes_path: Path, object_store: dict,
                   rate_limit_per_minute: int, log_flush_s: float = 1.0) -> dict:
    from ml_assets.serving.llm_gateway import GatewayConfig

    return asdict(GatewayConfig(keys_path=str(keys_path), routes_path=str(routes_path),
                                object_store=object_store,
                                rate_limit_per_minute=rate_limit_per_minute,
                                log_flush_s=log_flush_s))
