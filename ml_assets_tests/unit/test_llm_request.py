"""The LLM gateway's checks, its route table and its log, without a server."""

import pytest

from ml_assets.llm.registry import LlmTenant, directory_version
from ml_assets.llm.routes import LlmRoute, RouteTable, read_routes, set_route
from ml_assets.serving import llm_log
from ml_assets.serving.llm_request import CHAT, COMPLETIONS, llm_target, prompt_chars, validate
from ml_assets.serving.request import RequestError


def test_paths():
    assert llm_target("/v1/acme/llm/completions") == ("acme", COMPLETIONS)
    assert llm_target("/v1/acme/llm/chat/completions") == ("acme", CHAT)
    for path in ("/v1/acme/predict", "/v1/acme/llm/embeddings", "/v1/acme/llm", "/v2/a/llm/x"):
        with pytest.raises(RequestError) as refused:
            llm_target(path)
        assert refused.value.status == 404


def _check(body, endpoint=COMPLETIONS):
    return validate(body, endpoint, "acme-llm", "acme-llm:3", 256)


@pytest.mark.parametrize("body,status,field", [
    ([1], 422, "body"),
    ({}, 422, "prompt"),
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": [1, "a"]}, 422, "prompt"),
    ({"prompt": ["a"] * 17}, 422, "prompt"),
    ({"prompt": "a", "max_tokens": 257}, 422, "max_tokens"),
    ({"prompt": "a", "max_tokens": 0}, 422, "max_tokens"),
    ({"prompt": "a", "max_tokens": True}, 422, "max_tokens"),
    ({"prompt": "a", "n": 9}, 422, "n"),
    ({"prompt": "a", "stream": 1}, 422, "stream"),
    ({"prompt": "a", "stream_options": []}, 422, "stream_options"),
    ({"prompt": "a", "model": "globex-llm"}, 404, "model"),
    ({"prompt": "a", "model": "acme-llm:2"}, 404, "model"),  # not the version served now
    ({"prompt": "a", "model": "acme-churn"}, 404, "model"),
])
def test_bad_completion_bodies_name_the_field(body, status, field):
    with pytest.raises(RequestError) as refused:
        _check(body)
    assert refused.value.status == status and field in str(refused.value)


@pytest.mark.parametrize("body,field", [
    ({"prompt": "a"}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 10**9},
     "max_completion_tokens"),
])
def test_bad_chat_bodies_name_the_field(body, field):
    with pytest.raises(RequestError) as refused:
        _check(body, CHAT)
    assert refused.value.status == 422 and field in str(refused.value)


def test_a_valid_body_is_forwarded_with_the_served_model():
    for model in (None, "acme-llm", "acme-llm:3"):
        body = {"prompt": ["ab", "c"], "max_tokens": 256, "ignore_eos": True,
                **({"model": model} if model else {})}
        forwarded = _check(body)
        assert forwarded == {**body, "model": "acme-llm:3"}
        assert prompt_chars(forwarded) == 3
    chat = _check({"messages": [{"role": "user", "content": "hey"}]}, CHAT)
    assert chat["model"] == "acme-llm:3" and prompt_chars(chat) == 3


def test_route_table_follows_the_file(tmp_path):
    path = tmp_path / "routes.json"
    table = RouteTable(path)
    assert table.get("acme") is None
    set_route(path, "acme", LlmRoute(url="http://127.0.0.1:1", model="acme-llm", version="1"))
    set_route(path, "globex", LlmRoute(url="http://127.0.0.1:2", model="globex-llm",
                                       version="4"))
    assert table.get("acme").served_model == "acme-llm:1"
    set_route(path, "acme", LlmRoute(url="http://127.0.0.1:3", model="acme-llm", version="2"))
    assert table.get("acme").url == "http://127.0.0.1:3"
    set_route(path, "acme", None)
    assert set(read_routes(path)) == {"globex"} and table.get("acme") is None


def test_llm_tenant_names_its_own_model():
    tenant = LlmTenant("acme")
    assert tenant.registered_model_name == "acme-llm"
    assert tenant.experiment_name == "ml_assets/acme" and tenant.prefix == "tenants/acme"


def test_directory_version_is_a_content_hash(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    first = directory_version(tmp_path)
    assert first == directory_version(tmp_path)
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert directory_version(tmp_path) != first


def test_llm_log_round_trip(tmp_path):
    from ml_assets.data.object_store import ObjectStoreClient
    from ml_assets.tenants import Tenant

    store = ObjectStoreClient(root=str(tmp_path))
    record = llm_log.LlmRecord(tenant="acme", endpoint=COMPLETIONS, model_version="1",
                               route="production", stream=True, status=200, latency_ms=12.5,
                               ttft_ms=3.0, prompt_tokens=4, completion_tokens=8,
                               tokens_per_s=840.0, prompt_chars=11, response_chars=900)
    refused = llm_log.LlmRecord(tenant="acme", endpoint=None, model_version=None,
                                route="production", stream=False, status=401, latency_ms=0.1,
                                ttft_ms=None, prompt_tokens=None, completion_tokens=None,
                                tokens_per_s=None, prompt_chars=None, response_chars=0,
                                error="missing key")
    llm_log.write(store, Tenant("acme"), [record, refused])
    rows = llm_log.read(store, Tenant("acme")).to_pylist()
    assert [r["status"] for r in rows] == [200, 401]
    assert rows[0]["tokens_per_s"] == 840.0 and rows[1]["error"] == "missing key"
    assert llm_log.read(store, Tenant("globex")).num_rows == 0
    with pytest.raises(ValueError, match="globex"):
        llm_log.write(store, Tenant("globex"), [record])


def test_the_llms_stage_moves_stay_out_of_the_churn_models_ledger(tmp_path):
    from ml_assets.events import EventType, LifecycleEvent, Outbox
    from ml_assets.registry.ledger import production_history
    from ml_assets.tenants import Tenant

    outbox = Outbox(tmp_path / "outbox.db")
    for model, version in (("acme-churn", "1"), ("acme-llm", "1"), ("acme-llm", "2")):
        outbox.append(LifecycleEvent(type=EventType.MODEL_STAGE_CHANGED, tenant="acme", data={
            "model": model, "version": version, "from_stage": "Staging",
            "to_stage": "Production", "actor": "pytest", "reason": "test"}))
    assert [s.version for s in production_history(outbox, Tenant("acme"))] == ["1"]
    llm = production_history(outbox, LlmTenant("acme"))
    assert [(s.version, s.until is None) for s in llm] == [("1", False), ("2", True)]


def test_the_gateway_imports_no_dagster_mlflow_or_torch():
    """It starts in a second and stays small: the request path needs none of them."""
    import subprocess
    import sys

    code = ("import sys, ml_assets.serving.llm_gateway, ml_assets.llm.deploy; "
            "print([m for m in ('dagster', 'mlflow', 'torch', 'ray') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
