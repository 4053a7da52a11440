"""How the code location's steps run: in processes here, one Kubernetes Job per step on the
cluster (ML_ASSETS_EXECUTOR=k8s, deploy/), each Job sized for what its asset does."""

from __future__ import annotations

import dagster as dg

from ml_assets import names
from ml_assets.settings import Settings
from ml_assets.use_case import names as use_case_names

# A Ray driver must run on a node of its cluster: Ray Client (ray://) cannot run Ray Data
# (`'Worker' object has no attribute 'core_worker'`, Ray 2.60). So a step pod first joins the
# cluster at RAY_ADDRESS (a GCS address) as a node with no resources, then runs the step, whose
# ray.init(address=RAY_ADDRESS) attaches to that local node: the path of `ml-assets ray up`.
JOIN_RAY_CLUSTER = [
    "/bin/bash", "-c",
    'ray start --address="$RAY_ADDRESS" --num-cpus=0 --num-gpus=0 --disable-usage-stats '
    '&& exec "$@"',
    "join-ray-cluster",
]


def _resources(cpu: str, memory: str) -> dict:
    return {"container_config": {
        "command": JOIN_RAY_CLUSTER,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
    }}


# dagster-k8s/config of a step pod (dagster sets its args). Ray does the heavy work on its own
# cluster; a step pod holds what its asset keeps in memory (joined features, holdout and model).
DEFAULT_STEP_K8S_CONFIG = _resources("500m", "2Gi")
STEP_K8S_CONFIG: dict[str, dict] = {  # by asset; the step of each use case's asset gets it
    names.TRAINING_FEATURES: _resources("2", "8Gi"),
    names.TRAINED_MODEL: _resources("1", "4Gi"),
    names.EVALUATION_REPORT: _resources("2", "4Gi"),
    names.REGISTERED_MODEL: _resources("250m", "1Gi"),
}
SERVING_STEPS = (names.DEPLOYED_ENDPOINT, names.TRITON_ENDPOINT)  # they set tenants' routes


def step_k8s_config(settings: Settings) -> dict[str, dict]:
    """Per-step overrides; the serving steps talk to the Serve cluster if it has its own (a
    KubeRay RayService next to the batch RayCluster)."""
    per_asset = dict(STEP_K8S_CONFIG)
    if settings.serve_ray_address:
        for asset in SERVING_STEPS:
            serving = per_asset.get(asset, DEFAULT_STEP_K8S_CONFIG)
            container = {**serving["container_config"],
                         "env": [{"name": "RAY_ADDRESS", "value": settings.serve_ray_address}]}
            per_asset[asset] = {**serving, "container_config": container}
    return {names.op_name(use_case, asset): config for use_case in use_case_names()
            for asset, config in per_asset.items()}


# What the steps import. Forked from a server that imported them once per run, a step starts
# in ~1 s instead of re-importing them (bench/graph.py: one warm tenant's graph 64 s spawned
# -> 36 s forked, same run).
PRELOAD_MODULES = ["ml_assets.definitions", "ml_assets.data.feature_repo.offline_store",
                   "ray.train.torch", "ray.serve", "mlflow.pytorch", "sklearn.metrics"]


def _multiprocess(config: dict) -> dict:
    method = config.get("start_method", "forkserver")  # defaults are not applied before this
    return {**({"max_concurrent": config["max_concurrent"]} if "max_concurrent" in config else {}),
            "start_method": {method: {"preload_modules": PRELOAD_MODULES}
                             if method == "forkserver" else {}}}


# Dagster's multiprocess executor, its steps forked from a preloaded forkserver unless a run
# asks for `spawn` (Dagster's own default)
preloaded_multiprocess_executor = dg.multiprocess_executor.configured(
    _multiprocess, name="multiprocess",
    config_schema={
        "start_method": dg.Field(
            dg.Enum("StartMethod", [dg.EnumValue("forkserver"), dg.EnumValue("spawn")]),
            default_value="forkserver"),
        "max_concurrent": dg.Field(int, is_required=False, description="default: one per CPU"),
    })


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """The k8s_job_executor on the cluster; here, processes forked from a preloaded server."""
    if settings.executor != "k8s":
        return preloaded_multiprocess_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(
        {"step_k8s_config": DEFAULT_STEP_K8S_CONFIG,
         "per_step_k8s_config": step_k8s_config(settings)},
        name="k8s",
    )
