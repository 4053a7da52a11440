"""What a prediction request may say, checked before any model is touched (no Ray imports:
the bare benchmark floor uses the same checks)."""

from __future__ import annotations

import json
import math
from typing import Any

from ml_assets.schema import FEATURES

ROUTE_PREFIX = "/v1"
MAX_ROWS = 1024
MAX_BODY_BYTES = 1 << 20  # 1,024 rows of 10 features fit in a quarter of it
# Beyond any real feature value, and far below float32's 3.4e38, where the model's arithmetic
# would overflow into inf / NaN predictions
MAX_ABS_VALUE = 1e12
ENTITY_KEY_RANGE = (-(1 << 63), (1 << 63) - 1)  # int64: what the online store keys by
# an oversized body is read and dropped up to this before its 413 (nginx's lingering close):
# answered while the client still sends, the connection is reset and the client never sees why
LINGER_BYTES = 8 << 20


class RequestError(Exception):
    """A request refused with an HTTP status and a message naming what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def refuse_oversized(request: Any) -> None:
    """RequestError 413 for a body declared over MAX_BODY_BYTES, after dropping up to
    LINGER_BYTES of it unparsed (nothing past that is read: such a client gets a reset)."""
    declared = request.headers.get("content-length", "")
    if not (declared.isdigit() and int(declared) > MAX_BODY_BYTES):
        return
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > LINGER_BYTES:
            break
    raise RequestError(413, f"body of {declared} bytes; at most {MAX_BODY_BYTES}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def decode_json(raw: bytes) -> Any:
    """The body as JSON: at most MAX_BODY_BYTES, only finite numbers (no NaN / Infinity
    literals), nesting the parser can follow; RequestError 413 / 422 naming what is wrong."""
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(413, f"body of {len(raw)} bytes; at most {MAX_BODY_BYTES}")
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestError(422, "body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer of > 4,300 digits
        raise RequestError(422, f"body is not JSON: {_shown(str(exc))}") from None


def _refuse_constant(name: str) -> None:
    raise RequestError(422, f"{name} is not a finite number: JSON numbers only")


def _feature_value(value: Any, where: str) -> float:
    if value is None:
        return math.nan  # imputed by the model, like a missing feature row
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RequestError(422, f"{where} must be a number or null, got {_shown(value)}")
    # an int is compared before float(): float(10**400) raises OverflowError
    if isinstance(value, int) and abs(value) > MAX_ABS_VALUE or (
            isinstance(value, float) and not abs(value) <= MAX_ABS_VALUE):
        raise RequestError(422, f"{where} is out of range: a finite number with "
                                f"|value| <= {MAX_ABS_VALUE:g}, got {_shown(value)}")
    return float(value)


def validate_rows(rows: Any) -> list[list[float]]:
    """Feature rows [{feature: number|null, ...}, ...] as a matrix in FEATURES order."""
    if not isinstance(rows, list) or not rows:
        raise RequestError(422, "rows must be a non-empty list of {feature: value} objects")
    matrix = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(422, f"rows[{i}] must be an object of feature values")
        missing, unknown = set(FEATURES) - row.keys(), row.keys() - set(FEATURES)
        if missing or unknown:
            raise RequestError(422, f"rows[{i}]: missing features {sorted(missing)}, unknown "
                                    f"features {[_shown(k) for k in sorted(unknown)[:10]]}")
        matrix.append([_feature_value(row[name], f"rows[{i}].{name}") for name in FEATURES])
    return matrix


def validate_customer_ids(ids: Any) -> list[int]:
    if not isinstance(ids, list) or not ids:
        raise RequestError(422, "customer_ids must be a non-empty list of integers")
    for i, value in enumerate(ids):
        if not isinstance(value, int) or isinstance(value, bool):
            raise RequestError(422, f"customer_ids[{i}] must be an integer, got {_shown(value)}")
        if not ENTITY_KEY_RANGE[0] <= value <= ENTITY_KEY_RANGE[1]:
            raise RequestError(422, f"customer_ids[{i}] is out of the 64-bit key range, got "
                                    f"{_shown(value)}")
    return ids


def parse_body(body: Any) -> tuple[str, list]:
    """("rows" | "customer_ids", the list) of a request body; exactly one of the two."""
    if not isinstance(body, dict):
        raise RequestError(422, 'body must be {"rows": [...]} or {"customer_ids": [...]}')
    given = [field for field in ("rows", "customer_ids") if field in body]
    unknown = body.keys() - {"rows", "customer_ids", "key"}
    if len(given) != 1 or unknown:
        raise RequestError(422, 'body must have exactly one of "rows", "customer_ids" '
                                f'(and optionally "key"); got fields {sorted(body)}')
    items = body[given[0]]
    if isinstance(items, list) and len(items) > MAX_ROWS:
        raise RequestError(413, f"{len(items)} {given[0]} in one request; at most {MAX_ROWS}")
    return given[0], items


def predict_target(path: str) -> tuple[str, bool]:
    """(tenant, staging?) of /v1/{tenant}/predict or /v1/{tenant}/staging/predict; RequestError
    404 for any other path."""
    parts = path.strip("/").split("/")
    if parts[0] == ROUTE_PREFIX.strip("/") and parts[-1] == "predict" and (
            len(parts) == 3 or (len(parts) == 4 and parts[2] == "staging")):
        return parts[1], len(parts) == 4
    raise RequestError(404, "no such route: POST /v1/{tenant}/predict or "
                            "/v1/{tenant}/staging/predict")


def tenant_of(path: str) -> str:
    """The tenant key of a prediction path (see predict_target)."""
    return predict_target(path)[0]
