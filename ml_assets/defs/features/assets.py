"""Point-in-time correct training features of each tenant, from Feast."""


import dagster as dg
import pandas as pd
from pydantic import Field

from ml_assets import names
from ml_assets.data.sources import source_names
from ml_assets.data.versions import content_hash
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.defs.scope import key, tenant_of, use_case_asset, use_case_of
from ml_assets.resources.feast import FeastStore
from ml_assets.use_case import UseCase


class UseCaseNotEnabledError(ValueError):
    """A (tenant, use case) pair the tenant was never onboarded for."""


def enabled_or_raise(feast: FeastStore, tenant, use_case: UseCase) -> None:
    """Fail, naming the pair, when the tenant has no data folder for the use case."""
    if not feast.data_dir(tenant, use_case).exists():
        raise UseCaseNotEnabledError(
            f"tenant {tenant.key!r} is not enabled for use case {use_case.name!r}: "
            f"onboard it with `ml-assets tenant add {tenant.key} --use-case {use_case.name} "
            "...` first")


def source_specs(use_case: UseCase) -> list[dg.AssetSpec]:
    """The tenant's source files of the use case: one per feature view, and the labels."""
    specs = [dg.AssetSpec(
        key(use_case.name, view.name), group_name="features",
        partitions_def=tenant_partitions, kinds={"parquet"},
        description=f"The tenant's `{view.source}`: {', '.join(view.fields)} per "
        f"{use_case.entity.join_key} at {view.timestamp_field}.")
        for view in use_case.feature_views]
    label = use_case.label
    specs.append(dg.AssetSpec(
        key(use_case.name, label.name), group_name="features",
        partitions_def=tenant_partitions, kinds={"parquet"},
        description=f"The tenant's `{label.source}`: {label.column} ({label.task}) per "
        f"{use_case.entity.join_key} at {label.timestamp_field}."))
    return specs


class FeatureSplitConfig(dg.Config):
    """Time-based split: the newest rows are the holdout, the ones before them validation."""

    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    holdout_fraction: float = Field(0.15, gt=0, lt=0.5)


def assign_splits(frame: pd.DataFrame, config: FeatureSplitConfig, timestamp: str,
                  entity: str) -> pd.DataFrame:
    """Sort by label time and cut into train / validation / holdout by time quantiles."""
    frame = frame.sort_values([timestamp, entity], kind="stable").reset_index(drop=True)
    train_end = frame[timestamp].quantile(1 - config.validation_fraction - config.holdout_fraction)
    validation_end = frame[timestamp].quantile(1 - config.holdout_fraction)
    frame["split"] = "holdout"
    frame.loc[frame[timestamp] <= validation_end, "split"] = "validation"
    frame.loc[frame[timestamp] <= train_end, "split"] = "train"
    return frame


def holds_contracts_or_raise(feast: FeastStore, tenant, use_case: UseCase) -> None:
    """The join reads only files that hold their contracts. The blocking contract checks stop
    a run of one tenant before this; in a run over many tenants they can only warn (an error
    would stop every tenant), so each tenant's join checks its own files."""
    from ml_assets.data import contracts

    for source in source_names(use_case):
        path = feast.source_path(tenant, use_case, source)
        found = contracts.violations(path, contracts.for_source(use_case, source))
        if found:
            raise contracts.ContractBroken(
                f"tenant {tenant.key!r}: {path.name} breaks its contract: "
                + "; ".join(map(str, found)))


# the entity dataframe's time column, as Feast's point-in-time join expects it
TIMESTAMP = "event_timestamp"


def training_features(
    context: dg.AssetExecutionContext, config: FeatureSplitConfig, feast: FeastStore
) -> dg.Output[pd.DataFrame]:
    """Each label row joined to the entity's features in every feature view as they were at
    label time (Feast point-in-time join, each view's ttl), split by time into train /
    validation / holdout."""
    use_case, tenant = use_case_of(context), tenant_of(context)
    enabled_or_raise(feast, tenant, use_case)
    holds_contracts_or_raise(feast, tenant, use_case)
    label, entity = use_case.label, use_case.key
    labels_path = feast.source_path(tenant, use_case, label.name)
    if not labels_path.exists():
        raise FileNotFoundError(f"no {label.name} for tenant {tenant.key!r} at {labels_path}")
    labels = pd.read_parquet(labels_path, columns=[entity, label.column, label.timestamp_field])
    labels = labels.rename(columns={label.timestamp_field: TIMESTAMP})
    joined = feast.historical_features(tenant, use_case, labels)
    if len(joined) != len(labels):
        raise RuntimeError(
            f"point-in-time join returned {len(joined)} rows for {len(labels)} label rows"
        )
    features = use_case.features
    frame = assign_splits(joined[[entity, TIMESTAMP, label.column, *features]], config,
                          TIMESTAMP, entity)
    version = content_hash(frame)
    target = frame[label.column]
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": len(frame),
        "data_version": version,
        ("positive_rate" if use_case.binary else "label_mean"): float(target.mean()),
        "rows_without_features": int(frame[features].isna().all(axis=1).sum()),
    }
    for name, part in frame.groupby("split"):
        metadata[f"{name}_rows"] = len(part)
        metadata[f"{name}_time_range"] = f"{part[TIMESTAMP].min()} .. {part[TIMESTAMP].max()}"
    return dg.Output(frame, data_version=dg.DataVersion(version), metadata=metadata)


def build(use_case: UseCase) -> list:
    return [*source_specs(use_case),
            use_case_asset(use_case, training_features, names.TRAINING_FEATURES, "features",
                           {"feast", "duckdb"}, deps=tuple(source_names(use_case)))]
