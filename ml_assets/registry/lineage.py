"""Verified lineage: a version is servable and promotable only if its model was logged by its
own run, that run lives in the tenant's experiment and trained the version's use case, and the
version carries the lineage the graph writes. A version made with the MLflow client from another
tenant's run fails here.

Checked by every stage move into Staging or Production (so every promote path), the
stage-change sensor, `deployed_endpoint` and the Serve replica before it loads a version."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_assets.registry.stages import StageTransitionError
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

LINEAGE_TAGS = ("run_id", "data_version", "dagster_run_id")  # written by registered_model


class LineageError(StageTransitionError):
    """A version whose origin is not the tenant's own training run."""


def problems(client: MlflowClient, tenant: Tenant, version: ModelVersion) -> list[str]:
    """What is wrong with the version's lineage; empty when it is verified."""
    from mlflow.exceptions import MlflowException

    if version.name != tenant.registered_model_name:
        return [f"registered model {version.name!r} is not tenant {tenant.key!r}'s"]
    tags = version.tags or {}
    missing = [tag for tag in LINEAGE_TAGS if not tags.get(tag)]
    if missing:
        return [f"lineage tags {missing} missing"]
    if version.run_id != tags["run_id"]:
        return [f"its run {version.run_id!r} is not the run its lineage names ({tags['run_id']})"]
    experiment = client.get_experiment_by_name(tenant.experiment_name)
    try:
        run = client.get_run(version.run_id)
    except MlflowException:
        return [f"its run {version.run_id} does not exist"]
    if experiment is None or run.info.experiment_id != experiment.experiment_id:
        return [f"its run {version.run_id} is not in the tenant's experiment "
                f"{tenant.experiment_name!r}"]
    found = []
    # runs before use cases carry no tag: they were churn's
    trained_for = run.data.tags.get("use_case", "churn")
    if trained_for != tenant.use_case:
        found.append(f"its run {version.run_id} trained use case {trained_for!r}, not "
                     f"{tenant.use_case!r}")
    if run.data.tags.get("data_version") != tags["data_version"]:
        found.append(f"data_version {tags['data_version']!r} is not its run's "
                     f"({run.data.tags.get('data_version')!r})")
    logged_by = _source_run(client, version)
    if logged_by != version.run_id:
        found.append(f"its model {version.source!r} was not logged by its run {version.run_id}")
    return found


def _source_run(client: MlflowClient, version: ModelVersion) -> str | None:
    """The run that logged the model a version points at (None if it cannot be told)."""
    from mlflow.exceptions import MlflowException

    source = version.source or ""
    model_id = getattr(version, "model_id", None) or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else None)
    if model_id:
        try:
            return client.get_logged_model(model_id).source_run_id
        except MlflowException:
            return None
    if source.startswith("runs:/"):
        return source.removeprefix("runs:/").split("/", 1)[0]
    return None


def verify(client: MlflowClient, tenant: Tenant, version: ModelVersion) -> None:
    """LineageError naming every problem, unless the version's lineage is verified."""
    found = problems(client, tenant, version)
    if found:
        raise LineageError(f"version {version.version} of tenant {tenant.key!r} has no "
                           f"verified lineage: {'; '.join(found)}")
