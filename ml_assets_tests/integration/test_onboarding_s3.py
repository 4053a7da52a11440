"""A tenant's files onboarded from s3:// URIs on the configured object store (the S3 server)."""

import pandas as pd
import pytest

from ml_assets import use_case
from ml_assets.data import spend_data
from ml_assets.data.onboarding import OnboardingError, onboard
from ml_assets.resources.feast import FeastStore
from ml_assets.tenants import Tenant
from ml_assets_testing.servers import s3_store

BUCKET = "team-drop"
SPEND = use_case.load("spend")


def test_files_on_s3_are_onboarded_and_a_missing_object_is_named(s3_endpoint, tmp_path):
    store = s3_store(s3_endpoint, BUCKET)
    store.ensure_bucket()
    local = spend_data.write("donor", spend_data.SpendDataSpec(accounts=40), tmp_path / "team")
    fs = store.filesystem()
    uris = {}
    for name, path in local.items():
        with fs.open_output_stream(f"{BUCKET}/exports/{path.name}") as out:
            out.write(path.read_bytes())
        uris[name] = f"s3://{BUCKET}/exports/{path.name}"
    feast = FeastStore(root_dir=str(tmp_path / "feast"), raw_data_dir=str(tmp_path / "raw"))
    tenant = Tenant("acme", "spend")
    paths = onboard(feast, store, tenant, SPEND, uris)
    assert pd.read_parquet(paths["spend_labels"]).equals(pd.read_parquet(local["spend_labels"]))

    missing = {**uris, "account_usage": f"s3://{BUCKET}/exports/nothing.parquet"}
    with pytest.raises(OnboardingError, match="nothing.parquet: cannot be read"):
        onboard(feast, store, Tenant("globex", "spend"), SPEND, missing)
    assert not feast.data_dir(Tenant("globex", "spend"), SPEND).exists()
