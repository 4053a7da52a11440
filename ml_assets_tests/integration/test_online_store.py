"""The online store on the server path: Feast on the machine's Redis, one project per (tenant,
use case), and each repo usable with the feast CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import redis

from ml_assets import schema, use_case
from ml_assets.data import churn_data, spend_data
from ml_assets.data.feature_store import feast_project
from ml_assets.resources.feast import FeastStore
from ml_assets.settings import PROJECT_ROOT
from ml_assets.tenants import Tenant

REDIS = "127.0.0.1:6379"
CHURN, SPEND = use_case.load("churn"), use_case.load("spend")


@pytest.fixture
def redis_feast(tmp_path) -> FeastStore:
    try:
        redis.Redis(host="127.0.0.1", port=6379).ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not running on {REDIS} (.ci/run starts it): {exc}")
    return FeastStore(root_dir=str(tmp_path / "feast"), raw_data_dir=str(tmp_path / "raw"),
                      redis_url=f"{REDIS},db=0")


def latest_rows(feast: FeastStore, tenant: Tenant, case: use_case.UseCase) -> pd.DataFrame:
    """Each entity's newest row of every view, side by side."""
    frames = []
    for view in case.feature_views:
        rows = pd.read_parquet(feast.source_path(tenant, case, view.name))
        frames.append(rows.sort_values(view.timestamp_field).groupby(case.key).tail(1)
                      .set_index(case.key)[list(view.fields)])
    return pd.concat(frames, axis=1)


def feast_cli(repo: Path, *args: str) -> str:
    """The feast CLI of this venv on a repo; the yaml's offline store is ours, so the CLI
    imports ml_assets."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "feast"), "-c", str(repo), *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def cli_online_features(repo: Path, key: str, keys: list, refs: list[str]) -> dict:
    out = feast_cli(repo, "get-online-features", *[a for k in keys for a in ("-e", f"{key}={k}")],
                    *[a for ref in refs for a in ("-f", ref)])
    return json.loads(out[out.index("{"):])


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
            assert redis_feast.materialize_online(tenant, CHURN) == 40
            stores[tenant] = redis_feast.store(tenant, CHURN)
        expected = latest_rows(redis_feast, first, CHURN)
        ids = [int(i) for i in expected.index[:10]]
        got = redis_feast.online_features(stores[first], CHURN, ids)
        assert list(got) == schema.FEATURES
        for name in schema.FEATURES:
            want = [None if pd.isna(v) else pytest.approx(v) for v in expected.loc[ids, name]]
            assert got[name] == want, name
        # the same customer ids through the other tenant's store: that tenant's own values
        theirs = latest_rows(redis_feast, second, CHURN)
        other = redis_feast.online_features(stores[second], CHURN, ids)
        present = [i for i in ids if i in theirs.index]
        assert present, "the generator reuses customer ids across tenants"
        for i in present:
            assert other["monthly_spend"][ids.index(i)] == pytest.approx(
                theirs.at[i, "monthly_spend"], nan_ok=True)
            assert other["monthly_spend"][ids.index(i)] != got["monthly_spend"][ids.index(i)]
        # the CLI with an integer key: the same values
        by_cli = cli_online_features(redis_feast.repo_dir(first, CHURN), CHURN.key, ids[:2],
                                     ["customer_activity:monthly_spend"])
        assert by_cli["monthly_spend"] == pytest.approx(got["monthly_spend"][:2])
        assert project_keys(first, CHURN) == project_keys(second, CHURN) == 40  # one hash each
    finally:
        for store in stores.values():
            store.teardown()
    assert project_keys(first, CHURN) == project_keys(second, CHURN) == 0  # nothing left


def test_spend_online_features_and_the_feast_cli(redis_feast):
    tenant = Tenant(f"r{uuid.uuid4().hex[:6]}-s")
    spend_data.write(tenant.key, spend_data.SpendDataSpec(accounts=30, seed=3),
                     Path(redis_feast.raw_data_dir))
    repo = redis_feast.repo_dir(tenant, SPEND)
    store = None
    try:
        assert redis_feast.materialize_online(tenant, SPEND) == 30
        store = redis_feast.store(tenant, SPEND)
        expected = latest_rows(redis_feast, tenant, SPEND)
        keys = [*expected.index[:4], "acct-999999"]
        got = redis_feast.online_features(store, SPEND, keys)
        assert list(got) == SPEND.features
        for name in SPEND.features:
            want = [None if pd.isna(v) else pytest.approx(v) for v in expected.loc[keys[:4], name]]
            assert got[name] == [*want, None], name  # an unknown account: None

        listed = feast_cli(repo, "feature-views", "list")
        rows = {line.split()[0] for line in listed.splitlines()[1:] if line.strip()}
        assert rows == {"account_usage", "account_billing"}
        refs = ["account_usage:active_seats", "account_billing:mrr"]
        by_cli = cli_online_features(repo, SPEND.key, keys, refs)
        assert by_cli[SPEND.key] == keys
        assert by_cli["active_seats"] == [*expected.loc[keys[:4], "active_seats"], None]
        assert by_cli["mrr"] == pytest.approx([*expected.loc[keys[:4], "mrr"], None])
        assert project_keys(tenant, SPEND) == 30
    finally:
        if store is not None:
            store.teardown()
    assert project_keys(tenant, SPEND) == 0


def test_tearing_down_a_tenant_leaves_a_tenant_whose_key_ends_like_it(redis_feast):
    """Feast deletes by `<prefix>*<project>`: with `t_<key>` projects, tenant `rX`'s teardown
    would also delete `a-t-rX`'s rows (`t_a_t_rX` ends with `t_rX`)."""
    run = uuid.uuid4().hex[:6]
    short, long = Tenant(f"r{run}"), Tenant(f"a-t-r{run}")
    stores = {}
    try:
        for tenant in (short, long):
            churn_data.write(tenant.key, churn_data.ChurnDataSpec(customers=20),
                             Path(redis_feast.raw_data_dir))
            assert redis_feast.materialize_online(tenant, CHURN) == 20
            stores[tenant] = redis_feast.store(tenant, CHURN)
        stores.pop(short).teardown()
        assert project_keys(short, CHURN) == 0 and project_keys(long, CHURN) == 20
        got = redis_feast.online_features(stores[long], CHURN, [1, 2])
        assert None not in got["monthly_spend"]
    finally:
        for store in stores.values():
            store.teardown()


def project_keys(tenant: Tenant, case: use_case.UseCase) -> int:
    """Feast's Redis keys end with the project name: the pair's rows and no one else's."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    suffix = feast_project(tenant, case).encode()
    return sum(1 for key in client.scan_iter(count=1000) if key.endswith(suffix))
