"""The LLM endpoint's checks over a window of the gateway's request log."""

import pytest

from ml_assets.monitoring.llm_window import LLM_ERROR_RATE, LLM_TTFT_P95, evaluate
from ml_assets.serving import llm_log
from ml_assets.serving.llm_log import LlmRecord


def window(ttfts: list[float], statuses: list[int]) -> "llm_log.pa.Table":
    return llm_log.table([
        LlmRecord(tenant="acme", endpoint="completions", model_version="2", route="production",
                  stream=True, status=status, latency_ms=ttft * 3, ttft_ms=ttft,
                  prompt_tokens=5, completion_tokens=16, tokens_per_s=200.0, prompt_chars=20,
                  response_chars=300)
        for ttft, status in zip(ttfts, statuses, strict=True)])


def test_ttft_within_the_sla_and_refusals_are_not_errors():
    table = window([40.0] * 95 + [90.0] * 5, [200] * 90 + [422] * 10)
    found, (ttft, errors) = evaluate(table, ttft_sla_ms=100, max_error_rate=0.01,
                                     min_requests=20)
    assert (ttft.check, ttft.passed, ttft.rows) == (LLM_TTFT_P95, True, 90)
    assert ttft.observed == pytest.approx(40.0)  # p95 of the answered requests only
    assert (errors.check, errors.passed, errors.observed) == (LLM_ERROR_RATE, True, 0.0)
    assert found["requests"] == 100 and found["tokens_per_s_median"] == 200.0


def test_slow_first_tokens_and_server_errors_breach():
    table = window([40.0] * 50 + [400.0] * 50, [200] * 95 + [503] * 5)
    _, (ttft, errors) = evaluate(table, 100, 0.01, 20)
    assert ttft.breached and ttft.observed == pytest.approx(400.0)
    assert errors.breached and errors.observed == pytest.approx(0.05)


def test_too_few_requests_only_warn():
    _, outcomes = evaluate(window([500.0] * 3, [500] * 3), 100, 0.01, 20)
    assert all(not o.breached and not o.enough_data for o in outcomes)
    _, empty = evaluate(window([], []), 100, 0.01, 20)
    assert all("too few requests" in o.details["reason"] for o in empty)
