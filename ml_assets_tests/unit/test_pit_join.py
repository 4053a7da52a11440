"""The Feast point-in-time join (ASOF offline store) against an independent DuckDB ASOF JOIN:
no label row lost (Feast's dask store drops rows before an entity's first feature row and
merges rows sharing (entity, timestamp): feast-dev/feast#6787), values as of label time."""

import duckdb
import numpy as np
import pandas as pd
import pytest

from ml_assets import use_case
from ml_assets.data.churn_data import ChurnDataSpec, write
from ml_assets.resources.feast import FeastStore
from ml_assets.schema import ENTITY, FEATURES, LABEL, LABEL_TIMESTAMP, TIMESTAMP
from ml_assets.tenants import Tenant

T0 = pd.Timestamp("2026-03-01", tz="UTC")
DAY = pd.Timedelta(days=1)
TTL = 90 * DAY
CHURN = use_case.load("churn")
ACTIVITY, LABELS = "customer_activity", "churn_labels"


@pytest.fixture
def feast(tmp_path) -> FeastStore:
    return FeastStore(root_dir=str(tmp_path / "feast"), raw_data_dir=str(tmp_path / "raw"))


def floor(feast: FeastStore, tenant: Tenant) -> pd.DataFrame:
    """The reference: DuckDB ASOF LEFT JOIN of the tenant's labels to its activity, 90-day ttl."""
    features = ", ".join(f"CASE WHEN a.{TIMESTAMP} >= l.{LABEL_TIMESTAMP} - INTERVAL 90 DAY "
                         f"THEN a.{f} END AS {f}" for f in FEATURES)
    return duckdb.connect().sql(f"""
        SELECT l.{ENTITY}, l.{LABEL_TIMESTAMP} AS {TIMESTAMP}, l.{LABEL}, {features}
        FROM read_parquet('{feast.source_path(tenant, CHURN, LABELS)}') l
        ASOF LEFT JOIN read_parquet('{feast.source_path(tenant, CHURN, ACTIVITY)}') a
          ON l.{ENTITY} = a.{ENTITY} AND l.{LABEL_TIMESTAMP} >= a.{TIMESTAMP}
    """).df()


def through_feast(feast: FeastStore, tenant: Tenant) -> pd.DataFrame:
    labels = pd.read_parquet(feast.source_path(tenant, CHURN, LABELS))
    return feast.historical_features(tenant, CHURN,
                                     labels.rename(columns={LABEL_TIMESTAMP: TIMESTAMP}))


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[[ENTITY, TIMESTAMP, LABEL, *FEATURES]].copy()
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    return frame.sort_values([ENTITY, TIMESTAMP, LABEL, *FEATURES], na_position="first",
                             kind="stable").reset_index(drop=True)


def write_rows(feast: FeastStore, tenant: Tenant, activity: list[tuple], labels: list[tuple]):
    """activity: (customer, time, value of every feature); labels: (customer, time, label)."""
    frame = pd.DataFrame(activity, columns=[ENTITY, TIMESTAMP, "value"])
    for feature in FEATURES:
        frame[feature] = frame["value"].astype("float64")
    feast.data_dir(tenant, CHURN).mkdir(parents=True, exist_ok=True)
    frame.drop(columns="value").to_parquet(feast.source_path(tenant, CHURN, ACTIVITY),
                                           index=False)
    pd.DataFrame(labels, columns=[ENTITY, LABEL_TIMESTAMP, LABEL]).to_parquet(
        feast.source_path(tenant, CHURN, LABELS), index=False)


def values_by_label(joined: pd.DataFrame) -> list[tuple]:
    """(customer, time, label, the one value all features share or None), sorted."""
    out = []
    for row in canonical(joined).itertuples(index=False):
        values = {getattr(row, f) for f in FEATURES}
        assert len(values) == 1 or all(np.isnan(v) for v in values), row
        value = values.pop()
        out.append((row.customer_id, row.event_timestamp, row.churned,
                    None if np.isnan(value) else value))
    return out


def test_rows_before_the_first_feature_row_come_back_with_nulls(feast):
    tenant = Tenant("early")
    write_rows(feast, tenant, activity=[(1, T0, 1.0), (1, T0 + 10 * DAY, 2.0)],
               labels=[(1, T0 - DAY, 0), (1, T0 - 30 * DAY, 1), (1, T0 + DAY, 0),
                       (2, T0 + DAY, 1)])
    assert values_by_label(through_feast(feast, tenant)) == [
        (1, T0 - 30 * DAY, 1, None), (1, T0 - DAY, 0, None), (1, T0 + DAY, 0, 1.0),
        (2, T0 + DAY, 1, None)]


def test_label_rows_sharing_entity_and_time_are_not_merged(feast):
    tenant = Tenant("dupes")
    when = T0 + 5 * DAY
    write_rows(feast, tenant, activity=[(1, T0, 1.0), (1, when, 2.0), (2, T0, 7.0)],
               labels=[(1, when, 0), (1, when, 1), (1, when, 1), (2, T0 - DAY, 0),
                       (2, T0 - DAY, 0)])
    assert values_by_label(through_feast(feast, tenant)) == [
        (1, when, 0, 2.0), (1, when, 1, 2.0), (1, when, 1, 2.0),
        (2, T0 - DAY, 0, None), (2, T0 - DAY, 0, None)]


def test_ttl_keeps_a_row_exactly_ttl_old_and_nulls_an_older_one(feast):
    tenant = Tenant("ttl")
    second = pd.Timedelta(seconds=1)
    write_rows(feast, tenant, activity=[(1, T0, 1.0)],
               labels=[(1, T0 + TTL, 0), (1, T0 + TTL + second, 1)])
    assert values_by_label(through_feast(feast, tenant)) == [
        (1, T0 + TTL, 0, 1.0), (1, T0 + TTL + second, 1, None)]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> FeastStore:
    """Two tenants of generated data; labels before a customer's first snapshot occur."""
    root = tmp_path_factory.mktemp("pit")
    feast = FeastStore(root_dir=str(root / "feast"), raw_data_dir=str(root / "raw"))
    spec = ChurnDataSpec(customers=2000, snapshots_per_customer=5, labels_per_customer=8)
    for key, drift in (("north", 0.0), ("south", 3.0)):
        write(key, ChurnDataSpec(**{**spec.__dict__, "drift": drift}), root / "raw")
    return feast


@pytest.mark.parametrize("key", ["north", "south"])
def test_every_row_equals_the_duckdb_asof_floor(generated, key):
    tenant = Tenant(key)
    got, expected = canonical(through_feast(generated, tenant)), canonical(floor(generated,
                                                                              tenant))
    assert len(got) == len(expected) == 16_000
    assert got[FEATURES].isna().all(axis=1).sum() > 0  # the case the dask store drops
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_a_tenant_joins_only_its_own_activity(generated):
    north, south = Tenant("north"), Tenant("south")
    got = canonical(through_feast(generated, north))
    other = canonical(floor(generated, south))
    assert got[[ENTITY, TIMESTAMP]].equals(
        canonical(floor(generated, north))[[ENTITY, TIMESTAMP]])
    assert not np.allclose(got[FEATURES].fillna(0), other[FEATURES].fillna(0))


def test_full_feature_names_prefix_the_view(generated):
    tenant = Tenant("north")
    labels = pd.read_parquet(generated.source_path(tenant, CHURN, LABELS)).rename(
        columns={LABEL_TIMESTAMP: TIMESTAMP})
    joined = generated.apply(tenant, CHURN).get_historical_features(
        entity_df=labels, features=CHURN.feature_refs, full_feature_names=True).to_df()
    plain = joined.rename(columns={f"{ACTIVITY}__{f}": f for f in FEATURES})
    assert set(joined.columns) >= {f"{ACTIVITY}__{f}" for f in FEATURES}
    pd.testing.assert_frame_equal(canonical(plain), canonical(floor(generated, tenant)),
                                  check_dtype=False)


def test_entity_rows_as_sql_are_refused_before_any_query(generated):
    store = generated.apply(Tenant("north"), CHURN)
    with pytest.raises(ValueError, match="entity rows as a DataFrame, got str"):
        store.get_historical_features(entity_df="SELECT 1", features=CHURN.feature_refs)


def test_a_created_timestamp_cutoff_is_refused_by_feast(generated):
    tenant = Tenant("north")
    labels = pd.read_parquet(generated.source_path(tenant, CHURN, LABELS)).rename(
        columns={LABEL_TIMESTAMP: TIMESTAMP})
    with pytest.raises(NotImplementedError, match="not supported by AsofDuckDBOfflineStore"):
        generated.apply(tenant, CHURN).get_historical_features(
            entity_df=labels, features=CHURN.feature_refs, filter_by_created_timestamp=True)
