"""A window of a tenant's LLM request log held to its limits: time to first token within the
seed's 100 ms SLA and few server errors; tokens/s and sizes alongside."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ml_assets.monitoring.statistics import Outcome

if TYPE_CHECKING:
    import pyarrow as pa

LLM_TTFT_P95 = "llm_ttft_p95_within_sla"
LLM_ERROR_RATE = "llm_error_rate_below_1_percent"


def _too_few(check: str, requests: int, needed: int, threshold: float) -> Outcome:
    return Outcome(check, passed=False, observed=None, threshold=threshold, rows=requests,
                   enough_data=False,
                   details={"reason": f"too few requests in the window: {requests} < {needed}"})


def summary(table: pa.Table) -> dict[str, float | int | None]:
    """Requests, error rate, time-to-first-token and latency percentiles, tokens/s and sizes
    of the answered (200) requests: the metadata of every run."""
    status = table["status"].to_numpy(zero_copy_only=False)
    answered = table.filter(np.asarray(status == 200))

    def values(name: str) -> np.ndarray:
        column = answered[name].to_numpy(zero_copy_only=False).astype(np.float64)
        return column[~np.isnan(column)]

    def percentile(name: str, q: float) -> float | None:
        found = values(name)
        return float(np.percentile(found, q)) if found.size else None

    def median(name: str) -> float | None:
        return percentile(name, 50)

    return {"requests": int(len(table)), "answered": int(len(answered)),
            "server_errors": int(np.count_nonzero(status >= 500)),
            "ttft_p50_ms": percentile("ttft_ms", 50), "ttft_p95_ms": percentile("ttft_ms", 95),
            "latency_p95_ms": percentile("latency_ms", 95),
            "tokens_per_s_median": median("tokens_per_s"),
            "prompt_chars_median": median("prompt_chars"),
            "response_chars_median": median("response_chars")}


def evaluate(table: pa.Table, ttft_sla_ms: float, max_error_rate: float,
             min_requests: int) -> tuple[dict, list[Outcome]]:
    """The window's summary and its two checks. Refusals (4xx) are the caller's doing: they
    count as requests, not as errors."""
    found = summary(table)
    requests, answered = found["requests"], found["answered"]
    if answered < min_requests:
        ttft = _too_few(LLM_TTFT_P95, answered, min_requests, ttft_sla_ms)
    else:
        ttft = Outcome(LLM_TTFT_P95, passed=found["ttft_p95_ms"] <= ttft_sla_ms,
                       observed=found["ttft_p95_ms"], threshold=ttft_sla_ms, rows=answered,
                       details={"ttft_p50_ms": found["ttft_p50_ms"],
                                "tokens_per_s_median": found["tokens_per_s_median"]})
    if requests < min_requests:
        errors = _too_few(LLM_ERROR_RATE, requests, min_requests, max_error_rate)
    else:
        rate = found["server_errors"] / requests
        errors = Outcome(LLM_ERROR_RATE, passed=rate <= max_error_rate, observed=rate,
                         threshold=max_error_rate, rows=requests,
                         details={"server_errors": found["server_errors"]})
    return found, [ttft, errors]
