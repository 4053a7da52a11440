"""A tenant's LLM in MLflow: a Hugging Face format directory logged as a model of a run in the
tenant's experiment, registered under its own name (`{tenant}-llm`) with the graph's lineage
tags. The stage layer (registry/stages.py, lineage.py) works on it unchanged through `LlmTenant`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ml_assets.registry import lineage, stages
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from ml_assets.resources.mlflow import MlflowRegistry

LLM_SUFFIX = "-llm"
REQUIRED_FILES = ("config.json",)  # what vLLM reads first; a directory without it is no model


@dataclass(frozen=True)
class LlmTenant(Tenant):
    """The tenant seen through its LLM: same experiment, prefix and route, the LLM's model name.
    Pass it to `stages` and `lineage` to move and verify LLM versions."""

    @property
    def registered_model_name(self) -> str:
        return f"{self.key}{LLM_SUFFIX}"


def directory_version(model_dir: Path) -> str:
    """A content hash of the directory: the LLM's `data_version` lineage tag."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(path.relative_to(model_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def log_llm(mlflow: MlflowRegistry, tenant: LlmTenant, model_dir: Path, run_name: str,
            tags: dict[str, str] | None = None) -> tuple[str, str, str]:
    """Log the directory as a model of a new run in the tenant's experiment:
    (model URI, run id, data version)."""
    missing = [name for name in REQUIRED_FILES if not (Path(model_dir) / name).is_file()]
    if missing:
        raise ValueError(f"{model_dir} is not a Hugging Face model directory: no {missing}")
    from mlflow.entities import LoggedModelStatus

    data_version = directory_version(Path(model_dir))
    run_id = mlflow.start_run(tenant, run_name, tags={"data_version": data_version,
                                                     **(tags or {})})
    client = mlflow.client()
    model = client.create_logged_model(mlflow.experiment_id(tenant), name="llm",
                                       source_run_id=run_id, model_type="llm")
    client.log_model_artifacts(model.model_id, str(model_dir))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.set_terminated(run_id)
    return f"models:/{model.model_id}", run_id, data_version


def register_llm(mlflow: MlflowRegistry, tenant: LlmTenant, model_uri: str, run_id: str,
                 data_version: str, dagster_run_id: str) -> ModelVersion:
    """A version (stage None) of the tenant's LLM with its lineage tags."""
    from mlflow.exceptions import MlflowException

    client = mlflow.client()
    name = tenant.registered_model_name
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={"tenant": tenant.key, "kind": "llm"},
                                       description=f"LLM of tenant {tenant.key} (served on vLLM)")
    tags = {"run_id": run_id, "data_version": data_version, "dagster_run_id": dagster_run_id}
    return client.create_model_version(name, source=model_uri, run_id=run_id,
                                       tags={**tags, stages.STAGE_TAG: stages.NONE},
                                       model_id=model_uri.removeprefix("models:/"))


def production_llm(mlflow: MlflowRegistry, tenant: LlmTenant) -> str:
    """The tenant's Production LLM version, its lineage verified; StageTransitionError if none."""
    client = mlflow.client()
    version = stages.version_with_alias(client, tenant, stages.PRODUCTION)
    if version is None:
        raise stages.StageTransitionError(f"tenant {tenant.key!r} has no Production LLM version")
    lineage.verify(client, tenant, version)
    return str(version.version)


def download_llm(mlflow: MlflowRegistry, tenant: LlmTenant, version: str, root: Path) -> Path:
    """The version's directory under root/{name}/{version} (downloaded once)."""
    target = Path(root) / tenant.registered_model_name / str(version)
    if (target / REQUIRED_FILES[0]).is_file():
        return target
    import mlflow as mlflow_api

    partial = target.with_name(f"{version}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    mlflow_api.artifacts.download_artifacts(
        artifact_uri=f"models:/{tenant.registered_model_name}/{version}",
        dst_path=str(partial), tracking_uri=mlflow.tracking_uri)
    partial.rename(target)  # complete or absent: a crashed download is not served
    return target
