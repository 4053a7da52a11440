"""MLflow tracking and registry, per tenant: one experiment and one registered model each.

Our own resource rather than dagster-mlflow's `mlflow_tracking`: that one is op-era
(`@resource(config_schema=...)`) and its run-end hook ends runs early (dagster-io/dagster#21872).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg

from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


class MlflowRegistry(dg.ConfigurableResource):
    """Tracking + registry at one URI; experiments and model names derive from the tenant."""

    tracking_uri: str
    artifact_root: str | None = None  # None: the tracking server's default artifact root
    ui_url: str | None = None  # the MLflow UI, for links in the Dagster UI; None: no links

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # MLflow's fluent API (log_model, load_model, register) and its internal clients read
        # the process-global URIs; a step process talks to one server, so set them once here.
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def experiment_id(self, tenant: Tenant) -> str:
        client = self.client()
        experiment = client.get_experiment_by_name(tenant.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{tenant.key}" if self.artifact_root else None
        return client.create_experiment(
            tenant.experiment_name, artifact_location=location, tags={"tenant": tenant.key}
        )

    def start_run(self, tenant: Tenant, run_name: str, tags: dict[str, str]) -> str:
        run = self.client().create_run(
            self.experiment_id(tenant), run_name=run_name, tags={**tags, "tenant": tenant.key}
        )
        return run.info.run_id

    def tenant_run(self, tenant: Tenant, run_id: str) -> Run:
        """The run, only if it belongs to the tenant's experiment."""
        run = self.client().get_run(run_id)
        if run.info.experiment_id != self.experiment_id(tenant):
            raise PermissionError(f"run {run_id} is not in tenant {tenant.key!r}'s experiment")
        return run

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return self.client().get_metric_history(run_id, key)

    def run_links(self, tenant: Tenant, run_id: str) -> dict[str, dg.MetadataValue]:
        """`mlflow_run` metadata: a link to the run in the MLflow UI, when there is one; only
        for a run in the tenant's experiment."""
        if not self.ui_url:
            return {}
        experiment_id = self.tenant_run(tenant, run_id).info.experiment_id
        url = f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return {"mlflow_run": dg.MetadataValue.url(url)}

    def version_links(self, name: str, version: str) -> dict[str, dg.MetadataValue]:
        """`mlflow_model_version` metadata: a link to the registered version in the MLflow UI."""
        if not self.ui_url:
            return {}
        from urllib.parse import quote

        url = f"{self.ui_url.rstrip('/')}/#/models/{quote(name)}/versions/{version}"
        return {"mlflow_model_version": dg.MetadataValue.url(url)}
