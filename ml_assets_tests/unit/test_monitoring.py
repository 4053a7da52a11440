"""Monitoring statistics on generated prediction logs with known properties."""

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import ks_2samp

from ml_assets.monitoring import statistics as monitoring
from ml_assets.monitoring.window import evaluate
from ml_assets.resources.monitoring import MonitoringPolicy, MonitoringThresholds
from ml_assets.schema import FEATURES
from ml_assets.serving import prediction_log
from ml_assets.tenants import Tenant
from ml_assets_testing import synthetic_log
from ml_assets_testing.synthetic_log import LogSpec

LIMITS = MonitoringThresholds()


@pytest.fixture(scope="module")
def profile() -> dict:
    return synthetic_log.reference("acme")


def outcomes(profile: dict, spec: LogSpec, limits: MonitoringThresholds = LIMITS) -> dict:
    _, found = evaluate(synthetic_log.generate("acme", spec), profile, spec.version, limits)
    return {o.check: o for o in found}


def test_ks_on_sorted_samples_equals_scipy():
    rng = np.random.default_rng(3)
    cases = [
        (rng.normal(0, 1, 20_000), rng.normal(0.05, 1, 3_000)),
        (rng.normal(0, 1, 500), rng.normal(1, 2, 700)),
        (rng.integers(0, 3, 5_000).astype(float), rng.integers(0, 4, 900).astype(float)),  # ties
        (np.concatenate([np.zeros(300), rng.random(700)]), rng.random(400)),
    ]
    for window, reference in cases:
        statistic, p_value = monitoring.ks_2samp_sorted(np.sort(window), np.sort(reference))
        expected = ks_2samp(window, reference, method="asymp")
        assert statistic == pytest.approx(expected.statistic, abs=1e-12)
        assert p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_no_drift_every_check_passes(profile):
    found = outcomes(profile, LogSpec())
    assert set(found) == {monitoring.PREDICTION_DRIFT, monitoring.FEATURE_DRIFT,
                          monitoring.LATENCY_P95, monitoring.ERROR_RATE}
    assert all(o.passed and o.enough_data for o in found.values()), found
    drift = found[monitoring.PREDICTION_DRIFT]
    assert drift.observed < 0.2 and drift.details["ks_p_value"] > 0.01
    assert found[monitoring.FEATURE_DRIFT].details["drifted_features"] == {}


def test_a_shifted_feature_is_flagged_and_only_it(profile):
    found = outcomes(profile, LogSpec(feature_shift={"monthly_spend": 0.5}))
    check = found[monitoring.FEATURE_DRIFT]
    assert not check.passed and check.breached
    assert list(check.details["drifted_features"]) == ["monthly_spend"]
    stats = check.details["drifted_features"]["monthly_spend"]
    assert stats["ks_p_adjusted"] < LIMITS.feature_drift_alpha
    assert stats["psi"] >= LIMITS.feature_drift_min_psi
    assert stats["window_mean"] > stats["reference_mean"]
    assert found[monitoring.PREDICTION_DRIFT].passed  # predictions were not shifted


def test_prediction_mean_shifted_3_sigma_fails_drift(profile):
    found = outcomes(profile, LogSpec(prediction_shift=3.0))
    check = found[monitoring.PREDICTION_DRIFT]
    assert check.breached
    assert check.observed == pytest.approx(3.0, abs=0.15)  # in reference sigmas
    assert check.threshold == 2.0 and "sigma" in check.details["basis"]
    assert check.details["ks_p_value"] < 1e-6
    assert found[monitoring.FEATURE_DRIFT].passed


def test_two_percent_errors_fail_the_error_rate(profile):
    found = outcomes(profile, LogSpec(requests=5000, error_share=0.02))
    check = found[monitoring.ERROR_RATE]
    assert check.breached and 0.015 < check.observed < 0.025
    assert check.details["failed_requests"] == round(check.observed * 5000)
    assert found[monitoring.PREDICTION_DRIFT].passed  # failed rows carry no prediction


def test_client_errors_do_not_count_as_failures(profile):
    table = synthetic_log.generate("acme", LogSpec(requests=1000))
    status = np.full(1000, 200, dtype=np.int16)
    status[:100] = 422
    table = table.set_column(table.schema.get_field_index("status"), "status",
                             pa.array(status, pa.int16()))
    check = monitoring.error_rate(monitoring.Requests.from_log(table), 0.01, 100)
    assert check.passed and check.details["client_errors_not_counted"] == 100


def test_slow_requests_fail_the_latency_sla(profile):
    found = outcomes(profile, LogSpec(slow_share=0.1))
    check = found[monitoring.LATENCY_P95]
    assert check.breached and check.observed > 50.0 and check.threshold == 50.0
    assert check.details["latency_p50_ms"] < 15
    assert outcomes(profile, LogSpec())[monitoring.LATENCY_P95].observed < 20


def test_too_few_rows_warn_and_never_pass(profile):
    found = outcomes(profile, LogSpec(requests=50))
    for check in found.values():
        assert not check.passed and not check.enough_data and not check.breached
        assert "too few" in check.details["reason"]
    _, found = evaluate(synthetic_log.generate("acme", LogSpec()), None, None, LIMITS)
    drift = {o.check: o for o in found}[monitoring.PREDICTION_DRIFT]
    assert not drift.passed and not drift.enough_data
    assert "no request answered by the production route" in drift.details["reason"]


def test_a_request_counts_once_however_many_rows_it_scored():
    table = synthetic_log.generate("acme", LogSpec(requests=300))
    ids = table["request_id"].to_pylist()
    ids[:200] = ["batch"] * 200  # one request of 200 rows, slow
    latency = table["latency_ms"].to_numpy().copy()
    latency[:200] = 500.0
    table = table.set_column(0, "request_id", pa.array(ids))
    table = table.set_column(table.schema.get_field_index("latency_ms"), "latency_ms",
                             pa.array(latency))
    requests = monitoring.Requests.from_log(table)
    assert len(requests) == 101
    assert np.count_nonzero(requests.latency_ms == 500.0) == 1
    assert requests.throughput() == pytest.approx(
        101 / (requests.last_ts - requests.first_ts))


def test_thresholds_are_per_tenant(profile):
    policy = MonitoringPolicy(tenant_thresholds={"globex": {"latency_p95_sla_ms": 200.0}})
    assert policy.for_tenant(Tenant("acme")).latency_p95_sla_ms == 50.0
    strict, lenient = policy.for_tenant(Tenant("acme")), policy.for_tenant(Tenant("globex"))
    slow = LogSpec(slow_share=0.1)
    assert not outcomes(profile, slow, strict)[monitoring.LATENCY_P95].passed
    assert outcomes(profile, slow, lenient)[monitoring.LATENCY_P95].passed
    assert lenient.max_error_rate == 0.01  # fields left out keep the defaults
    with pytest.raises(ValueError, match="invalid tenant 'Not_A_Tenant'"):
        MonitoringPolicy(tenant_thresholds={"Not_A_Tenant": {}})
    with pytest.raises(Exception, match="max_error_rate"):
        MonitoringThresholds(max_error_rate=2.0)


def test_bad_profiles_are_refused_before_any_check():
    rows = synthetic_log.feature_rows("acme", 100, 1)
    without_nps = monitoring.reference_profile(rows.drop(columns=["nps_score"]), np.zeros(100))
    with pytest.raises(monitoring.ProfileError, match="nps_score"):
        monitoring.validate_profile(without_nps, FEATURES)  # the use case's features
    with pytest.raises(monitoring.ProfileError, match="99 predictions for 100 rows"):
        monitoring.reference_profile(rows, np.zeros(99))
    with pytest.raises(monitoring.ProfileError, match="format"):
        monitoring.validate_profile({"format": 0}, FEATURES)


def test_profile_describes_the_reference_rows():
    rows = synthetic_log.feature_rows("acme", 8000, 1)
    rows.loc[:799, "nps_score"] = np.nan
    predictions = synthetic_log.predictions(8000, 2)
    profile = monitoring.validate_profile(monitoring.reference_profile(rows, predictions),
                                          FEATURES)
    nps = profile["features"]["nps_score"]
    assert nps["count"] == 7200 and nps["null_fraction"] == pytest.approx(0.1)
    assert nps["mean"] == pytest.approx(rows["nps_score"].mean())
    assert len(nps["sample"]) == monitoring.SAMPLE_SIZE and nps["sample"] == sorted(nps["sample"])
    assert sum(nps["psi_shares"]) == pytest.approx(1.0)
    tier = profile["features"]["plan_tier"]  # 3 values: the decile edges collapse, shares hold
    assert len(tier["psi_edges"]) < 9 and sum(tier["psi_shares"]) == pytest.approx(1.0)
    assert profile["prediction"]["std"] == pytest.approx(predictions.std(ddof=1))
    assert set(profile["features"]) == set(FEATURES)


def test_a_worse_canary_is_rolled_back_and_a_healthy_one_kept():
    end = datetime.now(UTC)
    production = synthetic_log.generate("acme", LogSpec(requests=2000, version="1", end=end))
    healthy = synthetic_log.generate("acme", LogSpec(
        requests=400, version="2", route=prediction_log.CANARY_ROUTE, seed=5, end=end))
    broken = synthetic_log.generate("acme", LogSpec(
        requests=400, version="2", route=prediction_log.CANARY_ROUTE, seed=5, end=end,
        error_share=0.05))
    for canary, expect_pass in ((healthy, True), (broken, False)):
        requests = monitoring.Requests.from_log(pa.concat_tables([production, canary]))
        verdict = monitoring.canary_health(requests, "1", "2", 0.01, 50.0, 100)
        assert verdict.passed is expect_pass
        assert verdict.details["production"]["requests"] == 2000
        assert verdict.details["canary"]["requests"] == 400
    assert verdict.details["breached"] == ["error_rate"]
    assert 0.03 < verdict.details["canary"]["error_rate"] < 0.07
    few = monitoring.Requests.from_log(pa.concat_tables([production, broken.slice(0, 20)]))
    assert not monitoring.canary_health(few, "1", "2", 0.01, 50.0, 100).enough_data


def test_new_log_files_request_monitoring_for_their_tenants_in_one_run(tmp_path):
    from datetime import timedelta

    import dagster as dg

    from ml_assets.defs.monitoring.sensors import newest_log_file
    from ml_assets_testing.chain import chain
    prediction_log_sensor = chain().sensor("prediction_log_sensor")
    from ml_assets.resources.object_store import ObjectStore

    store = ObjectStore(root=str(tmp_path))
    acme, globex = Tenant("acme"), Tenant("globex")

    def tick(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor,
                                     resources={"object_store": store}) as context:
            return prediction_log_sensor(context)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [acme.key, globex.key])
        assert tick(None).run_requests == []  # no log yet
        records = synthetic_log.generate(acme.key, LogSpec(requests=3)).to_pylist()
        prediction_log.write(store, acme, "churn", records)
        result = tick(None)
        assert [r.partition_key for r in result.run_requests] == [acme.key]
        assert [k.path[-1] for k in result.run_requests[0].asset_selection] == [
            "model_monitoring"]
        assert tick(result.cursor).run_requests == []  # nothing new
        prediction_log.write(store, acme, "churn", records)
        again = tick(result.cursor)
        assert [r.partition_key for r in again.run_requests] == [acme.key]
        assert again.run_requests[0].run_key != result.run_requests[0].run_key
        prediction_log.write(store, globex, "churn", synthetic_log.generate(
            globex.key, LogSpec(requests=3)).to_pylist())
        prediction_log.write(store, acme, "churn", records)
        both = tick(again.cursor).run_requests  # new rows for both: one run over them
        assert [(r.partition_key, r.tags["dagster/asset_partition_range_start"],
                 r.tags["dagster/asset_partition_range_end"]) for r in both] == [
            (None, acme.key, globex.key)]
    assert newest_log_file(store, Tenant("initech")) is None  # acme's files are not another's
    assert newest_log_file(store, acme, datetime.now(UTC) + timedelta(days=3)) is None
