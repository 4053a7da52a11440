"""The point-in-time join through real Feast (duckdb offline store): no leakage, no lost rows."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_assets import use_case
from ml_assets.defs.features.assets import FeatureSplitConfig, assign_splits
from ml_assets.resources.feast import FeastStore
from ml_assets.schema import ENTITY, FEATURES, LABEL, LABEL_TIMESTAMP, TIMESTAMP
from ml_assets.tenants import Tenant
from ml_assets_testing.chain import chain

training_features = chain().asset("training_features")

T0 = pd.Timestamp("2026-03-01", tz="UTC")
DAY = pd.Timedelta(days=1)
CHURN = use_case.load("churn")


def write_tenant(feast: FeastStore, tenant: Tenant, activity: pd.DataFrame,
                 labels: pd.DataFrame) -> None:
    feast.data_dir(tenant, CHURN).mkdir(parents=True, exist_ok=True)
    activity.to_parquet(feast.source_path(tenant, CHURN, "customer_activity"), index=False)
    labels.to_parquet(feast.source_path(tenant, CHURN, "churn_labels"), index=False)


def crafted_activity(offset: float) -> pd.DataFrame:
    """Customer 1 has values 1, 2, 3 (+offset) at T0, T0+10d, T0+20d; customer 2 one row."""
    rows = [(1, T0, 1.0), (1, T0 + 10 * DAY, 2.0), (1, T0 + 20 * DAY, 3.0), (2, T0, 7.0)]
    frame = pd.DataFrame(rows, columns=[ENTITY, TIMESTAMP, "value"])
    for feature in FEATURES:
        frame[feature] = frame["value"] + offset
    return frame.drop(columns="value")


# (customer, label time, the value each feature must have: None = null)
EXPECTED = [
    (1, T0 - DAY, None),           # before the first feature row: kept, with nulls
    (1, T0 + 5 * DAY, 1.0),
    (1, T0 + 10 * DAY, 2.0),       # exactly at a feature row: that row counts
    (1, T0 + 15 * DAY, 2.0),       # a later row (3.0) exists: it must not leak in
    (1, T0 + 15 * DAY, 2.0),       # a duplicate (entity, time) label row: both come back
    (1, T0 + 25 * DAY, 3.0),
    (1, T0 + 20 * DAY + 91 * DAY, None),  # past the 90-day ttl: null
    (2, T0 + 30 * DAY, 7.0),
    (3, T0 + 30 * DAY, None),      # a customer with no activity at all
]


@pytest.fixture
def feast(tmp_path) -> FeastStore:
    return FeastStore(root_dir=str(tmp_path / "feast"), raw_data_dir=str(tmp_path / "raw"))


def labels_frame() -> pd.DataFrame:
    # a (customer, time) pair listed twice has one label: the data contract refuses two
    return pd.DataFrame(
        [(c, t, c % 2) for c, t, _ in EXPECTED],
        columns=[ENTITY, LABEL_TIMESTAMP, LABEL],
    )


def test_point_in_time_join_takes_values_as_of_label_time(feast):
    tenant = Tenant("crafted")
    write_tenant(feast, tenant, crafted_activity(0.0), labels_frame())
    entity_df = labels_frame().rename(columns={LABEL_TIMESTAMP: TIMESTAMP})
    joined = feast.historical_features(tenant, CHURN, entity_df)
    assert len(joined) == len(EXPECTED)
    joined = joined.sort_values([TIMESTAMP, ENTITY], kind="stable").reset_index(drop=True)
    expected = sorted(EXPECTED, key=lambda e: (e[1], e[0]))
    for row, (customer, when, value) in zip(joined.itertuples(), expected, strict=True):
        assert (row.customer_id, row.event_timestamp) == (customer, when)
        for feature in FEATURES:
            got = getattr(row, feature)
            assert np.isnan(got) if value is None else got == value, (customer, when, feature)


def test_each_tenant_joins_only_its_own_activity(feast):
    ours, theirs = Tenant("ours"), Tenant("theirs")
    write_tenant(feast, ours, crafted_activity(0.0), labels_frame())
    write_tenant(feast, theirs, crafted_activity(100.0), labels_frame())
    entity_df = labels_frame().rename(columns={LABEL_TIMESTAMP: TIMESTAMP})
    ours_values = feast.historical_features(ours, CHURN, entity_df)[FEATURES].stack()
    theirs_values = feast.historical_features(theirs, CHURN, entity_df)[FEATURES].stack()
    assert ours_values.max() < 100 <= theirs_values.min()
    source = feast.store(ours, CHURN).list_feature_views()[0].batch_source.path
    assert source == str(feast.source_path(ours, CHURN, "customer_activity").resolve())


def test_training_features_asset_splits_by_time(feast, tmp_path):
    tenant = Tenant("crafted")
    write_tenant(feast, tenant, crafted_activity(0.0), labels_frame())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [tenant.key])
        result = dg.materialize(
            [training_features], partition_key=tenant.key, instance=instance,
            resources={"feast": feast,
                       "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))},
            run_config={"ops": {"churn__training_features": {"config": {
                "validation_fraction": 0.25, "holdout_fraction": 0.25}}}},
        )
    frame = result.output_for_node("churn__training_features")
    assert len(frame) == len(EXPECTED)
    train, holdout = frame[frame.split == "train"], frame[frame.split == "holdout"]
    assert train[TIMESTAMP].max() < holdout[TIMESTAMP].min()
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["rows_without_features"].value == 3
    assert metadata["data_version"].value == result.get_asset_materialization_events()[
        0].materialization.tags["dagster/data_version"]


def test_missing_source_data_names_the_tenant_and_use_case(feast):
    with pytest.raises(FileNotFoundError, match="'nodata' has no use case 'churn'"):
        feast.apply(Tenant("nodata"), CHURN)


def test_a_missing_feature_view_file_is_named(feast):
    tenant = Tenant("halfway")
    write_tenant(feast, tenant, crafted_activity(0.0), labels_frame())
    path = feast.source_path(tenant, CHURN, "customer_activity")
    path.unlink()
    with pytest.raises(FileNotFoundError, match=f"customer_activity.*{path}"):
        feast.apply(tenant, CHURN)


def test_splits_are_time_ordered_and_cover_every_row():
    times = pd.date_range("2026-01-01", periods=100, freq="D", tz="UTC")
    frame = pd.DataFrame({ENTITY: range(100), TIMESTAMP: times[::-1], LABEL: 0})
    split = assign_splits(frame, FeatureSplitConfig(validation_fraction=0.2,
                                                    holdout_fraction=0.1), TIMESTAMP, ENTITY)
    assert split["split"].value_counts().to_dict() == {"train": 70, "validation": 20,
                                                        "holdout": 10}
    order = {"train": 0, "validation": 1, "holdout": 2}
    assert split["split"].map(order).is_monotonic_increasing
