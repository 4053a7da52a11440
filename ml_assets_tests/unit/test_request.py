"""What a prediction request may say, checked before any model is touched."""

import math

import pytest

from ml_assets.serving.request import (
    MAX_BODY_BYTES,
    MAX_KEY_CHARS,
    RequestError,
    decode_json,
    key_aliases,
    parse_body,
    predict_target,
    validate_customer_ids,
    validate_keys,
    validate_rows,
)
from ml_assets.use_case import load

FEATURES = load("churn").features


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
    status, message = _status(lambda: validate_rows([row], FEATURES))
    assert status == 422 and "rows[0].nps_score" in message and len(message) < 200


def test_finite_values_and_nulls_pass():
    row = dict.fromkeys(FEATURES, 1e12) | {"nps_score": None, "plan_tier": -3}
    matrix = validate_rows([row], FEATURES)
    assert matrix[0][FEATURES.index("plan_tier")] == -3.0
    assert math.isnan(matrix[0][FEATURES.index("nps_score")])


@pytest.mark.parametrize("ids, index", [([2**63], 0), ([1, -(2**63) - 1], 1), ([10**400], 0)])
def test_customer_ids_outside_int64_are_422(ids, index):
    status, message = _status(lambda: validate_customer_ids(ids))
    assert status == 422 and f"customer_ids[{index}]" in message and len(message) < 200


def test_int64_bounds_are_customer_ids():
    assert validate_customer_ids([2**63 - 1, -(2**63)]) == [2**63 - 1, -(2**63)]


def test_a_body_is_one_of_rows_or_keys_and_churn_keeps_customer_ids():
    churn = key_aliases("churn")
    assert parse_body(decode_json(b'{"keys": [3], "key": "k"}'), churn) == ("keys", [3], "keys")
    assert parse_body(decode_json(b'{"customer_ids": [3]}'), churn) == (
        "keys", [3], "customer_ids")
    assert parse_body({"rows": [{}]}) == ("rows", [{}], "rows")
    for body, aliases in [([], churn), ({"customer_ids": [3]}, key_aliases("spend")),
                          ({"keys": [1], "customer_ids": [1]}, churn), ({}, churn)]:
        status, message = _status(lambda: parse_body(body, aliases))  # noqa: B023
        assert status == 422 and "rows" in message, body


def test_rows_carry_exactly_the_use_cases_features():
    features = ["spend_30d", "visits"]
    assert validate_rows([{"visits": 2, "spend_30d": 1.5}], features) == [[1.5, 2.0]]
    status, message = _status(lambda: validate_rows([{"spend_30d": 1.0}, {}], features))
    assert status == 422 and "rows[0]" in message and "visits" in message
    status, message = _status(lambda: validate_rows(
        [{"spend_30d": 1.0, "visits": 1, "nps_score": 3}], features))
    assert status == 422 and "unknown features" in message and "nps_score" in message


@pytest.mark.parametrize("keys, index, named", [
    ([""], 0, "empty"),
    (["ok", "x" * (MAX_KEY_CHARS + 1)], 1, str(MAX_KEY_CHARS)),
    (["ok", "a\nb"], 1, "control"),
    (["\x00"], 0, "control"),
    (["tab\there"], 0, "control"),
    (["\x7f"], 0, "control"),
    (["ok", 7], 1, "string"),
    ([None], 0, "string"),
])
def test_bad_string_keys_are_422_naming_the_index(keys, index, named):
    status, message = _status(lambda: validate_keys(keys, "string"))
    assert status == 422 and f"keys[{index}]" in message and named in message
    assert len(message) < 200


def test_string_keys_pass_and_int_keys_refuse_strings():
    keys = ["acct-1", "x" * MAX_KEY_CHARS, "ünïcode ok", "7"]
    assert validate_keys(keys, "string") == keys
    status, message = _status(lambda: validate_keys(["7"], "int", "customer_ids"))
    assert status == 422 and "customer_ids[0] must be an integer" in message
    for empty in ([], "abc", None):
        assert _status(lambda: validate_keys(empty, "string"))[0] == 422  # noqa: B023


def test_the_path_names_tenant_and_use_case():
    assert predict_target("/v1/acme/churn/predict") == ("acme", "churn", False)
    assert predict_target("/v1/acme/spend/staging/predict") == ("acme", "spend", True)
    for path in ("/v1/acme/predict", "/v2/acme/churn/predict",
                 "/v1/acme/churn/x/predict", "/v1/acme/churn/predict/more"):
        status, message = _status(lambda: predict_target(path))  # noqa: B023
        assert status == 404 and "/v1/{tenant}/{use_case}/predict" in message, path
    status, message = _status(lambda: predict_target("/v1/acme/llm/predict"))
    assert status == 404 and "LLM gateway" in message


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
