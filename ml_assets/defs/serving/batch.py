"""Batch scoring: every customer of the tenant scored by its Production model on Ray Data."""

import uuid

import dagster as dg
import pandas as pd
from pydantic import Field

from ml_assets import names, use_case
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.registry import actions
from ml_assets.resources.feast import FeastStore
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.ray import RayCluster
from ml_assets.schema import ENTITY, FEATURES, TIMESTAMP
from ml_assets.tenants import Tenant


class BatchConfig(dg.Config):
    """How the scoring is split on the cluster."""

    batch_size: int = Field(4096, ge=1, description="rows per map_batches call")


class Scorer:
    """A Ray Data actor: loads the model once, scores pandas batches."""

    def __init__(self, tenant: str, version: str, tracking_uri: str) -> None:
        import mlflow
        import mlflow.pytorch

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        uri = f"models:/{Tenant(tenant).registered_model_name}/{version}"
        self.model, self.version = mlflow.pytorch.load_model(uri).eval(), version

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import torch

        with torch.no_grad():
            matrix = torch.tensor(batch[FEATURES].to_numpy(dtype="float32"))
            batch["prediction"] = self.model(matrix).numpy().astype("float64")
        batch["model_version"] = self.version
        return batch


def latest_features(feast: FeastStore, tenant: Tenant) -> pd.DataFrame:
    """Each customer's features as of the newest activity (a point-in-time join at that time)."""
    churn = use_case.load("churn")
    activity = pd.read_parquet(feast.source_path(tenant, churn, churn.feature_views[0].name),
                               columns=[ENTITY, TIMESTAMP])
    as_of = activity[TIMESTAMP].max() + pd.Timedelta(seconds=1)
    entities = pd.DataFrame({ENTITY: activity[ENTITY].unique(), TIMESTAMP: as_of})
    frame = feast.historical_features(tenant, churn, entities)
    return frame[[ENTITY, *FEATURES]].sort_values(ENTITY, ignore_index=True)


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="serving",
    kinds={"ray", "pytorch", "parquet", "s3"},
    deps=[names.REGISTERED_MODEL],  # scores with the registry's Production version
)
def batch_predictions(
    context: dg.AssetExecutionContext,
    config: BatchConfig,
    ray: RayCluster,
    mlflow: MlflowRegistry,
    feast: FeastStore,
    object_store: ObjectStore,
) -> dg.Output[dict]:
    """Churn probability of every customer of the tenant, from its latest features, scored by
    the Production version with Ray Data `map_batches`; parquet in the tenant's object store."""
    tenant = Tenant(context.partition_key)
    version = actions.production_version(mlflow.client(), tenant)
    object_store.check()
    features = latest_features(feast, tenant)

    ray.connect()
    import ray as ray_lib

    scored = ray_lib.data.from_pandas(features).map_batches(
        Scorer, batch_size=config.batch_size, batch_format="pandas", concurrency=1,
        fn_constructor_kwargs={"tenant": tenant.key, "version": version,
                               "tracking_uri": mlflow.tracking_uri},
    ).materialize()
    key = f"batch_predictions/{context.run_id or uuid.uuid4().hex}"
    scored.write_parquet(object_store.path(tenant, key), filesystem=object_store.filesystem())
    rows = len(features)
    return dg.Output(
        {"uri": object_store.uri(tenant, key), "key": key, "version": version, "rows": rows},
        metadata={"uri": object_store.uri(tenant, key), "version": version, "rows": rows,
                  "mean_prediction": dg.MetadataValue.float(
                      float(scored.mean("prediction")))},
    )
