"""What a prediction request may say, checked before any model is touched."""

import math

import pytest

from ml_assets.schema import FEATURES
from ml_assets.serving.request import (
    MAX_BODY_BYTES,
    RequestError,
    decode_json,
    parse_body,
    validate_customer_ids,
    validate_rows,
)


def _status(call) -> tuple[int, str]:
    with pytest.raises(RequestError) as caught:
        call()
    return caught.value.status, str(caught.value)


@pytest.mark.parametrize("raw, named", [
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"rows": [{"a": Infinity}]}', "Infinity"),
    (b'{"rows": [{"a": -Infinity}]}', "-Infinity"),
    (b'{"rows": [{"a": NaN}]}', "NaN"),
    (b'{"rows": [1' + b"0" * 5000 + b"]}", "not JSON"),
    (b'{"rows": ', "not JSON"),
    (b"\xff\xfe", "not JSON"),
])
def test_undecodable_bodies_are_422_naming_the_problem(raw, named):
    status, message = _status(lambda: decode_json(raw))
    assert status == 422 and named in message


def test_a_body_over_the_limit_is_413_before_parsing():
    status, message = _status(lambda: decode_json(b" " * (MAX_BODY_BYTES + 1)))
    assert status == 413 and str(MAX_BODY_BYTES) in message


@pytest.mark.parametrize("value", [1e308, -1e308, math.inf, -math.inf, math.nan, 10**400,
                                   -(10**400), 1e13])
def test_out_of_range_feature_values_are_422_naming_the_field(value):
    row = dict.fromkeys(FEATURES, 1.0) | {"nps_score": value}
    status, message = _status(lambda: validate_rows([row]))
    assert status == 422 and "rows[0].nps_score" in message and len(message) < 200


def test_finite_values_and_nulls_pass():
    row = dict.fromkeys(FEATURES, 1e12) | {"nps_score": None, "plan_tier": -3}
    matrix = validate_rows([row])
    assert matrix[0][FEATURES.index("plan_tier")] == -3.0
    assert math.isnan(matrix[0][FEATURES.index("nps_score")])


@pytest.mark.parametrize("ids, index", [([2**63], 0), ([1, -(2**63) - 1], 1), ([10**400], 0)])
def test_customer_ids_outside_int64_are_422(ids, index):
    status, message = _status(lambda: validate_customer_ids(ids))
    assert status == 422 and f"customer_ids[{index}]" in message and len(message) < 200


def test_int64_bounds_are_customer_ids():
    assert validate_customer_ids([2**63 - 1, -(2**63)]) == [2**63 - 1, -(2**63)]


def test_a_body_is_one_of_rows_or_customer_ids():
    assert parse_body(decode_json(b'{"customer_ids": [3], "key": "k"}')) == ("customer_ids", [3])
    status, _ = _status(lambda: parse_body(decode_json(b"[]")))
    assert status == 422


def test_an_oversized_body_is_dropped_unparsed_then_refused_with_413():
    """Read (up to LINGER_BYTES) before the answer, so a real client sees the 413, not a
    reset of a connection it is still sending on."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from ml_assets.serving.request import LINGER_BYTES, RequestError, refuse_oversized

    async def endpoint(request):
        try:
            await refuse_oversized(request)
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, exc.status)
        return JSONResponse({"read": len(await request.body())})

    client = TestClient(Starlette(routes=[Route("/", endpoint, methods=["POST"])]))
    refused = client.post("/", content=b" " * (2 << 20))
    assert refused.status_code == 413 and f"at most {MAX_BODY_BYTES}" in refused.json()["error"]
    assert client.post("/", content=b" " * (LINGER_BYTES + 1)).status_code == 413
    assert client.post("/", content=b"{}").json() == {"read": 2}
