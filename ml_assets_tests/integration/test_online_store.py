"""The online store on the server path: Feast on the machine's Redis, one project per tenant."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest
import redis

from ml_assets import schema
from ml_assets.data import churn_data
from ml_assets.resources.feast import FeastStore
from ml_assets.tenants import Tenant

REDIS = "127.0.0.1:6379"


@pytest.fixture
def redis_feast(tmp_path) -> FeastStore:
    try:
        redis.Redis(host="127.0.0.1", port=6379).ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not running on {REDIS} (.ci/run starts it): {exc}")
    return FeastStore(root_dir=str(tmp_path / "feast"), raw_data_dir=str(tmp_path / "raw"),
                      redis_url=f"{REDIS},db=0")


def latest_rows(feast: FeastStore, tenant: Tenant) -> pd.DataFrame:
    activity = pd.read_parquet(feast.activity_path(tenant))
    return (activity.sort_values(schema.TIMESTAMP).groupby(schema.ENTITY).tail(1)
            .set_index(schema.ENTITY))


def test_redis_online_features_are_each_tenants_latest_and_only_theirs(redis_feast):
    run = uuid.uuid4().hex[:6]
    first, second = Tenant(f"r{run}-a"), Tenant(f"r{run}-b")
    churn_data.write(first.key, churn_data.ChurnDataSpec(customers=40, seed=1),
                     Path(redis_feast.raw_data_dir))
    churn_data.write(second.key, churn_data.ChurnDataSpec(customers=40, seed=2, drift=3.0),
                     Path(redis_feast.raw_data_dir))
    stores = {}
    try:
        for tenant in (first, second):
            assert redis_feast.materialize_online(tenant) == 40
            stores[tenant] = redis_feast.store(tenant)
        expected = latest_rows(redis_feast, first)
        ids = [int(i) for i in expected.index[:10]]
        got = redis_feast.online_features(stores[first], ids)
        for name in schema.FEATURES:
            want = [None if pd.isna(v) else pytest.approx(v) for v in expected.loc[ids, name]]
            assert got[name] == want, name
        # the same customer ids through the other tenant's store: that tenant's own values
        theirs = latest_rows(redis_feast, second)
        other = redis_feast.online_features(stores[second], ids)
        present = [i for i in ids if i in theirs.index]
        assert present, "the generator reuses customer ids across tenants"
        for i in present:
            assert other["monthly_spend"][ids.index(i)] == pytest.approx(
                theirs.at[i, "monthly_spend"], nan_ok=True)
            assert other["monthly_spend"][ids.index(i)] != got["monthly_spend"][ids.index(i)]
        assert project_keys(first) == project_keys(second) == 40  # one hash per customer
    finally:
        for store in stores.values():
            store.teardown()
    assert project_keys(first) == project_keys(second) == 0  # teardown leaves nothing behind


def project_keys(tenant: Tenant) -> int:
    """Feast's Redis keys end with the project name: the tenant's rows and no one else's."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    suffix = tenant.feast_project.encode()
    return sum(1 for key in client.scan_iter(count=1000) if key.endswith(suffix))
