"""A tenant onboarded with its own files: every source checked against its contract and moved in
all at once, or refused with nothing written."""

import pandas as pd
import pytest

from ml_assets import use_case
from ml_assets.cli import main
from ml_assets.data import spend_data
from ml_assets.data.onboarding import OnboardingError, onboard
from ml_assets.resources import build_resources
from ml_assets.settings import load_settings
from ml_assets.tenants import Tenant

SPEND = use_case.load("spend")


@pytest.fixture
def team_files(tmp_path):
    """A team's own spend files, outside the platform's folders."""
    written = spend_data.write("donor", spend_data.SpendDataSpec(accounts=60), tmp_path / "team")
    return {name: str(path) for name, path in written.items()}


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_STATE_DIR", str(tmp_path / "state"))
    settings = load_settings()
    resources = build_resources(settings)
    return settings, resources["feast"], resources["object_store"]


def test_a_tenants_own_files_enable_the_use_case(state, team_files):
    settings, feast, store = state
    tenant = Tenant("acme", "spend")
    assert not feast.data_dir(tenant, SPEND).exists()
    paths = onboard(feast, store, tenant, SPEND, team_files)
    assert set(paths) == {"account_usage", "account_billing", "spend_labels"}
    for name, path in paths.items():
        assert path.parent == feast.data_dir(tenant, SPEND)
        assert pd.read_parquet(path).equals(pd.read_parquet(team_files[name]))
    assert not feast.data_dir(Tenant("acme", "churn"), use_case.load("churn")).exists()


@pytest.mark.parametrize("change, named", [
    (lambda files: files.pop("spend_labels"), "missing: ['spend_labels']"),
    (lambda files: files.update(customer_activity=files["account_usage"]),
     "unknown: ['customer_activity']"),
    (lambda files: files.update(account_usage="/no/such.parquet"), "/no/such.parquet: no such"),
])
def test_sources_that_do_not_match_the_use_case_are_named(state, team_files, change, named):
    settings, feast, store = state
    change(team_files)
    with pytest.raises(OnboardingError, match=named.replace("[", r"\[").replace("]", r"\]")):
        onboard(feast, store, Tenant("acme", "spend"), SPEND, team_files)
    assert not feast.data_dir(Tenant("acme", "spend"), SPEND).exists()


def test_a_file_breaking_its_contract_is_refused_and_the_old_files_stay(state, team_files,
                                                                        tmp_path):
    settings, feast, store = state
    tenant = Tenant("acme", "spend")
    before = onboard(feast, store, tenant, SPEND, team_files)
    good = pd.read_parquet(before["spend_labels"])
    labels = good.copy()
    labels.loc[:4, "spend_90d"] = float("nan")
    labels.to_parquet(tmp_path / "bad_labels.parquet")
    with pytest.raises(OnboardingError, match=r"spend_labels .*label_domain in spend_90d: 5"):
        onboard(feast, store, tenant, SPEND,
                {**team_files, "spend_labels": str(tmp_path / "bad_labels.parquet")})
    assert pd.read_parquet(before["spend_labels"]).equals(good)  # nothing half-replaced
    assert sorted(p.name for p in feast.data_dir(tenant, SPEND).parent.iterdir()) == ["spend"]


def test_the_cli_onboards_files_and_names_what_is_wrong(state, team_files, capsys):
    settings, feast, store = state
    args = ["tenant", "add", "acme", "--use-case", "spend",
            "--source", f"account_usage={team_files['account_usage']}",
            "--source", f"account_billing={team_files['account_billing']}",
            "--labels", team_files["spend_labels"]]
    assert main(args) == 0
    assert "ready for use case spend (3 files)" in capsys.readouterr().out
    assert feast.source_path(Tenant("acme", "spend"), SPEND, "spend_labels").exists()
    assert main(["tenant", "add", "acme", "--use-case", "nope", "--generate"]) == 2
    assert "no use case 'nope'" in capsys.readouterr().err
    assert main(["tenant", "add", "acme", "--use-case", "spend"]) == 2
    assert "--generate for demo data" in capsys.readouterr().err
    assert main(["tenant", "add", "acme", "--use-case", "spend", "--source", "oops"]) == 2
    assert "expected VIEW=PATH_OR_S3_URI" in capsys.readouterr().err
