"""Each (tenant, use case) is a Feast repo of its own: a feature_store.yaml that opens the same
store, definitions that build the same objects, and a project no other pair shares."""

import runpy
from pathlib import Path

import pytest
import yaml
from feast import Entity, FeatureStore, FeatureView
from feast.value_type import ValueType

from ml_assets import use_case
from ml_assets.data import churn_data, spend_data
from ml_assets.data.feature_repo.repo import DEFINITIONS_FILE, feast_objects
from ml_assets.data.feature_store import CONFIG_FILE, feast_project
from ml_assets.resources.feast import FeastStore
from ml_assets.tenants import Tenant

CHURN, SPEND = use_case.load("churn"), use_case.load("spend")
ACME = Tenant("acme")


@pytest.fixture(scope="module")
def feast(tmp_path_factory) -> FeastStore:
    root = tmp_path_factory.mktemp("repo")
    churn_data.write(ACME.key, churn_data.ChurnDataSpec(customers=20), root / "raw")
    spend_data.write(ACME.key, spend_data.SpendDataSpec(accounts=20), root / "raw")
    store = FeastStore(root_dir=str(root / "feast"), raw_data_dir=str(root / "raw"))
    for case in (CHURN, SPEND):
        store.apply(ACME, case)
    return store


@pytest.mark.parametrize("case", [CHURN, SPEND], ids=lambda c: c.name)
def test_the_yaml_opens_the_same_store(feast, case):
    repo = feast.repo_dir(ACME, case)
    assert repo == Path(feast.root_dir) / "acme" / case.name
    assert yaml.safe_load((repo / CONFIG_FILE).read_text()) == feast.repo_config(ACME, case)
    from_yaml = FeatureStore(repo_path=str(repo))
    assert from_yaml.project == feast_project(ACME, case)
    assert ({v.name for v in from_yaml.list_feature_views()}
            == {v.name for v in feast.store(ACME, case).list_feature_views()}
            == {v.name for v in case.feature_views})


@pytest.mark.parametrize("case", [CHURN, SPEND], ids=lambda c: c.name)
def test_the_definitions_file_builds_the_applied_objects(feast, case):
    defined = runpy.run_path(str(feast.repo_dir(ACME, case) / DEFINITIONS_FILE))
    paths = {v.name: feast.source_path(ACME, case, v.name).resolve() for v in case.feature_views}
    expected = feast_objects(case, paths)
    objects = [o for o in defined.values() if isinstance(o, Entity | FeatureView)]
    assert sorted(objects, key=lambda o: o.name) == sorted(expected, key=lambda o: o.name)


def test_entity_key_type_and_field_types_follow_the_declaration(feast):
    store = feast.store(ACME, SPEND)
    assert store.get_entity("account").value_type == ValueType.STRING
    assert feast.store(ACME, CHURN).get_entity("customer").value_type == ValueType.INT64
    billing = store.get_feature_view("account_billing")
    assert {f.name: str(f.dtype) for f in billing.features} == {
        "mrr": "Float64", "discount_pct": "Float64", "overdue_invoices": "Int64",
        "plan_tier": "Int64"}
    assert billing.ttl.days == 62 and store.get_feature_view("account_usage").ttl.days == 30


def test_use_cases_of_a_tenant_do_not_see_each_other(feast):
    assert {v.name for v in feast.store(ACME, CHURN).list_feature_views()} == {
        "customer_activity"}
    assert feast.repo_dir(ACME, CHURN) != feast.repo_dir(ACME, SPEND)


def test_no_project_is_another_or_the_end_of_another():
    """Feast's Redis store deletes a project's rows by the pattern `<prefix>*<project>`."""
    assert feast_project(Tenant("big-co"), SPEND) == "t_big_co_spend_6_5"
    cases = [SPEND.model_copy(update={"name": name})
             for name in ("ef", "cd_ef", "churn", "x_12", "t_acme_churn")]
    tenants = [Tenant(key) for key in ("ab", "ab-cd", "acme", "xt4-acme", "x-t-acme",
                                       "acme-churn-4", "b1-x-12")]
    projects = [feast_project(t, c) for t in tenants for c in cases]
    assert len(set(projects)) == len(projects)  # ab-cd with ef vs ab with cd_ef among them
    for one in projects:
        others = [p for p in projects if p != one and p.endswith(one)]
        assert others == [], (one, others)
