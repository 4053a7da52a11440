"""serving_alive's verdicts: from the endpoint's own traffic, or from a probe."""

from datetime import UTC, datetime, timedelta

from ml_assets.monitoring import liveness
from ml_assets.serving import prediction_log
from ml_assets_testing import synthetic_log
from ml_assets_testing.synthetic_log import LogSpec


def test_the_age_of_the_newest_answer_counts_only_200s_of_the_production_route():
    end = datetime.now(UTC) - timedelta(minutes=3)
    table = synthetic_log.generate("acme", LogSpec(requests=50, end=end, span_s=60))
    age = liveness.last_answer_age_s(table, end + timedelta(minutes=3))
    assert 170 <= age <= 190
    shadow = synthetic_log.generate("acme", LogSpec(requests=50,
                                                    route=prediction_log.SHADOW_ROUTE))
    assert liveness.last_answer_age_s(shadow, datetime.now(UTC)) is None
    failed = synthetic_log.generate("acme", LogSpec(requests=50, error_share=1.0))
    assert liveness.last_answer_age_s(failed, datetime.now(UTC)) is None


def test_probe_outcomes():
    alive = liveness.from_probe(200, 1, 4.2, 300, None)
    assert alive.passed and alive.observed == 1.0 and "4.2 ms" in alive.details["reason"]
    dead = liveness.from_probe(None, 0, 10_000, 300, "http://x: connection refused")
    assert dead.breached and dead.observed == 0.0 and "connection refused" in (
        dead.details["reason"])
    refused = liveness.from_probe(503, 0, 2.0, 300, "no Production version")
    assert refused.breached and "no Production version" in refused.details["reason"]
    assert not liveness.not_deployed("none").breached  # a warning, not an alert
    assert liveness.from_traffic(12.0, 300).passed
