"""What a prediction request may say, checked before any model is touched (no Ray imports:
the bare benchmark floor uses the same checks)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

ROUTE_PREFIX = "/v1"
MAX_ROWS = 1024
MAX_BODY_BYTES = 1 << 20  # 1,024 rows of 10 features fit in a quarter of it
# Beyond any real feature value, and far below float32's 3.4e38, where the model's arithmetic
# would overflow into inf / NaN predictions
MAX_ABS_VALUE = 1e12
ENTITY_KEY_RANGE = (-(1 << 63), (1 << 63) - 1)  # int64: what the online store keys by
MAX_KEY_CHARS = 128
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
KEYS, CUSTOMER_IDS = "keys", "customer_ids"
# churn's clients send "customer_ids": accepted as its "keys" so they keep working
KEY_ALIASES = {"churn": (CUSTOMER_IDS,)}
LLM_PATH = "llm"  # /v1/{tenant}/llm/... is the LLM gateway's, never a use case
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


def validate_rows(rows: Any, features: list[str]) -> list[list[float]]:
    """Feature rows [{feature: number|null, ...}, ...] as a matrix in `features` order: each
    row carries exactly the use case's features."""
    if not isinstance(rows, list) or not rows:
        raise RequestError(422, "rows must be a non-empty list of {feature: value} objects")
    expected = set(features)
    matrix = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(422, f"rows[{i}] must be an object of feature values")
        missing, unknown = expected - row.keys(), row.keys() - expected
        if missing or unknown:
            raise RequestError(422, f"rows[{i}]: missing features {sorted(missing)}, unknown "
                                    f"features {[_shown(k) for k in sorted(unknown)[:10]]}")
        matrix.append([_feature_value(row[name], f"rows[{i}].{name}") for name in features])
    return matrix


def validate_keys(keys: Any, key_type: str, field: str = KEYS) -> list[int] | list[str]:
    """Entity keys of the use case's key type: int keys in the int64 range, string keys
    non-empty, at most MAX_KEY_CHARS, no control characters; 422 naming `field[i]`."""
    kind = "integers" if key_type == "int" else "strings"
    if not isinstance(keys, list) or not keys:
        raise RequestError(422, f"{field} must be a non-empty list of {kind}")
    for i, value in enumerate(keys):
        where = f"{field}[{i}]"
        if key_type == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise RequestError(422, f"{where} must be an integer, got {_shown(value)}")
            if not ENTITY_KEY_RANGE[0] <= value <= ENTITY_KEY_RANGE[1]:
                raise RequestError(422, f"{where} is out of the 64-bit key range, got "
                                        f"{_shown(value)}")
        elif key_type == "string":
            if not isinstance(value, str):
                raise RequestError(422, f"{where} must be a string, got {_shown(value)}")
            if not value:
                raise RequestError(422, f"{where} must not be empty")
            if len(value) > MAX_KEY_CHARS:
                raise RequestError(422, f"{where} has {len(value)} characters; at most "
                                        f"{MAX_KEY_CHARS}")
            if CONTROL_CHARS.search(value):
                raise RequestError(422, f"{where} holds a control character: {_shown(value)}")
        else:
            raise ValueError(f"unknown key_type {key_type!r}")
    return keys


def validate_customer_ids(ids: Any) -> list[int]:
    """The churn clients' `customer_ids`: int entity keys (see validate_keys)."""
    return validate_keys(ids, "int", CUSTOMER_IDS)


def parse_body(body: Any, aliases: tuple[str, ...] = ()) -> tuple[str, list, str]:
    """("rows" | "keys", the list, the field as the client named it) of a request body:
    exactly one of "rows", "keys" or a key alias of the use case (churn's "customer_ids")."""
    fields = ("rows", KEYS, *aliases)
    shown = " or ".join(f'{{"{f}": [...]}}' for f in fields)
    if not isinstance(body, dict):
        raise RequestError(422, f"body must be {shown}")
    given = [field for field in fields if field in body]
    unknown = body.keys() - {*fields, "key"}
    if len(given) != 1 or unknown:
        raise RequestError(422, "body must have exactly one of "
                                f"{', '.join(repr(f) for f in fields)} (and optionally "
                                f"'key'); got fields {[_shown(k) for k in sorted(body)[:10]]}")
    field = given[0]
    items = body[field]
    if isinstance(items, list) and len(items) > MAX_ROWS:
        raise RequestError(413, f"{len(items)} {field} in one request; at most {MAX_ROWS}")
    return ("rows" if field == "rows" else KEYS), items, field


def key_aliases(use_case: str) -> tuple[str, ...]:
    """Older body fields still accepted for a use case's entity keys."""
    return KEY_ALIASES.get(use_case, ())


def predict_target(path: str) -> tuple[str, str, bool]:
    """(tenant, use case, staging?) of /v1/{tenant}/{use_case}/predict or
    /v1/{tenant}/{use_case}/staging/predict; RequestError 404 for any other path. Whether the
    use case is declared is the caller's check (it needs the declarations)."""
    parts = path.strip("/").split("/")
    if parts[0] == ROUTE_PREFIX.strip("/") and parts[-1] == "predict" and (
            len(parts) == 4 or (len(parts) == 5 and parts[3] == "staging")):
        if parts[2] == LLM_PATH:
            raise RequestError(404, f"/v1/{{tenant}}/{LLM_PATH}/ is the LLM gateway's path, "
                                    "not a use case's")
        return parts[1], parts[2], len(parts) == 5
    raise RequestError(404, "no such route: POST /v1/{tenant}/{use_case}/predict or "
                            "/v1/{tenant}/{use_case}/staging/predict")


def tenant_of(path: str) -> str:
    """The tenant key of a prediction path (see predict_target)."""
    return predict_target(path)[0]
