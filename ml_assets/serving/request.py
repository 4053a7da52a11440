"""What a prediction request may say, checked before any model is touched (no Ray imports:
the bare benchmark floor uses the same checks)."""

from __future__ import annotations

import math
from typing import Any

from ml_assets.schema import FEATURES

ROUTE_PREFIX = "/v1"
MAX_ROWS = 1024


class RequestError(Exception):
    """A request refused with an HTTP status and a message naming what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
            raise RequestError(422, f"rows[{i}]: missing features {sorted(missing)}, "
                                    f"unknown features {sorted(unknown)}")
        values = []
        for name in FEATURES:
            value = row[name]
            if value is None:
                values.append(math.nan)  # imputed by the model, like a missing feature row
            elif isinstance(value, int | float) and not isinstance(value, bool):
                values.append(float(value))
            else:
                raise RequestError(422, f"rows[{i}].{name} must be a number or null, "
                                        f"got {value!r}")
        matrix.append(values)
    return matrix


def validate_customer_ids(ids: Any) -> list[int]:
    if not isinstance(ids, list) or not ids:
        raise RequestError(422, "customer_ids must be a non-empty list of integers")
    for i, value in enumerate(ids):
        if not isinstance(value, int) or isinstance(value, bool):
            raise RequestError(422, f"customer_ids[{i}] must be an integer, got {value!r}")
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


def tenant_of(path: str) -> str:
    """The tenant key of /v1/{tenant}/predict; RequestError 404 for any other path."""
    parts = path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != ROUTE_PREFIX.strip("/") or parts[2] != "predict":
        raise RequestError(404, "no such route: POST /v1/{tenant}/predict")
    return parts[1]
