"""The one Serve app of every tenant and use case: routes, canary split, validation, isolation,
online features, the prediction log, model families. Models are real (untrained) MLflow
versions: no training needed here."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_assets import schema, use_case
from ml_assets.data import churn_data, sources
from ml_assets.events import EventType, Outbox
from ml_assets.registry import stages
from ml_assets.serving import prediction_log
from ml_assets.serving.client import post_json
from ml_assets.serving.prediction_log import CANARY_ROUTE, PRODUCTION_ROUTE
from ml_assets.serving.routing import ROUTE_HEADER, VERSION_HEADER, Route, get_route, set_route
from ml_assets.tenants import Tenant
from ml_assets.use_case import load as load_use_case
from ml_assets.use_case import names as use_case_names
from ml_assets_testing.chain import chain
from ml_assets_testing.models import two_versions

deployed_endpoint = chain().asset("deployed_endpoint")

CANARIED, PLAIN = Tenant("soylent"), Tenant("vandelay")
SPEC = churn_data.ChurnDataSpec(customers=200)
CHURN = "churn"


def activity_path(settings, tenant: Tenant):
    return sources.source_path(settings.raw_data_dir, tenant, use_case.load("churn"),
                               "customer_activity")


def deploy(instance, resources, tenant: Tenant, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize([deployed_endpoint], partition_key=tenant.key, instance=instance,
                          resources=resources,
                          run_config={"ops": {"churn__deployed_endpoint": {"config": config}}},
                          raise_on_error=False)


@pytest.fixture(scope="module")
def served(instance, resources, settings, ray_cluster) -> dict[str, dict]:
    """umbrella with a 10 % canary on its Staging version, hooli without one."""
    made = {}
    for tenant, weight in ((CANARIED, 10), (PLAIN, 0)):
        churn_data.write(tenant.key, SPEC, settings.raw_data_dir)
        instance.add_dynamic_partitions("tenant", [tenant.key])
        v1, v2 = two_versions(resources["mlflow"], resources["events"], tenant)
        result = deploy(instance, resources, tenant, canary_weight=weight)
        assert result.success
        made[tenant.key] = {**result.output_for_node("churn__deployed_endpoint"),
                            "v1": v1, "v2": v2}
    return made


def row(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: float(rng.normal()) for name in schema.FEATURES}


def local_predictions(resources, tenant: Tenant, version: str, rows: list[dict]) -> list[float]:
    """What the tenant's own registered version computes for the rows, outside Serve."""
    import mlflow.pytorch
    import torch

    model = mlflow.pytorch.load_model(f"models:/{tenant.registered_model_name}/{version}")
    matrix = torch.tensor([[r[f] for f in schema.FEATURES] for r in rows])
    with torch.no_grad():
        return model(matrix).tolist()


def test_two_tenants_answer_with_their_own_models(predict, served, resources):
    rows = [row(1), row(2)]
    for tenant in (CANARIED, PLAIN):
        endpoint = served[tenant.key]
        status, headers, body = predict(endpoint["url"], {"rows": rows, "key": "steady"})
        assert status == 200 and body["tenant"] == tenant.key
        version = headers[VERSION_HEADER]
        assert version == body["model_version"] in {endpoint["v1"], endpoint["v2"]}
        expected = local_predictions(resources, tenant, version, rows)
        assert body["predictions"] == pytest.approx(expected, abs=1e-6)
    assert served[PLAIN.key]["canary"] is None
    assert served[CANARIED.key]["canary"] == served[CANARIED.key]["v2"]


def test_the_replica_answers_on_its_own_port_and_the_proxy_forwards_to_it(
        predict, served, settings):
    """Direct ingress: the deployed URL skips Serve's proxy hop; the proxy URL still answers."""
    endpoint = served[PLAIN.key]
    proxy_port = int(endpoint["proxy_url"].split(":")[2].split("/")[0])
    direct_port = int(endpoint["url"].split(":")[2].split("/")[0])
    assert proxy_port == settings.serve_port
    low, high = settings.serve_direct_ports
    assert direct_port != proxy_port and low <= direct_port <= high
    body = {"rows": [row(3), row(4)], "key": "both-ways"}
    direct, proxied = predict(endpoint["url"], body), predict(endpoint["proxy_url"], body)
    assert direct[0] == proxied[0] == 200
    assert direct[1][VERSION_HEADER] == proxied[1][VERSION_HEADER]
    assert direct[2] == proxied[2]
    status, _, answer = predict(endpoint["url"].replace(f"/{PLAIN.key}/", "/nobody/"), body)
    assert status == 404 and "unknown tenant" in answer["error"]


def test_canary_split_is_within_five_points_and_sticky(predict, served):
    url, canary = served[CANARIED.key]["url"], served[CANARIED.key]["v2"]

    def version_for(key: str) -> tuple[str, str]:
        status, headers, _ = predict(url, {"rows": [row()], "key": key})
        assert status == 200
        return headers[VERSION_HEADER], headers[ROUTE_HEADER]

    keys = [f"customer-{i}" for i in range(2000)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(version_for, keys))
        again = list(pool.map(version_for, keys[:300]))
    share = Counter(v for v, _ in answers)[canary] / len(keys)
    assert 0.05 <= share <= 0.15, share
    assert again == answers[:300]  # one key, one version
    assert all((route == CANARY_ROUTE) == (v == canary) for v, route in answers)
    assert {route for _, route in answers} == {CANARY_ROUTE, PRODUCTION_ROUTE}


def test_bad_requests_get_the_status_naming_what_was_wrong(predict, served):
    url = served[PLAIN.key]["url"]
    good = row()
    cases = [
        ({"rows": [{k: v for k, v in good.items() if k != "nps_score"}]}, 422, "nps_score"),
        ({"rows": [{**good, "plan_tier": "gold"}]}, 422, "plan_tier"),
        ({"rows": [{**good, "extra": 1.0}]}, 422, "extra"),
        ({"rows": [good] * 1025}, 413, "1025"),
        ({"rows": [good], "customer_ids": [1]}, 422, "exactly one"),
        ({"rows": [good], "keys": [1]}, 422, "exactly one"),
        ({"keys": [1], "customer_ids": [1]}, 422, "exactly one"),
        ({"customer_ids": ["7"]}, 422, "customer_ids[0]"),
        ({"keys": [3, "7"]}, 422, "keys[1] must be an integer"),
        ({"keys": [2**63]}, 422, "keys[0]"),
        ({"keys": []}, 422, "keys"),
        ({"keys": [10**9]}, 404, str(10**9)),
    ]
    for body, status, named in cases:
        got, _, answer = predict(url, body)
        assert (got, named in answer["error"]) == (status, True), (body, got, answer)
    got, _, answer = predict(url.replace(f"/{PLAIN.key}/", "/nobody/"), {"rows": [good]})
    assert got == 404 and "nobody" in answer["error"]


def test_a_broken_model_fails_its_tenant_only(predict, served, resources):
    broken = Tenant("tyrell")
    set_route(broken, Route(registry_uri=resources["mlflow"].tracking_uri, primary="999"))
    try:
        url = served[PLAIN.key]["url"].replace(f"/{PLAIN.key}/", f"/{broken.key}/")
        for _ in range(30):  # until the replicas have the new route
            status, _, body = predict(url, {"rows": [row()]})
            if status != 404:
                break
        assert status == 503 and "999" in body["error"]
        for tenant in (CANARIED, PLAIN):
            status, _, _ = predict(served[tenant.key]["url"], {"rows": [row()]})
            assert status == 200
    finally:
        set_route(broken, None)


def test_keys_are_scored_with_their_latest_online_features(predict, served, settings):
    activity = pd.read_parquet(activity_path(settings, PLAIN))
    latest = (activity.sort_values(schema.TIMESTAMP)
              .groupby(schema.ENTITY).tail(1).set_index(schema.ENTITY))
    ids = [int(i) for i in latest.index[:5]]
    rows = [{f: (None if pd.isna(latest.at[i, f]) else float(latest.at[i, f]))
             for f in schema.FEATURES} for i in ids]
    url = served[PLAIN.key]["url"]
    status, _, by_id = predict(url, {"keys": ids})
    assert status == 200 and by_id["use_case"] == CHURN
    status, _, by_row = predict(url, {"rows": rows})
    assert by_id["predictions"] == pytest.approx(by_row["predictions"], abs=1e-6)
    # churn's clients still send customer_ids: the same answer
    status, _, by_alias = predict(url, {"customer_ids": ids})
    assert status == 200 and by_alias["predictions"] == by_id["predictions"]
    # another tenant's customer ids reach only this tenant's online store
    other = pd.read_parquet(activity_path(settings, CANARIED))
    outsider = int(other[schema.ENTITY].max()) + 10**6
    status, _, body = predict(url, {"keys": [outsider]})
    assert status == 404 and str(outsider) in body["error"]


def test_every_request_lands_in_its_tenants_prediction_log(predict, served, resources):
    from ray import serve

    from ml_assets.serving.app import APP_NAME

    marker = row(99)
    predict(served[PLAIN.key]["url"], {"rows": [marker, marker], "key": "logged"})
    predict(served[PLAIN.key]["url"], {"rows": [{"nps_score": 1.0}]})
    serve.get_app_handle(APP_NAME).flush_log.remote().result()
    store = resources["object_store"]
    log = prediction_log.read(store, PLAIN, CHURN).to_pandas()
    hits = log[np.isclose(log["nps_score"], marker["nps_score"])]
    assert len(hits) >= 2 and set(hits["status"]) == {200}
    assert hits["prediction"].between(0, 1).all() and (hits["latency_ms"] > 0).all()
    assert set(hits["model_version"]) == {served[PLAIN.key]["v1"]}
    assert 422 in set(log["status"])
    assert set(log["tenant"]) == {PLAIN.key}
    other = prediction_log.read(store, CANARIED, CHURN).to_pandas()
    assert not np.isclose(other["nps_score"].fillna(0), marker["nps_score"]).any()


def test_deploy_refuses_a_canary_without_a_staging_version(instance, resources, served):
    events_before = len(Outbox(resources["events"].outbox_path).events(PLAIN.key))
    client = resources["mlflow"].client()
    staged = stages.version_with_alias(client, PLAIN, stages.STAGING)
    stages.transition(client, resources["events"], PLAIN, staged.version, stages.ARCHIVED,
                      "test", "pytest")
    try:
        result = deploy(instance, resources, PLAIN, canary_weight=20)
        assert not result.success
        assert get_route(PLAIN).canary is None
    finally:
        stages.transition(client, resources["events"], PLAIN, staged.version, stages.STAGING,
                          "test", "pytest")
    deployed = [e for e in Outbox(resources["events"].outbox_path).events(PLAIN.key)
                [events_before:] if e.type == EventType.MODEL_DEPLOYED]
    assert deployed == []


def materialize_one(asset, instance, resources, tenant: Tenant) -> dg.ExecuteInProcessResult:
    return dg.materialize([asset], partition_key=tenant.key, instance=instance,
                          resources=resources, raise_on_error=False)


def test_batch_predictions_equal_online_predictions_for_the_same_rows(predict, served, instance,
                                                                      resources):
    import pyarrow.dataset as ds

    batch_predictions = chain().asset("batch_predictions")

    result = materialize_one(batch_predictions, instance, resources, PLAIN)
    assert result.success
    made = result.output_for_node("churn__batch_predictions")
    store = resources["object_store"]
    frame = ds.dataset(store.path(PLAIN, made["key"]), filesystem=store.filesystem(),
                       format="parquet").to_table().to_pandas()
    assert len(frame) == made["rows"] == SPEC.customers
    assert set(frame["model_version"]) == {served[PLAIN.key]["v1"]}  # Production
    sample = frame.sample(50, random_state=0)
    rows = [{f: (None if pd.isna(r[f]) else float(r[f])) for f in schema.FEATURES}
            for _, r in sample.iterrows()]
    status, headers, body = predict(served[PLAIN.key]["url"], {"rows": rows})
    assert status == 200 and headers[VERSION_HEADER] == served[PLAIN.key]["v1"]
    assert body["predictions"] == pytest.approx(sample["prediction"].tolist(), abs=1e-6)


def test_a_tenant_without_production_gets_no_batch_or_triton_export(instance, resources):
    batch_predictions = chain().asset("batch_predictions")
    triton_model_repository = chain().asset("triton_model_repository")

    instance.add_dynamic_partitions("tenant", ["cyberdyne"])
    for asset in (batch_predictions, triton_model_repository):
        result = materialize_one(asset, instance, resources, Tenant("cyberdyne"))
        assert not result.success
        failure = result.get_step_failure_events()[0].step_failure_data.error
        assert "no Production model version" in str(failure.cause or failure)
    assert resources["object_store"].list(Tenant("cyberdyne")) == []


def test_triton_repository_onnx_matches_torch(served, instance, resources):
    import onnxruntime
    import torch

    from ml_assets.defs.serving.triton import INPUT
    triton_model_repository = chain().asset("triton_model_repository")

    result = materialize_one(triton_model_repository, instance, resources, PLAIN)
    assert result.success
    made = result.output_for_node("churn__triton_model_repository")
    store, v1 = resources["object_store"], served[PLAIN.key]["v1"]
    name = PLAIN.registered_model_name
    assert made["version"] == v1
    assert sorted(store.list(PLAIN, "triton")) == [f"triton/{name}/{v1}/model.onnx",
                                                   f"triton/{name}/config.pbtxt"]
    config = store.get_bytes(PLAIN, f"triton/{name}/config.pbtxt").decode()
    assert f'name: "{name}"' in config and "dynamic_batching" in config
    session = onnxruntime.InferenceSession(store.get_bytes(PLAIN, made["onnx_key"]))
    rows = np.random.default_rng(3).normal(size=(256, len(schema.FEATURES)))
    rows[::7, 2] = np.nan  # the imputation is part of the exported graph
    rows = rows.astype(np.float32)
    onnx_out = session.run(None, {INPUT: rows})[0][:, 0]
    import mlflow.pytorch

    model = mlflow.pytorch.load_model(f"models:/{name}/{v1}").eval()
    with torch.no_grad():
        torch_out = model(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-5, rtol=0)


def test_canary_weight_0_aborts_and_100_promotes(predict, served, resources):
    from ml_assets.registry.actions import set_canary_weight
    from ml_assets.serving.routing import RouteError

    client, events = resources["mlflow"].client(), resources["events"]
    v1, v2 = served[CANARIED.key]["v1"], served[CANARIED.key]["v2"]
    url = served[CANARIED.key]["url"]

    def versions_seen() -> set[str]:
        """Versions answering 60 keys, once the replicas caught up with the route (ms)."""
        deadline = time.monotonic() + 10
        while True:
            seen = {predict(url, {"rows": [row()], "key": f"k{i}"})[1][VERSION_HEADER]
                    for i in range(60)}
            if seen == {route.primary, route.canary} - {None} or time.monotonic() > deadline:
                return seen

    route = set_canary_weight(client, events, CANARIED, 0, "pytest")
    assert (route.primary, route.canary) == (v1, None)
    assert versions_seen() == {v1}
    route = set_canary_weight(client, events, CANARIED, 50, "pytest")
    assert (route.canary, route.canary_weight) == (v2, 50)
    assert versions_seen() == {v1, v2}
    route = set_canary_weight(client, events, CANARIED, 100, "pytest")
    assert (route.primary, route.canary) == (v2, None)
    assert versions_seen() == {v2}
    assert stages.stage_of(stages.model_version(client, CANARIED, v2)) == stages.PRODUCTION
    assert stages.stage_of(stages.model_version(client, CANARIED, v1)) == stages.ARCHIVED
    routed = [e.data["requested_weight"] for e in Outbox(events.outbox_path).events(CANARIED.key)
              if e.type == EventType.MODEL_TRAFFIC_ROUTED]
    assert routed[-3:] == [0, 50, 100]
    with pytest.raises(RouteError, match="not deployed"):
        set_canary_weight(client, events, Tenant("nobody"), 10, "pytest")
    with pytest.raises(RouteError, match="no Staging version"):
        set_canary_weight(client, events, CANARIED, 10, "pytest")  # v2 left Staging
    assert get_route(CANARIED).primary == v2


def post_raw(url: str, data: bytes, token: str) -> tuple[int, dict]:
    """(status, json body) of a POST of raw bytes: bodies json.dumps would not write."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data, {"content-type": "application/json",
                                                 "authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def hostile_bodies() -> list[tuple[str, bytes, str]]:
    """(what, body, what the error must name): each answered 500 before."""
    features = schema.FEATURES

    def every_feature(literal: str) -> bytes:
        return ('{"rows": [{' + ", ".join(f'"{f}": {literal}' for f in features)
                + "}]}").encode()

    # depth 1,000 is at Python's recursion limit: the parser may follow it (then the shape is
    # wrong) or not; deeper is never parsed; 1,000,000 is over the size limit (2 MB)
    nested = [("depth 1000", b"[" * 1000 + b"]" * 1000, "")] + [
        (f"depth {d}", b"[" * d + b"]" * d, "nested" if d < 500_000 else "bytes")
        for d in (10_000, 100_000, 1_000_000)]
    return nested + [
        ("Infinity", every_feature("Infinity"), "Infinity"),
        ("-Infinity", every_feature("-Infinity"), "-Infinity"),
        ("NaN", every_feature("NaN"), "NaN"),
        ("1e308", every_feature("1e308"), "out of range"),
        ("1e400", every_feature("1e400"), "out of range"),
        ("10^400", every_feature("1" + "0" * 400), "out of range"),
        ("10^5000", every_feature("1" + "0" * 5000), "not JSON"),
        ("id 2^63", b'{"customer_ids": [9223372036854775808]}', "customer_ids[0]"),
        ("id -2^63-1", b'{"customer_ids": [-9223372036854775809]}', "customer_ids[0]"),
        ("2 MiB", b'{"rows": [' + b" " * (2 << 20) + b"]}", "bytes"),
    ]


def test_hostile_input_is_a_4xx_naming_it_on_both_ports_and_logged_as_such(
        predict, served, resources, settings):
    from ray import serve

    from ml_assets.access.keys import KeyStore, Role
    from ml_assets.serving.app import APP_NAME

    token = KeyStore(settings.api_keys_path).create(PLAIN, Role.predict)[1]
    endpoint, store = served[PLAIN.key], resources["object_store"]
    serve.get_app_handle(APP_NAME).flush_log.remote().result()
    before = prediction_log.read(store, PLAIN, CHURN).to_pandas()
    sent = 0
    for url in (endpoint["url"], endpoint["proxy_url"]):
        for what, body, named in hostile_bodies():
            status, answer = post_raw(url, body, token)
            assert 400 <= status < 500 and named in answer["error"], (what, url, status, answer)
            sent += 1
        assert predict(url, {"rows": [row()]})[0] == 200  # still answering
    serve.get_app_handle(APP_NAME).flush_log.remote().result()
    log = prediction_log.read(store, PLAIN, CHURN).to_pandas()
    new = log[~log["request_id"].isin(before["request_id"])]
    assert (new["status"] >= 400).sum() == sent  # every refusal, with its true status
    assert set(new.loc[new["status"] >= 400, "status"]) <= {413, 422}
    assert new.loc[new["status"] == 200, "prediction"].notna().all()  # no 200 without an answer


def test_predictions_need_a_key_of_the_tenant_with_the_scope_of_the_route(served, settings,
                                                                          resources):
    from ray import serve

    from ml_assets.access.keys import KeyStore, Role
    from ml_assets.serving.app import APP_NAME

    keys = KeyStore(settings.api_keys_path)
    own = keys.create(PLAIN, Role.predict)[1]
    other = keys.create(CANARIED, Role.promoter)[1]
    revoked_key, revoked = keys.create(PLAIN, Role.predict)
    keys.revoke(revoked_key.id)
    url = served[PLAIN.key]["url"]
    staging_url = url.replace("/predict", "/staging/predict")
    body = {"rows": [row(5)]}
    cases = [(url, None, 401), (url, "mla_garbage", 401), (url, revoked, 401),
             (url, other, 403), (staging_url, own, 403), (url, own, 200)]
    for target, token, expected in cases:
        status, _, answer = post_json(target, body, token=token)
        assert status == expected, (target, token, answer)
    assert "API key" in post_json(url, body)[2]["error"]
    assert "needs staging" in post_json(staging_url, body, token=own)[2]["error"]
    serve.get_app_handle(APP_NAME).flush_log.remote().result()
    log = prediction_log.read(resources["object_store"], PLAIN, CHURN).to_pandas()
    refused = log[log["status"].isin([401, 403])]
    assert {401, 403} <= set(refused["status"])  # counted apart, with their true status
    assert refused["prediction"].isna().all() and refused["nps_score"].isna().all()


def test_stages_mean_access_production_route_staging_route_and_shadow(
        predict, instance, resources, settings):
    """A Staging-only tenant: 503 naming the way in on the production route, its Staging
    version on the pre-production route. With Production beside it and shadow on, every
    production request is also scored by Staging, logged, never returned."""
    from ray import serve

    from ml_assets.serving.app import APP_NAME
    from ml_assets_testing.models import log_untrained_models, register

    tenant = Tenant("initrode")
    churn_data.write(tenant.key, SPEC, settings.raw_data_dir)
    instance.add_dynamic_partitions("tenant", [tenant.key])
    registry, events = resources["mlflow"], resources["events"]
    client = registry.client()
    first, second = (register(registry, tenant, uri) for uri in
                     log_untrained_models(registry, [tenant.key], count=2)[tenant.key])
    stages.transition(client, events, tenant, first, stages.STAGING, "test", "pytest")
    made = deploy(instance, resources, tenant).output_for_node("churn__deployed_endpoint")
    assert (made["version"], made["staging_version"], made["stage"]) == (
        None, first, stages.STAGING)
    status, _, body = predict(made["url"], {"rows": [row()]})
    assert status == 503 and "no Production version" in body["error"]
    assert f"/v1/{tenant.key}/{CHURN}/staging/predict" in body["error"]
    status, headers, body = predict(made["staging_url"], {"rows": [row()]})
    assert (status, headers[VERSION_HEADER], headers[ROUTE_HEADER]) == (
        200, first, prediction_log.STAGING_ROUTE)

    stages.transition(client, events, tenant, first, stages.PRODUCTION, "test", "pytest")
    stages.transition(client, events, tenant, second, stages.STAGING, "test", "pytest")
    result = deploy(instance, resources, tenant, shadow=True)
    assert result.success
    made = result.output_for_node("churn__deployed_endpoint")
    assert (made["version"], made["staging_version"], made["shadow"]) == (first, second, True)
    marker = row(77)
    for _ in range(3):
        status, headers, _ = predict(made["url"], {"rows": [marker]})
        assert (status, headers[VERSION_HEADER]) == (200, first)  # the caller sees Production
    expected = local_predictions(resources, tenant, second, [marker])[0]
    deadline = time.monotonic() + 10
    while True:
        serve.get_app_handle(APP_NAME).flush_log.remote().result()
        log = prediction_log.read(resources["object_store"], tenant, CHURN).to_pandas()
        shadow = log[(log["route"] == prediction_log.SHADOW_ROUTE)
                     & np.isclose(log["nps_score"], marker["nps_score"])]
        if len(shadow) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(shadow) == 3 and set(shadow["model_version"]) == {second}
    assert shadow["prediction"].to_numpy() == pytest.approx([expected] * 3, abs=1e-6)


def test_the_replica_refuses_a_version_made_from_another_tenants_run(predict, served, resources):
    """The finding: a version created straight through MLflow in PLAIN's registered model from
    CANARIED's run and model, lineage tags copied, staged by hand. No route can serve it."""
    from mlflow.exceptions import MlflowException  # noqa: F401 - the client raises it

    client = resources["mlflow"].client()
    donor = client.get_model_version(CANARIED.registered_model_name, served[CANARIED.key]["v1"])
    forged = client.create_model_version(
        PLAIN.registered_model_name, source=donor.source, run_id=donor.run_id,
        tags={**donor.tags, "stage": stages.STAGING}, model_id=donor.model_id)
    client.set_registered_model_alias(PLAIN.registered_model_name, "staging", forged.version)
    saved = get_route(PLAIN)
    set_route(PLAIN, Route(registry_uri=resources["mlflow"].tracking_uri, primary=saved.primary,
                           staging=str(forged.version)))
    try:
        staging_url = served[PLAIN.key]["url"].replace("/predict", "/staging/predict")
        for _ in range(100):
            status, _, body = predict(staging_url, {"rows": [row()]})
            if status != 200 or body["model_version"] == str(forged.version):
                break
            time.sleep(0.1)
        assert status == 503 and "not in the tenant's experiment" in body["error"], body
    finally:
        set_route(PLAIN, saved)
        client.set_registered_model_alias(PLAIN.registered_model_name, "staging",
                                          served[PLAIN.key]["v2"])


def flushed_log(resources, tenant: Tenant, use_case: str | None):
    from ray import serve

    from ml_assets.serving.app import APP_NAME

    serve.get_app_handle(APP_NAME).flush_log.remote().result()
    return prediction_log.read(resources["object_store"], tenant, use_case).to_pandas()


def test_an_undeclared_use_case_is_a_404_naming_it_and_logged(predict, served, resources):
    url = served[PLAIN.key]["url"]
    before = flushed_log(resources, PLAIN, None)
    for target in (url.replace(f"/{CHURN}/", "/nosuch/"),
                   url.replace(f"/{CHURN}/", "/nosuch/").replace("/predict", "/staging/predict")):
        status, _, body = predict(target, {"rows": [row()]})
        assert status == 404 and "unknown use case 'nosuch'" in body["error"], body
        assert CHURN in body["error"]  # and names the declared ones
    status, _, body = predict(url.replace(f"/{CHURN}/", "/llm/"), {"rows": [row()]})
    assert status == 404 and "LLM gateway" in body["error"]
    status, _, body = predict(url.replace(f"/{CHURN}/predict", "/predict"), {"rows": [row()]})
    assert status == 404 and "/v1/{tenant}/{use_case}/predict" in body["error"]
    log = flushed_log(resources, PLAIN, None)  # the tenant's log of unrouted requests
    new = log[~log["request_id"].isin(before["request_id"])]
    assert list(new["status"]) == [404, 404] and new["prediction"].isna().all()
    assert set(new["tenant"]) == {PLAIN.key} and new["use_case"].isna().all()


def test_a_tenants_key_opens_none_of_another_tenants_use_cases(served, settings, resources):
    from ml_assets.access.keys import KeyStore, Role

    keys = KeyStore(settings.api_keys_path)
    outsider = keys.create(CANARIED, Role.staging)[1]  # the widest predict scope, wrong tenant
    url = served[PLAIN.key]["url"]
    churn_before = flushed_log(resources, PLAIN, CHURN)
    unrouted_before = flushed_log(resources, PLAIN, None)
    for target in (url, url.replace("/predict", "/staging/predict"),
                   url.replace(f"/{CHURN}/", "/nosuch/")):
        status, _, body = post_json(target, {"rows": [row()]}, token=outsider)
        assert status == 403 and "not for the tenant" in body["error"], (target, body)
        assert post_json(target, {"rows": [row()]})[0] == 401
    # its own tenant's use case answers it
    status, _, _ = post_json(served[CANARIED.key]["url"], {"rows": [row()]}, token=outsider)
    assert status == 200
    churn = flushed_log(resources, PLAIN, CHURN)
    churn = churn[~churn["request_id"].isin(churn_before["request_id"])]
    unrouted = flushed_log(resources, PLAIN, None)
    unrouted = unrouted[~unrouted["request_id"].isin(unrouted_before["request_id"])]
    assert sorted(churn["status"]) == [401, 401, 403, 403]  # refused before use case checks
    assert sorted(unrouted["status"]) == [401, 403]
    assert churn["prediction"].isna().all() and churn["model_version"].isna().all()


def test_the_replica_loads_each_version_with_its_familys_loader(predict, served, resources):
    """An XGBoost Production and a LightGBM Staging version of churn, told apart only by the
    version's model_type tag; each answers what the in-memory model answers."""
    import lightgbm
    import mlflow
    import mlflow.lightgbm
    import mlflow.xgboost
    import xgboost

    from ml_assets.serving.models import MODEL_TYPE_TAG
    from ml_assets_testing.models import UNTRAINED, register

    tenant = Tenant("hooli")
    registry, events = resources["mlflow"], resources["events"]
    client = registry.client()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, len(schema.FEATURES))).astype(np.float32)
    y = (x[:, 0] + x[:, 3] > 0).astype(np.float32)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 3},
                            xgboost.DMatrix(x, y, feature_names=schema.FEATURES), 10)
    gbm = lightgbm.train({"objective": "binary", "num_leaves": 7, "verbose": -1},
                         lightgbm.Dataset(x, y), 10)
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    run_id = registry.start_run(tenant, UNTRAINED, tags={"data_version": UNTRAINED})
    with mlflow.start_run(run_id=run_id):
        uris = [mlflow.xgboost.log_model(booster, name="xgb",
                                         pip_requirements=["xgboost-cpu==3.2.0"]).model_uri,
                mlflow.lightgbm.log_model(gbm, name="gbm",
                                          pip_requirements=["lightgbm==4.7.0"]).model_uri]
    xgb_version, gbm_version = (register(registry, tenant, uri) for uri in uris)
    for version, family in ((xgb_version, "xgboost"), (gbm_version, "lightgbm")):
        client.set_model_version_tag(tenant.registered_model_name, version, MODEL_TYPE_TAG,
                                     family)
        stages.transition(client, events, tenant, version, stages.STAGING, "test", "pytest")
    stages.transition(client, events, tenant, xgb_version, stages.PRODUCTION, "test", "pytest")
    set_route(tenant, Route(registry_uri=registry.tracking_uri, primary=xgb_version,
                            staging=gbm_version))
    try:
        url = served[PLAIN.key]["url"].replace(f"/{PLAIN.key}/", f"/{tenant.key}/")
        rows = [row(i) for i in range(20)]
        matrix = np.array([[r[f] for f in schema.FEATURES] for r in rows], dtype=np.float32)
        deadline = time.monotonic() + 10
        while True:
            status, headers, body = predict(url, {"rows": rows})
            if status != 404 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert (status, headers[VERSION_HEADER]) == (200, xgb_version), body
        expected = booster.predict(xgboost.DMatrix(matrix, feature_names=schema.FEATURES))
        assert body["predictions"] == pytest.approx(expected.tolist(), abs=1e-6)
        status, headers, body = predict(url.replace("/predict", "/staging/predict"),
                                        {"rows": rows})
        assert (status, headers[VERSION_HEADER]) == (200, gbm_version), body
        assert body["predictions"] == pytest.approx(gbm.predict(matrix).tolist(), abs=1e-6)
    finally:
        set_route(tenant, None)


STRING_KEYED = [name for name in use_case_names() if load_use_case(name).entity.key_type
                == "string"]


@pytest.mark.skipif(not STRING_KEYED, reason="no declared use case has string keys")
def test_string_keys_are_validated_by_the_use_cases_declaration(predict, served, resources):
    from ml_assets.serving.request import MAX_KEY_CHARS

    name = STRING_KEYED[0]
    declared = load_use_case(name)
    url = served[PLAIN.key]["url"].replace(f"/{CHURN}/", f"/{name}/")
    status, _, body = predict(url, {"keys": ["acct-1"]})
    assert status == 404 and f"no deployed endpoint for use case {name!r}" in body["error"]
    set_route(Tenant(PLAIN.key, name),
              Route(registry_uri=resources["mlflow"].tracking_uri, primary="999"))
    try:
        deadline = time.monotonic() + 10
        while predict(url, {"keys": [""]})[0] == 404 and time.monotonic() < deadline:
            time.sleep(0.1)
        churn_row = row()
        cases = [
            ({"keys": [""]}, "keys[0] must not be empty"),
            ({"keys": ["ok", "x" * (MAX_KEY_CHARS + 1)]}, f"keys[1] has {MAX_KEY_CHARS + 1}"),
            ({"keys": ["ok", "ok", "a\nb"]}, "keys[2] holds a control character"),
            ({"keys": ["\u0000"]}, "keys[0] holds a control character"),
            ({"keys": [7]}, "keys[0] must be a string"),
            ({"customer_ids": ["a"]}, "exactly one"),  # churn's alias only
            ({"rows": [churn_row]}, "rows[0]: missing features"),
        ]
        for request, named in cases:
            status, _, body = predict(url, request)
            assert (status, named in body["error"]) == (422, True), (request, body)
        assert set(declared.features) - set(churn_row) <= set(body["error"].split("'"))
    finally:
        set_route(Tenant(PLAIN.key, name), None)
    log = flushed_log(resources, PLAIN, name)
    assert (log["status"] == 422).sum() >= len(cases)
    assert log[prediction_log.ENTITY_KEY].isna().all()
