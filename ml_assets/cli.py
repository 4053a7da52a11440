"""`ml-assets`: add tenants, run the local Ray head, run the demo and print what it made."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from ml_assets import churn_data
from ml_assets.settings import PROJECT_ROOT, Settings, load_settings
from ml_assets.tenants import Tenant


def _instance(settings: Settings):
    import dagster as dg

    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", config)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    return dg.DagsterInstance.get()


def tenant_add(settings: Settings, key: str, spec: churn_data.ChurnDataSpec,
               regenerate: bool = False) -> Tenant:
    """Register the tenant partition and write its source data (unless it already exists)."""
    from ml_assets.tenants import add_tenant

    tenant = Tenant(key)
    if regenerate or not (settings.raw_data_dir / tenant.key).exists():
        churn_data.write(tenant.key, spec, settings.raw_data_dir)
    with _instance(settings) as instance:
        add_tenant(instance, tenant.key)
    return tenant


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_up(settings: Settings) -> str:
    """Start (or reuse) the local Ray head every step of this state folder connects to."""
    if settings.ray_address and _reachable(settings.ray_address):
        return settings.ray_address
    port = _free_port()  # not 6379, Ray's default: Redis holds it on these machines
    ensure_ray_token()
    subprocess.run(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}",
         "--node-ip-address=127.0.0.1", f"--num-cpus={settings.ray_num_cpus}",
         "--include-dashboard=false", "--disable-usage-stats"],
        check=True, stdout=subprocess.DEVNULL, env=_ray_env(),
    )
    address = f"127.0.0.1:{port}"
    settings.ray_address_file.parent.mkdir(parents=True, exist_ok=True)
    settings.ray_address_file.write_text(address)
    return address


def _ray_env() -> dict[str, str]:
    # Token auth on: the cluster and its clients share ~/.ray/auth_token
    return {**os.environ, "RAY_AUTH_MODE": "token"}


def ensure_ray_token() -> None:
    """Create ~/.ray/auth_token if this machine has none: `ray start --head` with token auth
    refuses to start without one (only `ray.init` creates it), e.g. on a fresh machine."""
    subprocess.run([str(Path(sys.executable).with_name("ray")), "get-auth-token", "--generate"],
                   check=True, stdout=subprocess.DEVNULL, env=_ray_env())


def ray_down(settings: Settings) -> None:
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop"], check=False)
    settings.ray_address_file.unlink(missing_ok=True)


def materialize(settings: Settings, tenant: Tenant, ray_address: str,
                select: str | None = None) -> None:
    """The whole churn_model_job for the tenant, or only the selected assets."""
    env = {**_ray_env(), "RAY_ADDRESS": ray_address, "DAGSTER_HOME": str(settings.dagster_home)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    if select is None:
        command = [dagster, "job", "execute", "-m", "ml_assets.definitions",
                   "-j", "churn_model_job", "--tags", json.dumps({"dagster/partition": tenant.key})]
    else:
        command = [dagster, "asset", "materialize", "-m", "ml_assets.definitions",
                   "--select", select, "--partition", tenant.key]
    subprocess.run(command, check=True, env=env, cwd=PROJECT_ROOT)


def _registry(settings: Settings):
    from ml_assets.resources import build_resources

    resources = build_resources(settings)
    return resources["mlflow"].client(), resources["events"]


def promote(settings: Settings, tenant: Tenant, version: str, reason: str) -> str:
    from ml_assets.defs.registry import stages

    client, events = _registry(settings)
    moved = stages.transition(client, events, tenant, version, stages.PRODUCTION, reason,
                              actor=f"cli:{getpass.getuser()}")
    return f"tenant {tenant.key}: version {moved.version} is Production"


def rollback(settings: Settings, tenant: Tenant) -> str:
    from ml_assets.defs.registry.promotion import rollback as rollback_version

    client, events = _registry(settings)
    moved = rollback_version(client, events, tenant,
                             actor=f"cli:{getpass.getuser()}")
    materialize(settings, tenant, ray_up(settings), select="deployed_endpoint")
    return f"tenant {tenant.key}: rolled back to version {moved.version}, redeployed"


def route(settings: Settings, tenant: Tenant, canary_weight: int) -> str:
    """Send canary_weight percent of the tenant's request keys to its Staging version."""
    from ml_assets.resources.ray import RayCluster
    from ml_assets.routing import set_canary_weight

    if not settings.ray_address or not _reachable(settings.ray_address):
        raise ValueError("no Ray cluster serves the endpoint: set RAY_ADDRESS or run `make demo`")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    client, events = _registry(settings)
    RayCluster(address=settings.ray_address).connect()
    moved = set_canary_weight(client, events, tenant, canary_weight,
                              actor=f"cli:{getpass.getuser()}")
    canary = f"canary version {moved.canary} on {moved.canary_weight} % of keys" \
        if moved.canary else "no canary"
    return f"tenant {tenant.key}: version {moved.primary} serves, {canary}"


def history(settings: Settings, tenant: Tenant, at: str | None) -> str:
    from datetime import datetime

    from ml_assets.defs.registry.ledger import production_at, production_history

    _, events = _registry(settings)
    if at is not None:
        when = datetime.fromisoformat(at)
        version = production_at(events.outbox(), tenant, when)
        return f"tenant {tenant.key} at {when.isoformat()}: Production = {version or 'none'}"
    lines = [f"{'version':>8}  {'since':32}  {'until':32}  by / reason"]
    for spell in production_history(events.outbox(), tenant):
        until = spell.until.isoformat() if spell.until else "(now)"
        lines.append(f"{spell.version:>8}  {spell.since.isoformat():32}  {until:32}  "
                     f"{spell.promoted_by} / {spell.reason}")
    return "\n".join(lines)


def summary(settings: Settings, tenant: Tenant) -> str:
    """What the graph made for the tenant: version, stage, metrics, endpoint and a curl."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from ml_assets.defs.registry import stages
    from ml_assets.defs.serving.assets import input_example
    from ml_assets.resources import build_resources

    resources = build_resources(settings)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    versions = client.search_model_versions(f"name = '{tenant.registered_model_name}'")
    if not versions:
        return f"tenant {tenant.key!r} has no registered model yet"
    latest = max(versions, key=lambda v: int(v.version))
    run = client.get_run(latest.run_id)
    metrics = {k: round(v, 4) for k, v in sorted(run.data.metrics.items())
               if k.startswith("holdout_")}
    url = resources["serve_endpoint"].url(tenant)
    row = input_example(f"models:/{latest.name}/{latest.version}")[0]
    body = json.dumps({"rows": [row]})
    entity = churn_data.ENTITY
    customers = pd.read_parquet(resources["feast"].activity_path(tenant), columns=[entity])
    by_id = json.dumps({"customer_ids": sorted(int(c) for c in customers[entity].unique()[:2])})
    return "\n".join([
        f"tenant:           {tenant.key}",
        f"registered model: {latest.name} version {latest.version} "
        f"(stage {stages.stage_of(latest)})",
        f"holdout metrics:  {json.dumps(metrics)}",
        f"mlflow run:       {latest.run_id}",
        f"endpoint:         POST {url}",
        "try it:",
        f"  curl -s -X POST {url} -H 'content-type: application/json' -d '{body}'",
        "  # or by customer id, features from the online store:",
        f"  curl -s -X POST {url} -H 'content-type: application/json' -d '{by_id}'",
    ])


def api_key_command(settings: Settings, args: argparse.Namespace) -> str:
    """Create (for a registered tenant), list or revoke ML Service API keys."""
    from ml_assets.service.keys import KeyStore, Role

    keys = KeyStore(settings.api_keys_path)
    if args.action == "create":
        from ml_assets.tenants import registered_tenants

        tenant = Tenant(args.tenant)
        with _instance(settings) as instance:
            if tenant.key not in registered_tenants(instance):
                raise ValueError(f"tenant {tenant.key!r} is not registered: "
                                 f"run `ml-assets tenant add {tenant.key}` first")
        key, token = keys.create(tenant, Role[args.role])
        return (f"API key {key.id} for tenant {tenant.key}, role {key.role.name} "
                f"(shown once, store it now):\n{token}")
    if args.action == "list":
        return "\n".join(f"{k.id}  {k.tenant.key:40}  {k.role.name:9}  {k.created_at}"
                         for k in keys.list())
    if not keys.revoke(args.key_id):
        raise ValueError(f"no active API key {args.key_id!r}")
    return f"API key {args.key_id} revoked"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="action", required=True)
    add = tenant.add_parser("add", help="register a tenant and generate its source data")
    add.add_argument("name")
    add.add_argument("--customers", type=int, default=2000)
    add.add_argument("--churn-rate", type=float, default=0.25)
    add.add_argument("--drift", type=float, default=0.0)
    add.add_argument("--seed", type=int, default=7)
    add.add_argument("--regenerate", action="store_true", help="overwrite existing source data")
    tenant.add_parser("list", help="registered tenants")
    ray = commands.add_parser("ray", help="the local Ray head").add_subparsers(
        dest="action", required=True)
    ray.add_parser("up")
    ray.add_parser("down")
    commands.add_parser("bootstrap", help="create the bucket and events topic the settings name")
    demo = commands.add_parser("demo", help="run the whole graph for a demo tenant")
    demo.add_argument("--tenant", default="demo")
    promote_cmd = commands.add_parser("promote", help="move a Staging version to Production")
    promote_cmd.add_argument("tenant")
    promote_cmd.add_argument("version")
    promote_cmd.add_argument("--reason", default="promoted from the CLI")
    rollback_cmd = commands.add_parser(
        "rollback", help="put the previous Production version back and redeploy")
    rollback_cmd.add_argument("tenant")
    history_cmd = commands.add_parser("history", help="the tenant's Production versions over time")
    history_cmd.add_argument("tenant")
    history_cmd.add_argument("--at", help="ISO time (with offset): which version was Production")
    route_cmd = commands.add_parser(
        "route", help="canary traffic: percent of request keys on the Staging version "
        "(0 aborts the canary, 100 promotes it)")
    route_cmd.add_argument("tenant")
    route_cmd.add_argument("--canary", type=int, required=True, metavar="PERCENT")
    show = commands.add_parser("summary", help="what the graph made for a tenant")
    show.add_argument("tenant")
    commands.add_parser("serve-api", help="the ML Service API (port 8000 unless "
                        "ML_ASSETS_API_PORT says otherwise)")
    api_key = commands.add_parser("api-key", help="API keys of the ML Service").add_subparsers(
        dest="action", required=True)
    key_create = api_key.add_parser("create", help="a key for one tenant; prints it once")
    key_create.add_argument("tenant")
    key_create.add_argument("--role", choices=["viewer", "trainer", "promoter"], default="viewer")
    api_key.add_parser("list", help="active keys (ids, tenants, roles; never secrets)")
    key_revoke = api_key.add_parser("revoke")
    key_revoke.add_argument("key_id")
    args = parser.parse_args(argv)
    settings = load_settings()

    try:
        if args.command == "tenant" and args.action == "add":
            spec = churn_data.ChurnDataSpec(customers=args.customers, churn_rate=args.churn_rate,
                                            drift=args.drift, seed=args.seed)
            print(f"tenant {tenant_add(settings, args.name, spec, args.regenerate).key} ready")
        elif args.command == "tenant":
            from ml_assets.tenants import registered_tenants

            with _instance(settings) as instance:
                print("\n".join(registered_tenants(instance)))
        elif args.command == "ray" and args.action == "up":
            print(ray_up(settings))
        elif args.command == "ray":
            ray_down(settings)
        elif args.command == "demo":
            demo_tenant = tenant_add(settings, args.tenant, churn_data.ChurnDataSpec())
            materialize(settings, demo_tenant, ray_up(settings))
            print(summary(load_settings(), demo_tenant))
        elif args.command == "bootstrap":
            from ml_assets.resources import bootstrap, build_resources

            bootstrap(build_resources(settings))
            print("bootstrapped")
        elif args.command == "promote":
            print(promote(settings, Tenant(args.tenant), args.version, args.reason))
        elif args.command == "rollback":
            print(rollback(settings, Tenant(args.tenant)))
        elif args.command == "history":
            print(history(settings, Tenant(args.tenant), args.at))
        elif args.command == "summary":
            print(summary(settings, Tenant(args.tenant)))
        elif args.command == "route":
            print(route(settings, Tenant(args.tenant), args.canary))
        elif args.command == "serve-api":
            from ml_assets.service.app import serve

            serve(settings)
        elif args.command == "api-key":
            print(api_key_command(settings, args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"ml-assets: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"ml-assets: {' '.join(exc.cmd[:3])}... failed with exit {exc.returncode}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
