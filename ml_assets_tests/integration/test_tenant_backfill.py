"""A backfill of five tenants as one run (the single-run backfill policy), one of them with
broken data: the other four go from empty to Production and serving; the broken one stops at
its contract, with nothing trained or registered for it."""

import dagster as dg
import pandas as pd
import pytest
from mlflow import MlflowClient

from ml_assets import names, use_case
from ml_assets.data import churn_data, sources
from ml_assets.defs.tenant_runs import TenantFailed, failed_tenants
from ml_assets.registry import stages
from ml_assets.tenants import Tenant
from ml_assets_testing.chain import chain
from ml_assets_tests.conftest import TEST_SPEC, run_config

TENANTS = ["bf-a", "bf-b", "bf-c", "bf-d", "bf-e"]
BROKEN = "bf-c"


@pytest.fixture(scope="module")
def backfill(settings, resources, ray_cluster, tmp_path_factory):
    churn = use_case.load("churn")
    for tenant in TENANTS:
        churn_data.write(tenant, TEST_SPEC, settings.raw_data_dir)
    labels = sources.source_path(settings.raw_data_dir, Tenant(BROKEN), churn, churn.label.name)
    frame = pd.read_parquet(labels)
    frame.loc[frame.index[:5], churn.label.column] = 7  # a churn label of 7: out of its domain
    frame.to_parquet(labels, index=False)
    home = tmp_path_factory.mktemp("backfill-dagster")
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        instance.add_dynamic_partitions("tenant", TENANTS)
        # the model job as the UI's backfill runs it: one run over the range of tenants
        job = dg.Definitions.merge(chain().definitions, dg.Definitions(
            resources=resources)).resolve_job_def(names.model_job("churn"))
        result = job.execute_in_process(
            instance=instance, run_config=run_config(), raise_on_error=False,
            tags={"dagster/asset_partition_range_start": TENANTS[0],
                  "dagster/asset_partition_range_end": TENANTS[-1]})
        yield instance, result


def test_one_run_over_five_tenants_finishes_the_four_good_ones(backfill, settings):
    instance, result = backfill
    assert result.success
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    registered = result.output_for_node("churn__registered_model")
    deployed = result.output_for_node("churn__deployed_endpoint")
    for tenant in TENANTS:
        if tenant == BROKEN:
            continue
        version = client.get_model_version(Tenant(tenant).registered_model_name,
                                           registered[tenant]["version"])
        assert version.tags[stages.STAGE_TAG] == stages.PRODUCTION
        assert deployed[tenant]["stage"] == stages.PRODUCTION
        assert deployed[tenant]["version"] == registered[tenant]["version"]
    # one run, and each step ran once for all five tenants
    steps = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert sorted(s for s in steps if not s.endswith("_contract")) == sorted(
        f"churn__{name}" for name in names.MODEL_GRAPH)
    assert failed_tenants(instance.get_run_by_id(result.run_id)) == {
        f"churn/{name}": [BROKEN] for name in names.MODEL_GRAPH}


def test_the_broken_tenant_stops_at_its_contract_with_nothing_written(backfill, settings):
    instance, result = backfill
    features = result.output_for_node("churn__training_features")[BROKEN]
    assert isinstance(features, TenantFailed)
    assert "ContractBroken" in features.error and "churn_labels" in features.error
    for name in names.MODEL_GRAPH[1:]:
        skipped = result.output_for_node(f"churn__{name}")[BROKEN]
        assert isinstance(skipped, TenantFailed) and skipped.error.startswith("skipped: ")
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    assert client.search_registered_models(
        f"name = '{Tenant(BROKEN).registered_model_name}'") == []
    experiment = client.get_experiment_by_name(Tenant(BROKEN).experiment_name)
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []
    metadata = {e.partition: e.materialization.metadata for e in
                result.get_asset_materialization_events()
                if e.asset_key.path[-1] == names.TRAINING_FEATURES}
    assert "ContractBroken" in metadata[BROKEN]["tenant_failed"].value
    assert metadata["bf-a"]["dagster/row_count"].value == 2 * TEST_SPEC.customers
    # the contract check recorded a failure for the broken tenant's partition alone
    from dagster._core.event_api import PartitionKeyFilter

    key = dg.AssetCheckKey(dg.AssetKey(["churn", "churn_labels"]), "churn_labels_contract")
    passed = {}
    for tenant in TENANTS:
        records = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=3, partition_filter=PartitionKeyFilter(key=tenant))
        passed[tenant] = [r.event.asset_check_evaluation.passed for r in records
                          if r.event and r.event.asset_check_evaluation]
    assert passed == {t: [t != BROKEN] for t in TENANTS}
