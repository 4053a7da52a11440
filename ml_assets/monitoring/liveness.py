"""Whether a deployed endpoint answers: judged from its own traffic when it has some, else from
a synthetic probe request, so a dead or idle replica is noticed within minutes."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ml_assets.monitoring.statistics import Outcome

if TYPE_CHECKING:
    import pyarrow as pa

SERVING_ALIVE = "serving_alive"


def last_answer_age_s(table: pa.Table, now: datetime) -> float | None:
    """Seconds since the newest request the production route answered with a 200."""
    import pyarrow.compute as pc

    from ml_assets.serving.prediction_log import PRODUCTION_ROUTE

    answered = table.filter(pc.and_(pc.equal(table["route"], PRODUCTION_ROUTE),
                                    pc.equal(table["status"], 200)))
    if not len(answered):
        return None
    newest = pc.max(answered["ts"]).as_py()
    return max(0.0, (now - newest).total_seconds())


def from_traffic(age_s: float, quiet_s: float) -> Outcome:
    """Alive on its own traffic: a 200 no older than quiet_s."""
    return Outcome(SERVING_ALIVE, passed=True, observed=age_s, threshold=quiet_s, rows=1,
                   details={"basis": "traffic",
                            "reason": f"the production route answered {age_s:.0f} s ago"})


def from_probe(status: int | None, rows_answered: int, latency_ms: float, quiet_s: float,
               error: str | None) -> Outcome:
    """Alive by a probe: one production request with one row, answered 200 with one
    prediction. observed: 1.0 alive, 0.0 dead (the threshold is 1.0)."""
    alive = status == 200 and rows_answered == 1
    reason = (f"probe answered 200 in {latency_ms:.1f} ms" if alive else
              f"probe failed: {error or f'status {status}, {rows_answered} predictions'}")
    return Outcome(SERVING_ALIVE, passed=alive, observed=1.0 if alive else 0.0, threshold=1.0,
                   rows=1, details={"basis": "probe", "probe_status": status,
                                    "probe_latency_ms": latency_ms,
                                    "quiet_s": quiet_s, "reason": reason})


def not_deployed(reason: str) -> Outcome:
    return Outcome(SERVING_ALIVE, passed=False, observed=None, threshold=1.0, rows=0,
                   enough_data=False, details={"reason": reason})
