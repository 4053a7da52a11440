"""Triton's model names, configuration and answers, and the route's engine: no server."""

from __future__ import annotations

import ast
import json

import dagster as dg
import numpy as np
import pytest

from ml_assets.schema import FEATURES
from ml_assets.serving.routing import RAY, TRITON, Route
from ml_assets.serving.triton import (
    HEADER_LENGTH,
    INPUT,
    OUTPUT,
    PYTHON_MODEL,
    TritonError,
    infer_request,
    model_config,
    model_name,
    scores,
)
from ml_assets.settings import load_settings
from ml_assets.tenants import InvalidTenantError, Tenant

ACME = Tenant("acme")


def test_a_model_is_named_only_from_a_tenant():
    assert model_name(ACME) == "acme-churn"
    assert model_config(ACME, ["2"], "python")["name"] == "acme-churn"
    # a tenant key cannot spell another tenant's model: it always gains the suffix
    assert model_name(Tenant("globex-churn")) == "globex-churn-churn"
    with pytest.raises(InvalidTenantError):
        model_name(Tenant("../globex"))


def test_model_config_per_backend():
    python = model_config(ACME, ["3", "2"], "python", "/srv/.venv-triton")
    assert python["backend"] == "python" and "platform" not in python
    assert python["parameters"]["EXECUTION_ENV_PATH"]["string_value"] == "/srv/.venv-triton"
    assert python["version_policy"] == {"specific": {"versions": [3, 2]}}
    assert python["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert python["input"][0] == {"name": INPUT, "data_type": "TYPE_FP32",
                                  "dims": [len(FEATURES)]}
    onnx = model_config(ACME, ["3"], "onnxruntime")
    assert onnx["platform"] == "onnxruntime_onnx" and "backend" not in onnx
    with pytest.raises(ValueError, match="tensorrt"):
        model_config(ACME, ["3"], "tensorrt")


def test_the_generated_python_model_reads_and_writes_the_configured_tensors():
    ast.parse(PYTHON_MODEL)
    assert f'"{INPUT}"' in PYTHON_MODEL and f'"{OUTPUT}"' in PYTHON_MODEL
    assert "{input}" not in PYTHON_MODEL


def _answer(name: str, version: str, values: list[float]) -> tuple[str, bytes]:
    data = np.array(values, dtype=np.float32)
    head = json.dumps({"model_name": name, "model_version": version, "outputs": [
        {"name": OUTPUT, "datatype": "FP32", "shape": [len(values), 1],
         "parameters": {"binary_data_size": data.nbytes}}]}).encode()
    return str(len(head)), head + data.tobytes()


def test_scores_decode_binary_answers_of_the_tenants_own_version():
    length, body = _answer("acme-churn", "2", [0.25, 0.5])
    assert scores(ACME, "2", 200, length, body) == [0.25, 0.5]
    with pytest.raises(TritonError, match="not acme-churn version 3") as raised:
        scores(ACME, "3", 200, length, body)
    assert raised.value.status == 502
    length, body = _answer("globex-churn", "2", [0.25])
    with pytest.raises(TritonError, match="globex-churn"):
        scores(ACME, "2", 200, length, body)


@pytest.mark.parametrize(("status", "error", "answered"), [
    (404, "Request for unknown model: 'acme-churn' version 2 is not found", 503),
    (503, "Request for unknown model: 'acme-churn' version 1 is not at ready state", 503),
    (400, "Request for unknown model: 'acme-churn' has no available versions", 503),
    (400, "unexpected shape for input 'features'", 502),
    (500, "internal", 502),
])
def test_triton_failures_become_the_routes_status(status, error, answered):
    with pytest.raises(TritonError) as raised:
        scores(ACME, "2", status, None, json.dumps({"error": error}).encode())
    assert raised.value.status == answered


def test_infer_request_is_binary_float32_in_feature_order():
    body, headers = infer_request([[1.0] * len(FEATURES), [float("nan")] * len(FEATURES)])
    length = int(headers[HEADER_LENGTH])
    head = json.loads(body[:length])
    assert head["inputs"][0]["shape"] == [2, len(FEATURES)]
    values = np.frombuffer(body[length:], dtype=np.float32)
    assert values[:len(FEATURES)].tolist() == [1.0] * len(FEATURES)
    assert np.isnan(values[len(FEATURES):]).all()  # NaN travels (JSON could not carry it)


def test_engine_triton_needs_production_and_a_url_and_serves_only_production():
    route = Route(registry_uri="sqlite://", primary="2", staging="3", canary="3",
                  canary_weight=10, engine=TRITON, triton_url="http://triton:8000")
    assert route.engine_for("production") == TRITON
    assert {route.engine_for(r) for r in ("canary", "staging", "shadow")} == {RAY}
    with pytest.raises(ValueError, match="engine triton"):
        Route(registry_uri="sqlite://", staging="3", engine=TRITON, triton_url="http://t")
    with pytest.raises(ValueError, match="engine triton"):
        Route(registry_uri="sqlite://", primary="2", engine=TRITON)
    assert Route(registry_uri="sqlite://", primary="2").engine == RAY


def test_triton_settings():
    settings = load_settings({"ML_ASSETS_TRITON_URL": "http://t:8000/"})
    assert settings.triton_url == "http://t:8000" and settings.triton_backend == "python"
    assert settings.triton_python_env.endswith(".venv-triton")
    with pytest.raises(ValueError, match="ML_ASSETS_TRITON_BACKEND='tensorrt'"):
        load_settings({"ML_ASSETS_TRITON_BACKEND": "tensorrt"})


def test_the_stage_change_sensor_reloads_triton_only_for_tenants_on_it():
    from ml_assets import names
    from ml_assets.defs.registry.sensors import on_triton

    with dg.instance_for_test() as instance:
        assert not on_triton(instance, ACME)
        for tenant, engine in (("acme", TRITON), ("globex", TRITON), ("globex", RAY)):
            instance.report_runless_asset_event(dg.AssetMaterialization(
                ["churn", names.TRITON_ENDPOINT], partition=tenant, metadata={"engine": engine}))
        assert on_triton(instance, ACME)
        assert not on_triton(instance, Tenant("globex"))  # routed back in-process since
