"""`ml-assets demo|deploy|summary`: run the graph (or only the endpoint) for a tenant and show
what it made."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ml_assets import names, schema, use_case
from ml_assets.cli.ray_cluster import ray_env, ray_up
from ml_assets.cli.tenants import tenant_add
from ml_assets.data import churn_data
from ml_assets.settings import PROJECT_ROOT, Settings, load_settings
from ml_assets.tenants import Tenant


def materialize(settings: Settings, tenant: Tenant, ray_address: str,
                select: str | None = None, config: dict | None = None) -> None:
    """The whole churn_model_job for the tenant, or only the selected assets."""
    env = {**ray_env(), "RAY_ADDRESS": ray_address, "DAGSTER_HOME": str(settings.dagster_home)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    if select is None:
        command = [dagster, "job", "execute", "-m", "ml_assets.definitions",
                   "-j", names.CHURN_MODEL_JOB,
                   "--tags", json.dumps({"dagster/partition": tenant.key})]
    else:
        command = [dagster, "asset", "materialize", "-m", "ml_assets.definitions",
                   "--select", select, "--partition", tenant.key,
                   *(["--config-json", json.dumps(config)] if config else [])]
    subprocess.run(command, check=True, env=env, cwd=PROJECT_ROOT)


def summary(settings: Settings, tenant: Tenant, token: str | None = None) -> str:
    """What the graph made for the tenant: version, stage, metrics, endpoint and a curl (with
    the API key `token`, else a placeholder for one)."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from ml_assets.registry import stages
    from ml_assets.resources import build_resources
    from ml_assets.serving.client import input_example

    resources = build_resources(settings)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    versions = client.search_model_versions(f"name = '{tenant.registered_model_name}'")
    if not versions:
        return f"tenant {tenant.key!r} has no registered model yet"
    newest = max(versions, key=lambda v: int(v.version))
    # search results may omit aliases, which decide the stage: read the version itself
    latest = client.get_model_version(newest.name, newest.version)
    run = client.get_run(latest.run_id)
    metrics = {k: round(v, 4) for k, v in sorted(run.data.metrics.items())
               if k.startswith("holdout_")}
    url = resources["serve_endpoint"].url(tenant)
    row = input_example(f"models:/{latest.name}/{latest.version}")[0]
    body = json.dumps({"rows": [row]})
    churn = use_case.load("churn")
    activity = resources["feast"].source_path(tenant, churn, churn.feature_views[0].name)
    customers = pd.read_parquet(activity, columns=[schema.ENTITY])
    by_id = json.dumps({"customer_ids": sorted(
        int(c) for c in customers[schema.ENTITY].unique()[:2])})
    key = token or "$ML_ASSETS_KEY"
    auth = f"-H 'authorization: Bearer {key}'" if token else f'-H "authorization: Bearer {key}"'
    return "\n".join([
        f"tenant:           {tenant.key}",
        f"registered model: {latest.name} version {latest.version} "
        f"(stage {stages.stage_of(latest)})",
        f"holdout metrics:  {json.dumps(metrics)}",
        f"mlflow run:       {latest.run_id}",
        f"endpoint:         POST {url}",
        *([] if token else ["a key: export ML_ASSETS_KEY=$(ml-assets api-key create "
                            f"{tenant.key} --role predict | tail -1)"]),
        "try it:",
        f"  curl -s -X POST {url} {auth} \\",
        f"    -H 'content-type: application/json' -d '{body}'",
        "  # or by customer id, features from the online store:",
        f"  curl -s -X POST {url} {auth} \\",
        f"    -H 'content-type: application/json' -d '{by_id}'",
    ])


def _demo(settings: Settings, args: argparse.Namespace) -> str:
    from ml_assets.access.keys import KeyStore, Role

    tenant = tenant_add(settings, args.tenant, churn_data.ChurnDataSpec())
    materialize(settings, tenant, ray_up(settings))
    # a key for the curl below: predictions need one (shown once, like `ml-assets api-key`)
    _, token = KeyStore(settings.api_keys_path).create(tenant, Role.staging)
    return summary(load_settings(), tenant, token)


def _deploy(settings: Settings, args: argparse.Namespace) -> str:
    tenant = Tenant(args.tenant)
    if args.engine is None:  # the route keeps its engine
        materialize(settings, tenant, ray_up(settings), select=names.DEPLOYED_ENDPOINT)
        return f"tenant {tenant.key}: deployed what its registry stages say"
    if args.engine == "triton":
        from ml_assets.cli.triton import triton_up

        triton_up(settings)
    config = {"ops": {names.TRITON_ENDPOINT: {"config": {"engine": args.engine}}}}
    materialize(settings, tenant, ray_up(settings), config=config,
                select=f"{names.DEPLOYED_ENDPOINT},{names.TRITON_ENDPOINT}")
    return f"tenant {tenant.key}: deployed, its production route scored by {args.engine}"


def add_commands(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("demo", help="run the whole graph for a demo tenant")
    cmd.add_argument("--tenant", default="demo")
    cmd.set_defaults(run=_demo)
    cmd = commands.add_parser("deploy", help="materialize the tenant's deployed_endpoint (what "
                              "the stage-change sensor does when the daemon runs)")
    cmd.add_argument("tenant")
    cmd.add_argument("--engine", choices=["ray", "triton"],
                     help="what scores the production route from now on: the Serve replica, "
                     "or its Production version on Triton (starts the local server); default: "
                     "what it is now")
    cmd.set_defaults(run=_deploy)
    cmd = commands.add_parser("summary", help="what the graph made for a tenant")
    cmd.add_argument("tenant")
    cmd.set_defaults(run=lambda s, a: summary(s, Tenant(a.tenant)))
