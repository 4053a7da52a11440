"""Use cases are declared, not coded: a defs.yaml is validated field by field, and a new one
builds its whole chain with no Python."""

import dagster as dg
import pytest
import yaml
from pydantic import ValidationError

from ml_assets import names, use_case
from ml_assets.defs.use_cases import build_chain
from ml_assets.resources import build_resources
from ml_assets.settings import load_settings

THIRD = """
type: ml_assets.defs.use_cases.UseCaseComponent
attributes:
  name: late_payment
  entity: {name: invoice, join_key: invoice_id, key_type: string}
  feature_views:
    - name: invoice_history
      source: invoice_history.parquet
      fields: {amount: float, days_open: int}
  label:
    name: late_labels
    source: late_labels.parquet
    column: paid_late
    task: binary_classification
  training: {family: lightgbm, params: {num_leaves: 15}}
  gate: {metric: log_loss, margin: 0.01}
"""


def declaration(**changes) -> dict:
    document = yaml.safe_load(THIRD)
    document["attributes"].update(changes)
    return document


def test_the_shipped_use_cases_load_with_their_features_in_order():
    churn = use_case.load("churn")
    assert churn.key == "customer_id" and churn.entity.key_type == "int"
    assert churn.features[:2] == ["tenure_days", "monthly_spend"] and len(churn.features) == 10
    assert churn.feature_refs[0] == "customer_activity:tenure_days"
    assert churn.binary and churn.training.family == "torch_mlp"
    assert "churn" in use_case.names()


def test_a_third_use_case_builds_its_whole_chain_from_yaml_alone():
    third = use_case.parse(declaration())
    definitions = dg.Definitions.merge(build_chain(third), dg.Definitions(
        resources=build_resources(load_settings({"ML_ASSETS_STATE_DIR": "/nonexistent"}))))
    keys = {key.to_user_string() for key in definitions.resolve_all_asset_keys()}
    assert {f"late_payment/{a}" for a in names.MODEL_GRAPH} <= keys
    assert {"late_payment/invoice_history", "late_payment/late_labels"} <= keys
    job = definitions.resolve_job_def(names.model_job("late_payment"))
    assert job.partitions_def.name == "tenant"
    checks = {check.name for check in definitions.resolve_asset_graph().asset_check_keys}
    assert {"invoice_history_contract", "late_labels_contract", "beats_baseline"} <= checks


@pytest.mark.parametrize("changes, named", [
    ({"name": "Churn!"}, "name"),
    ({"entity": {"name": "x", "join_key": "id", "key_type": "uuid"}}, "key_type"),
    ({"gate": {"metric": "rmse"}}, "rmse"),  # a regression metric for a binary label
    ({"training": {"family": "sklearn"}}, "family"),
    ({"feature_views": []}, "feature_views"),
    ({"label": {"name": "l", "source": "l.parquet", "column": "amount",
                "task": "regression"}, "gate": {"metric": "rmse"}}, "amount"),  # a feature
    ({"surprise": 1}, "surprise"),
])
def test_a_bad_declaration_is_refused_naming_the_field(changes, named):
    with pytest.raises(ValidationError, match=named):
        use_case.parse(declaration(**changes))


def test_a_document_of_another_component_is_not_a_use_case():
    with pytest.raises(ValueError, match="not a use case component"):
        use_case.parse({"type": "dagster.DefinitionsComponent", "attributes": {}})
    with pytest.raises(use_case.UnknownUseCaseError, match="no use case 'nope'"):
        use_case.load("nope")


def test_the_code_location_holds_every_declared_use_case():
    from ml_assets.definitions import defs

    keys = {key.to_user_string() for key in defs().resolve_all_asset_keys()}
    for name in use_case.names():
        assert f"{name}/{names.TRAINED_MODEL}" in keys
        assert dg.AssetKey([name, names.DEPLOYED_ENDPOINT]) in defs().resolve_all_asset_keys()


def test_the_declared_monitoring_defaults_apply_where_a_tenant_sets_none():
    from ml_assets.resources.monitoring import MonitoringPolicy, MonitoringThresholds
    from ml_assets.tenants import Tenant

    policy = MonitoringPolicy(tenant_thresholds={"acme": MonitoringThresholds(
        max_quality_drop=0.3)})
    spend = use_case.load("spend").monitoring
    assert policy.for_tenant(Tenant("acme", "spend")).max_quality_drop == 0.3  # its own
    globex = policy.for_tenant(Tenant("globex", "spend"))
    assert globex.max_quality_drop == spend.max_quality_drop != 0.05  # the declaration's
    assert globex.latency_p95_sla_ms == spend.latency_sla_ms
    assert policy.for_tenant(Tenant("globex")).max_quality_drop == 0.05  # churn's
