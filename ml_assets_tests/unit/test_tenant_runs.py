"""Runs over many tenants (single-run backfills): each tenant's body on its own, a tenant's
failure or failed blocking check stopping that tenant alone, checks recorded per tenant."""

import warnings

import dagster as dg
import pytest

from ml_assets.defs.tenant_runs import (
    BACKFILL_POLICY,
    TenantFailed,
    UpstreamFailed,
    failed_tenants,
    per_tenant,
    per_tenant_check,
)
from ml_assets.resources.io import TenantFilesystemIOManager

TENANTS = ["t1", "t2", "t3", "t4", "t5"]
tenants = dg.DynamicPartitionsDefinition(name="tenant")
GATE = dg.AssetCheckSpec("gate", asset="scored", blocking=True)


def source(context: dg.AssetExecutionContext, bad: dg.ResourceParam[set]) -> dg.Output[int]:
    if context.partition_key in bad:
        raise ValueError(f"bad rows for {context.partition_key}")
    return dg.Output(int(context.partition_key[1:]), metadata={"rows": 10})


def scored(context: dg.AssetExecutionContext, source: int):
    yield dg.Output(source * 10)
    yield dg.AssetCheckResult(check_name="gate", passed=source != 4,
                              severity=dg.AssetCheckSeverity.ERROR,
                              description=f"score {source * 10}")


def registered(context: dg.AssetExecutionContext, scored: int) -> dict:
    return {"tenant": context.partition_key, "score": scored}


def announced(context: dg.AssetExecutionContext) -> str:
    return f"announced {context.partition_key}"


def contract(context: dg.AssetCheckExecutionContext,
             bad: dg.ResourceParam[set]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=context.partition_key not in bad)


def assets():
    common = {"partitions_def": tenants, "backfill_policy": BACKFILL_POLICY}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        check = dg.asset_check(asset="source", name="contract", partitions_def=tenants)(
            per_tenant_check(contract))
    return [dg.asset(**common)(per_tenant(source)),
            dg.asset(check_specs=[GATE], **common)(per_tenant(scored, ("source",))),
            dg.asset(**common)(per_tenant(registered, ("scored",), threads=3)),
            dg.asset(deps=["registered"], **common)(per_tenant(announced)), check]


def run(instance, tmp_path, bad: set, tenants_of_run=TENANTS, selection=None):
    defs = dg.Definitions(assets=assets()[:4], asset_checks=assets()[4:], resources={
        "io_manager": TenantFilesystemIOManager(base_dir=str(tmp_path)), "bad": bad})
    job = defs.resolve_implicit_global_asset_job_def()
    if selection:
        job = job.get_subset(asset_selection={dg.AssetKey(s) for s in selection})
    tags = ({"dagster/partition": tenants_of_run[0]} if len(tenants_of_run) == 1 else
            {"dagster/asset_partition_range_start": tenants_of_run[0],
             "dagster/asset_partition_range_end": tenants_of_run[-1]})
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False,
                                  partition_key=tenants_of_run[0]
                                  if len(tenants_of_run) == 1 else None)


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        instance.add_dynamic_partitions("tenant", TENANTS)
        yield instance


def partition_metadata(result, asset: str) -> dict[str, dict]:
    return {e.partition: {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey(asset)}


def test_one_tenant_failing_leaves_the_other_four_finished(instance, tmp_path):
    result = run(instance, tmp_path, bad={"t2"})
    assert result.success
    registered_values = result.output_for_node("registered")
    assert {t: v["score"] for t, v in registered_values.items() if isinstance(v, dict)} == {
        "t1": 10, "t3": 30, "t5": 50}  # t4 failed its blocking gate, t2 its source
    failed = registered_values["t2"]
    assert isinstance(failed, TenantFailed) and "bad rows for t2" in failed.error
    # skipped steps name the failure that started it, not the chain of skips
    assert failed.error == (f"skipped: source failed for this tenant in run {result.run_id}: "
                            "ValueError: bad rows for t2")
    assert "blocking check gate failed: score 40" in registered_values["t4"].error
    # the failed tenant's value is stored as its failure: nothing stale is read later
    assert isinstance(result.output_for_node("source")["t2"], TenantFailed)
    source_metadata = partition_metadata(result, "source")
    assert source_metadata["t1"]["rows"] == 10
    assert "ValueError: bad rows for t2" in source_metadata["t2"]["tenant_failed"]
    assert failed_tenants(instance.get_run_by_id(result.run_id)) == {
        "source": ["t2"], "scored": ["t2", "t4"], "registered": ["t2", "t4"],
        "announced": ["t2", "t4"]}
    # a step that only depends on registered (no input) skips its failed tenants too
    announced_values = result.output_for_node("announced")
    assert announced_values["t1"] == "announced t1"
    assert announced_values["t4"].error == (
        f"skipped: registered failed for this tenant in run {result.run_id}")


def test_checks_are_recorded_per_tenant(instance, tmp_path):
    from dagster._core.event_api import PartitionKeyFilter

    result = run(instance, tmp_path, bad={"t3"})
    history = {}
    for name, asset in (("gate", "scored"), ("contract", "source")):
        for tenant in TENANTS:
            records = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(asset), name), limit=5,
                partition_filter=PartitionKeyFilter(key=tenant))
            history[name, tenant] = [r.event.asset_check_evaluation.passed for r in records
                                     if r.event and r.event.asset_check_evaluation]
    assert [history["gate", t] for t in TENANTS] == [[True], [True], [], [False], [True]]
    assert [history["contract", t] for t in TENANTS] == [[True], [True], [False], [True],
                                                          [True]]
    run_results = {e.check_name: e for e in result.get_asset_check_evaluations()
                   if e.partition is None}
    # the run's own result warns, naming the tenant; an error would block every tenant
    assert not run_results["gate"].passed
    assert run_results["gate"].severity == dg.AssetCheckSeverity.WARN
    assert "failed: t4" in run_results["gate"].description
    assert result.success


def test_a_later_run_of_one_tenant_reads_its_failure_not_an_old_value(instance, tmp_path):
    assert run(instance, tmp_path, bad=set()).success  # every tenant once
    assert run(instance, tmp_path, bad={"t2"}).success  # t2's source now fails
    alone = run(instance, tmp_path, bad=set(), tenants_of_run=["t2"],
                selection=["registered"])
    assert not alone.success
    error = alone.get_step_failure_events()[0].step_failure_data.error.cause
    assert error.cls_name == UpstreamFailed.__name__
    assert "bad rows for t2" in error.message


def test_every_tenant_failing_fails_the_step(instance, tmp_path):
    result = run(instance, tmp_path, bad=set(TENANTS), tenants_of_run=TENANTS[:2])
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert failure.step_key == "source"
    assert "failed for every tenant" in failure.step_failure_data.error.message


def test_one_tenant_runs_the_body_as_written(instance, tmp_path):
    result = run(instance, tmp_path, bad={"t1"}, tenants_of_run=["t1"])
    assert not result.success  # a run of one tenant fails as that tenant's run
    error = result.get_step_failure_events()[0].step_failure_data.error.cause
    assert (error.cls_name, error.message.strip()) == ("ValueError", "ValueError: bad rows for t1")
    ok = run(instance, tmp_path, bad=set(), tenants_of_run=["t3"])
    assert ok.output_for_node("registered") == {"tenant": "t3", "score": 30}


def test_the_retry_sensor_runs_each_failed_tenant_alone(instance, tmp_path):
    from ml_assets.defs.tenancy.retries import RETRY_OF_TAG, tenant_retry_sensor

    def tick(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
            return tenant_retry_sensor(context)

    cursor = tick(None).cursor  # starts from now
    result = run(instance, tmp_path, bad={"t2"})
    requests = tick(cursor).run_requests
    assert [(r.partition_key, sorted(k.to_user_string() for k in r.asset_selection))
            for r in requests] == [
        ("t2", ["announced", "registered", "scored", "source"]),
        ("t4", ["announced", "registered", "scored"])]  # t4 failed scored's blocking gate
    assert {r.tags[RETRY_OF_TAG] for r in requests} == {result.run_id}
    # the retry of t2 alone fails its own partition, as Dagster shows a failed tenant
    retry = run(instance, tmp_path, bad={"t2"}, tenants_of_run=["t2"],
                selection=["source", "scored", "registered", "announced"])
    assert not retry.success


def test_a_partition_named_like_a_path_fails_alone_and_writes_under_the_base_dir(instance,
                                                                                 tmp_path):
    # the UI's launch dialog creates any partition key Dagster accepts, '..' included
    escape = "../../escaped"
    instance.add_dynamic_partitions("tenant", [escape])
    result = run(instance, tmp_path / "io", bad=set(), tenants_of_run=[*TENANTS, escape])
    assert result.success
    sources = result.output_for_node("source")
    assert sources["t5"] == 5 and isinstance(sources[escape], TenantFailed)
    assert "invalid literal" in sources[escape].error
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
               and not p.is_relative_to(tmp_path / "dagster")}
    assert written and all(path.startswith("io/") for path in written), written
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
