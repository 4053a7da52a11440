"""Real (untrained) churn models with the lineage the graph writes: registry, serving and
monitoring tests (and the serving benchmark) need versions, not a 30 s training run."""

from __future__ import annotations

from ml_assets.schema import FEATURES
from ml_assets.tenants import Tenant

UNTRAINED = "untrained"  # the data version of the runs below


def log_untrained_models(registry, tenants: list[str], count: int = 1, seed: int = 0,
                         hidden: tuple[int, ...] = (4,)) -> dict[str, list[str]]:
    """{tenant: [model URI, ...]}: models logged by one run in each tenant's experiment, the
    i-th initialised with seed + i."""
    import mlflow
    import pandas as pd
    import torch
    from mlflow import pytorch as mlflow_pytorch

    from ml_assets.training.model import ChurnMLP, ChurnModel

    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    n = len(FEATURES)
    example = pd.DataFrame([[1.0] * n], columns=FEATURES)
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    uris: dict[str, list[str]] = {}
    for key in tenants:
        run_id = registry.start_run(Tenant(key), UNTRAINED, tags={"data_version": UNTRAINED})
        for i in range(count):
            torch.manual_seed(seed + i)
            model = ChurnModel(ChurnMLP(n, list(hidden), 0.0), torch.zeros(n), torch.zeros(n),
                               torch.ones(n))
            with mlflow.start_run(run_id=run_id):
                # given, not inferred: inferring them loads the model in a subprocess (seconds)
                info = mlflow_pytorch.log_model(model, name=f"model{i}", input_example=example,
                                                serialization_format="pickle",
                                                pip_requirements=requirements)
            uris.setdefault(key, []).append(info.model_uri)
    return uris


def lineage_tags(registry, model_uri: str) -> dict[str, str]:
    """The tags registered_model writes, for a model logged as above: its run, that run's data
    version, and a Dagster run id standing for the test."""
    client = registry.client()
    run_id = client.get_logged_model(model_uri.removeprefix("models:/")).source_run_id
    data_version = client.get_run(run_id).data.tags.get("data_version", "")
    return {"run_id": run_id, "data_version": data_version, "dagster_run_id": "pytest"}


def register(registry, tenant: Tenant, model_uri: str) -> str:
    """A registered version (stage None) of the model, with its lineage."""
    from ml_assets.registry.actions import register_version

    tags = lineage_tags(registry, model_uri)
    return str(register_version(registry, tenant, model_uri, tags).version)


def two_versions(mlflow, events, tenant: Tenant) -> tuple[str, str]:
    """Two real (untrained) registered versions of the tenant: v1 Production, v2 Staging."""
    from ml_assets.registry import stages

    uris = log_untrained_models(mlflow, [tenant.key], count=2)[tenant.key]
    v1, v2 = (register(mlflow, tenant, uri) for uri in uris)
    client = mlflow.client()
    for version in (v1, v2):
        stages.transition(client, events, tenant, version, stages.STAGING, "test", "pytest")
    stages.transition(client, events, tenant, v1, stages.PRODUCTION, "test", "pytest")
    return v1, v2


def production_version(registry, events, tenant: Tenant, seed: int = 0,
                       hidden: tuple[int, ...] = (4,)) -> str:
    """A real (untrained) registered version of the tenant, moved to Production."""
    from ml_assets.registry import stages

    uri = log_untrained_models(registry, [tenant.key], seed=seed, hidden=hidden)[tenant.key][0]
    version = register(registry, tenant, uri)
    client = registry.client()
    for stage in (stages.STAGING, stages.PRODUCTION):
        stages.transition(client, events, tenant, version, stage, "test", "pytest")
    return version
