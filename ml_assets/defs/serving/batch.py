"""Batch scoring: every customer of the tenant scored by its Production model on Ray Data."""

import uuid

import dagster as dg
import pandas as pd
from pydantic import Field

from ml_assets import names
from ml_assets.defs.features.assets import TIMESTAMP
from ml_assets.defs.scope import tenant_of, use_case_asset, use_case_of
from ml_assets.registry import actions, stages
from ml_assets.resources.feast import FeastStore
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.ray import RayCluster
from ml_assets.serving.models import family_of
from ml_assets.tenants import Tenant
from ml_assets.use_case import UseCase, load


class BatchConfig(dg.Config):
    """How the scoring is split on the cluster."""

    batch_size: int = Field(4096, ge=1, description="rows per map_batches call")


class Scorer:
    """A Ray Data actor: loads the model once, scores pandas batches."""

    def __init__(self, tenant: str, use_case: str, version: str, family: str,
                 tracking_uri: str) -> None:
        import mlflow

        from ml_assets.serving.models import load_predictor

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        uri = f"models:/{Tenant(tenant, use_case).registered_model_name}/{version}"
        self.predict, self.version = load_predictor(uri, family), version
        self.features = load(use_case).features

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        matrix = batch[self.features].to_numpy(dtype="float32")
        batch["prediction"] = self.predict(matrix).astype("float64")
        batch["model_version"] = self.version
        return batch


def latest_features(feast: FeastStore, tenant: Tenant, use_case: UseCase) -> pd.DataFrame:
    """Each entity's features as of the newest row of any feature view (a point-in-time join
    at that time)."""
    key, keys, newest = use_case.key, [], []
    for view in use_case.feature_views:
        rows = pd.read_parquet(feast.source_path(tenant, use_case, view.name),
                               columns=[key, view.timestamp_field])
        keys.append(rows[key])
        newest.append(rows[view.timestamp_field].max())
    as_of = max(newest) + pd.Timedelta(seconds=1)
    entities = pd.DataFrame({key: pd.concat(keys).unique(), TIMESTAMP: as_of})
    frame = feast.historical_features(tenant, use_case, entities)
    return frame[[key, *use_case.features]].sort_values(key, ignore_index=True)


def batch_predictions(
    context: dg.AssetExecutionContext,
    config: BatchConfig,
    ray: RayCluster,
    mlflow: MlflowRegistry,
    feast: FeastStore,
    object_store: ObjectStore,
) -> dg.Output[dict]:
    """The prediction for every entity of the tenant, from its latest features, scored by the
    Production version with Ray Data `map_batches`; parquet in the tenant's object store."""
    tenant, use_case = tenant_of(context), use_case_of(context)
    client = mlflow.client()
    version = actions.production_version(client, tenant)
    family = family_of(stages.model_version(client, tenant, version).tags)
    object_store.check()
    features = latest_features(feast, tenant, use_case)

    ray.connect()
    import ray as ray_lib

    scored = ray_lib.data.from_pandas(features).map_batches(
        Scorer, batch_size=config.batch_size, batch_format="pandas", concurrency=1,
        fn_constructor_kwargs={"tenant": tenant.key, "use_case": use_case.name,
                               "version": version, "family": family,
                               "tracking_uri": mlflow.tracking_uri},
    ).materialize()
    path = f"batch_predictions/{use_case.name}/{context.run_id or uuid.uuid4().hex}"
    scored.write_parquet(object_store.path(tenant, path), filesystem=object_store.filesystem())
    rows = len(features)
    return dg.Output(
        {"uri": object_store.uri(tenant, path), "key": path, "version": version, "rows": rows},
        metadata={"uri": object_store.uri(tenant, path), "version": version, "rows": rows,
                  "mean_prediction": dg.MetadataValue.float(
                      float(scored.mean("prediction")))},
    )


def build(use_case: UseCase) -> list[dg.AssetsDefinition]:
    return [use_case_asset(use_case, batch_predictions, names.BATCH_PREDICTIONS, "serving",
                           {"ray", "parquet", "s3"},
                           deps=(names.REGISTERED_MODEL,))]  # scores its Production version
