"""The point-in-time join of the spend use case (string key, two feature views with their own
timestamps and ttls) through TenantFeatureStore, against pandas merge_asof per view."""

import numpy as np
import pandas as pd
import pytest

from ml_assets import use_case
from ml_assets.data.spend_data import SpendDataSpec, write
from ml_assets.resources.feast import FeastStore
from ml_assets.tenants import Tenant

SPEND = use_case.load("spend")
KEY, LABEL_TS, LABEL = SPEND.key, SPEND.label.timestamp_field, SPEND.label.column


@pytest.fixture(scope="module")
def feast(tmp_path_factory) -> FeastStore:
    root = tmp_path_factory.mktemp("spend")
    for key, drift in (("north", 0.0), ("south", 3.0)):
        write(key, SpendDataSpec(accounts=1500, labels_per_account=6, drift=drift),
              root / "raw")
    return FeastStore(root_dir=str(root / "feast"), raw_data_dir=str(root / "raw"))


def labels(feast: FeastStore, tenant: Tenant) -> pd.DataFrame:
    return pd.read_parquet(feast.source_path(tenant, SPEND, SPEND.label.name))


def reference(feast: FeastStore, tenant: Tenant) -> pd.DataFrame:
    """Each view merged as of label time on its own timestamp, nothing older than its ttl."""
    frame = labels(feast, tenant).sort_values(LABEL_TS, kind="stable")
    for view in SPEND.feature_views:
        source = pd.read_parquet(feast.source_path(tenant, SPEND, view.name))
        frame = pd.merge_asof(
            frame, source.sort_values(view.timestamp_field, kind="stable"),
            left_on=LABEL_TS, right_on=view.timestamp_field, by=KEY, direction="backward",
            tolerance=pd.Timedelta(days=view.ttl_days)).drop(columns=view.timestamp_field)
    return frame


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[[KEY, LABEL_TS, LABEL, *SPEND.features]].copy()
    frame[KEY] = frame[KEY].astype(str)
    frame[LABEL_TS] = pd.to_datetime(frame[LABEL_TS], utc=True).astype("datetime64[ns, UTC]")
    frame[[LABEL, *SPEND.features]] = frame[[LABEL, *SPEND.features]].astype("float64")
    return frame.sort_values([KEY, LABEL_TS, LABEL], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("key", ["north", "south"])
def test_every_row_equals_merge_asof_over_both_views(feast, key):
    tenant = Tenant(key)
    got = canonical(feast.historical_features(tenant, SPEND, labels(feast, tenant)))
    expected = canonical(reference(feast, tenant))
    assert len(got) == len(expected) == 1500 * 6
    pd.testing.assert_frame_equal(got, expected)
    usage_missing = got["storage_gb"].isna()
    billing_missing = got["mrr"].isna()
    # each view's nulls on its own: past its ttl, or before its first row
    assert (usage_missing & ~billing_missing).any() and (billing_missing & ~usage_missing).any()
    assert (~usage_missing & ~billing_missing).mean() > 0.5


def test_each_tenant_joins_only_its_own_files(feast):
    north, south = Tenant("north"), Tenant("south")
    got = canonical(feast.historical_features(north, SPEND, labels(feast, north)))
    theirs = canonical(reference(feast, south))
    assert got[[KEY, LABEL_TS]].equals(canonical(reference(feast, north))[[KEY, LABEL_TS]])
    assert not np.allclose(got["mrr"].fillna(0), theirs["mrr"].fillna(0))
    paths = {v.name: v.batch_source.path for v in feast.store(north, SPEND).list_feature_views()}
    assert paths == {v.name: str(feast.source_path(north, SPEND, v.name).resolve())
                     for v in SPEND.feature_views}


def test_a_missing_view_file_is_named(feast, tmp_path):
    other = FeastStore(root_dir=str(tmp_path / "feast"), raw_data_dir=str(tmp_path / "raw"))
    tenant = Tenant("partial")
    write(tenant.key, SpendDataSpec(accounts=20), tmp_path / "raw")
    billing = other.source_path(tenant, SPEND, "account_billing")
    billing.unlink()
    with pytest.raises(FileNotFoundError, match=f"'account_billing': '{billing}'"):
        other.apply(tenant, SPEND)
