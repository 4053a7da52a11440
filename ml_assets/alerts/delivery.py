"""One alert per breach: the state between a check's evaluations and the receivers.

A breach fires once; a repeat while the check keeps failing on the same version is
suppressed; the first pass after it sends the resolve once. The state lives in a key-value
store (the Dagster instance's, shared by every step), and a receiver that was down keeps its
part pending: the next evaluation retries only what it missed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from ml_assets.alerts.receivers import Alert, ReceiverConfig, send

FIRING, RESOLVED = "firing", "resolved"


@dataclass
class AlertState:
    """What was last decided for one tenant's check, and which receivers have it."""

    status: str
    version: str | None
    starts_at: str
    alert: dict
    delivered: list[str] = field(default_factory=list)


@dataclass
class Delivery:
    """What one evaluation did: `fired`, `resolved` or None; receivers reached and failed."""

    transition: str | None = None
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def state_key(tenant: str, use_case: str, check: str) -> str:
    return f"ml_assets/alerts/{tenant}/{use_case}/{check}"


class AlertBook:
    """Alert states in a key-value store given as two functions (read many, write many)."""

    def __init__(self, read: Callable[[set[str]], dict[str, str]],
                 write: Callable[[dict[str, str]], None]) -> None:
        self._read, self._write = read, write

    def get(self, key: str) -> AlertState | None:
        raw = self._read({key}).get(key)
        return AlertState(**json.loads(raw)) if raw else None

    def put(self, key: str, state: AlertState) -> None:
        self._write({key: json.dumps(asdict(state))})


def evaluate(config: ReceiverConfig, book: AlertBook, alert: Alert, breached: bool,
             passed: bool) -> Delivery:
    """Act on one evaluation of the alert's check: `breached` (failed on enough data) fires
    unless already firing on this version; `passed` resolves a firing alert; anything else
    (too little data to judge) only retries what a receiver missed."""
    key = state_key(alert.tenant, alert.use_case, alert.name)
    state, result = book.get(key), Delivery()
    firing_here = state is not None and state.status == FIRING and (
        state.version == alert.model_version)
    if breached and not firing_here:
        state = AlertState(FIRING, alert.model_version, alert.starts_at.isoformat(),
                           alert.model_dump(mode="json"))
        result.transition = "fired"
    elif passed and state is not None and state.status == FIRING:
        firing = Alert.model_validate(state.alert)
        resolved = firing.model_copy(update={"ends_at": datetime.now(UTC)})
        state = AlertState(RESOLVED, state.version, state.starts_at,
                           resolved.model_dump(mode="json"))
        result.transition = "resolved"
    if state is None:
        return result
    missing = set(config.targets(alert.tenant)) - set(state.delivered)
    if missing:
        result.sent, result.failed = send(config, Alert.model_validate(state.alert), missing)
        state.delivered = sorted(set(state.delivered) | set(result.sent))
    if result.transition or result.sent:
        book.put(key, state)
    return result
