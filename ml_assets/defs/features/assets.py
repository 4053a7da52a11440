"""Point-in-time correct training features of each tenant, from Feast."""


import dagster as dg
import pandas as pd
from pydantic import Field

from ml_assets import names, use_case
from ml_assets.data.versions import content_hash
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.resources.feast import FeastStore
from ml_assets.schema import ENTITY, FEATURES, LABEL, LABEL_TIMESTAMP, TIMESTAMP
from ml_assets.tenants import Tenant

customer_activity = dg.AssetSpec(
    names.CUSTOMER_ACTIVITY,
    group_name="features",
    partitions_def=tenant_partitions,
    kinds={"parquet"},
    description="Raw activity snapshots of the tenant's customers (written by the tenant's "
    "ingestion, or `ml-assets tenant add`).",
)
churn_labels = dg.AssetSpec(
    names.CHURN_LABELS,
    group_name="features",
    partitions_def=tenant_partitions,
    kinds={"parquet"},
    description="Churn outcomes of the tenant's customers, each at its label time.",
)


class FeatureSplitConfig(dg.Config):
    """Time-based split: the newest rows are the holdout, the ones before them validation."""

    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    holdout_fraction: float = Field(0.15, gt=0, lt=0.5)


def assign_splits(frame: pd.DataFrame, config: FeatureSplitConfig) -> pd.DataFrame:
    """Sort by label time and cut into train / validation / holdout by time quantiles."""
    frame = frame.sort_values([TIMESTAMP, ENTITY], kind="stable").reset_index(drop=True)
    train_end = frame[TIMESTAMP].quantile(1 - config.validation_fraction - config.holdout_fraction)
    validation_end = frame[TIMESTAMP].quantile(1 - config.holdout_fraction)
    frame["split"] = "holdout"
    frame.loc[frame[TIMESTAMP] <= validation_end, "split"] = "validation"
    frame.loc[frame[TIMESTAMP] <= train_end, "split"] = "train"
    return frame


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="features",
    kinds={"feast", "duckdb"},
    deps=[customer_activity, churn_labels],
)
def training_features(
    context: dg.AssetExecutionContext, config: FeatureSplitConfig, feast: FeastStore
) -> dg.Output[pd.DataFrame]:
    """Each label row joined to the customer's activity features as they were at label time
    (Feast point-in-time join, 90-day ttl), split by time into train / validation / holdout."""
    tenant = Tenant(context.partition_key)
    churn = use_case.load("churn")
    labels_path = feast.source_path(tenant, churn, churn.label.name)
    if not labels_path.exists():
        raise FileNotFoundError(f"no churn labels for tenant {tenant.key!r} at {labels_path}")
    labels = pd.read_parquet(labels_path).rename(columns={LABEL_TIMESTAMP: TIMESTAMP})
    joined = feast.historical_features(tenant, churn, labels)
    if len(joined) != len(labels):
        raise RuntimeError(
            f"point-in-time join returned {len(joined)} rows for {len(labels)} label rows"
        )
    frame = assign_splits(joined[[ENTITY, TIMESTAMP, LABEL, *FEATURES]], config)
    version = content_hash(frame)
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": len(frame),
        "data_version": version,
        "churn_rate": float(frame[LABEL].mean()),
        "rows_without_features": int(frame[FEATURES].isna().all(axis=1).sum()),
    }
    for name, part in frame.groupby("split"):
        metadata[f"{name}_rows"] = len(part)
        metadata[f"{name}_time_range"] = f"{part[TIMESTAMP].min()} .. {part[TIMESTAMP].max()}"
    return dg.Output(frame, data_version=dg.DataVersion(version), metadata=metadata)
