"""The one multi-tenant Serve app: routes, canary split, validation, isolation, online features,
the prediction log. Models are real (untrained) MLflow versions: no training needed here."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_assets import schema
from ml_assets.data import churn_data
from ml_assets.defs.serving.assets import deployed_endpoint
from ml_assets.events import EventType, Outbox
from ml_assets.registry import stages
from ml_assets.serving import prediction_log
from ml_assets.serving.client import post_json
from ml_assets.serving.prediction_log import CANARY_ROUTE, PRODUCTION_ROUTE
from ml_assets.serving.routing import ROUTE_HEADER, VERSION_HEADER, Route, get_route, set_route
from ml_assets.tenants import Tenant
from ml_assets_tests.conftest import two_versions

CANARIED, PLAIN = Tenant("soylent"), Tenant("vandelay")
SPEC = churn_data.ChurnDataSpec(customers=200)


def deploy(instance, resources, tenant: Tenant, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize([deployed_endpoint], partition_key=tenant.key, instance=instance,
                          resources=resources,
                          run_config={"ops": {"deployed_endpoint": {"config": config}}},
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
        made[tenant.key] = {**result.output_for_node("deployed_endpoint"), "v1": v1, "v2": v2}
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


def test_two_tenants_answer_with_their_own_models(served, resources):
    rows = [row(1), row(2)]
    for tenant in (CANARIED, PLAIN):
        endpoint = served[tenant.key]
        status, headers, body = post_json(endpoint["url"], {"rows": rows, "key": "steady"})
        assert status == 200 and body["tenant"] == tenant.key
        version = headers[VERSION_HEADER]
        assert version == body["model_version"] in {endpoint["v1"], endpoint["v2"]}
        expected = local_predictions(resources, tenant, version, rows)
        assert body["predictions"] == pytest.approx(expected, abs=1e-6)
    assert served[PLAIN.key]["canary"] is None
    assert served[CANARIED.key]["canary"] == served[CANARIED.key]["v2"]


def test_the_replica_answers_on_its_own_port_and_the_proxy_forwards_to_it(served, settings):
    """Direct ingress: the deployed URL skips Serve's proxy hop; the proxy URL still answers."""
    endpoint = served[PLAIN.key]
    proxy_port = int(endpoint["proxy_url"].split(":")[2].split("/")[0])
    direct_port = int(endpoint["url"].split(":")[2].split("/")[0])
    assert proxy_port == settings.serve_port
    low, high = settings.serve_direct_ports
    assert direct_port != proxy_port and low <= direct_port <= high
    body = {"rows": [row(3), row(4)], "key": "both-ways"}
    direct, proxied = post_json(endpoint["url"], body), post_json(endpoint["proxy_url"], body)
    assert direct[0] == proxied[0] == 200
    assert direct[1][VERSION_HEADER] == proxied[1][VERSION_HEADER]
    assert direct[2] == proxied[2]
    status, _, answer = post_json(endpoint["url"].replace(f"/{PLAIN.key}/", "/nobody/"), body)
    assert status == 404 and "unknown tenant" in answer["error"]


def test_canary_split_is_within_five_points_and_sticky(served):
    url, canary = served[CANARIED.key]["url"], served[CANARIED.key]["v2"]

    def version_for(key: str) -> tuple[str, str]:
        status, headers, _ = post_json(url, {"rows": [row()], "key": key})
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


def test_bad_requests_get_the_status_naming_what_was_wrong(served):
    url = served[PLAIN.key]["url"]
    good = row()
    cases = [
        ({"rows": [{k: v for k, v in good.items() if k != "nps_score"}]}, 422, "nps_score"),
        ({"rows": [{**good, "plan_tier": "gold"}]}, 422, "plan_tier"),
        ({"rows": [{**good, "extra": 1.0}]}, 422, "extra"),
        ({"rows": [good] * 1025}, 413, "1025"),
        ({"rows": [good], "customer_ids": [1]}, 422, "exactly one"),
        ({"customer_ids": ["7"]}, 422, "customer_ids[0]"),
        ({"customer_ids": [10**9]}, 404, str(10**9)),
    ]
    for body, status, named in cases:
        got, _, answer = post_json(url, body)
        assert (got, named in answer["error"]) == (status, True), (body, got, answer)
    got, _, answer = post_json(url.replace(f"/{PLAIN.key}/", "/nobody/"), {"rows": [good]})
    assert got == 404 and "nobody" in answer["error"]


def test_a_broken_model_fails_its_tenant_only(served, resources):
    broken = Tenant("tyrell")
    set_route(broken, Route(registry_uri=resources["mlflow"].tracking_uri, primary="999"))
    try:
        url = served[PLAIN.key]["url"].replace(f"/{PLAIN.key}/", f"/{broken.key}/")
        for _ in range(30):  # until the replicas have the new route
            status, _, body = post_json(url, {"rows": [row()]})
            if status != 404:
                break
        assert status == 503 and "999" in body["error"]
        for tenant in (CANARIED, PLAIN):
            status, _, _ = post_json(served[tenant.key]["url"], {"rows": [row()]})
            assert status == 200
    finally:
        set_route(broken, None)


def test_customer_ids_are_scored_with_their_latest_online_features(served, settings):
    activity = pd.read_parquet(settings.raw_data_dir / PLAIN.key / "customer_activity.parquet")
    latest = (activity.sort_values(schema.TIMESTAMP)
              .groupby(schema.ENTITY).tail(1).set_index(schema.ENTITY))
    ids = [int(i) for i in latest.index[:5]]
    rows = [{f: (None if pd.isna(latest.at[i, f]) else float(latest.at[i, f]))
             for f in schema.FEATURES} for i in ids]
    url = served[PLAIN.key]["url"]
    status, _, by_id = post_json(url, {"customer_ids": ids})
    assert status == 200
    status, _, by_row = post_json(url, {"rows": rows})
    assert by_id["predictions"] == pytest.approx(by_row["predictions"], abs=1e-6)
    # another tenant's customer ids reach only this tenant's online store
    other = pd.read_parquet(settings.raw_data_dir / CANARIED.key / "customer_activity.parquet")
    outsider = int(other[schema.ENTITY].max()) + 10**6
    status, _, body = post_json(url, {"customer_ids": [outsider]})
    assert status == 404


def test_every_request_lands_in_its_tenants_prediction_log(served, resources):
    from ray import serve

    from ml_assets.serving.app import APP_NAME

    marker = row(99)
    post_json(served[PLAIN.key]["url"], {"rows": [marker, marker], "key": "logged"})
    post_json(served[PLAIN.key]["url"], {"rows": [{"nps_score": 1.0}]})
    serve.get_app_handle(APP_NAME).flush_log.remote().result()
    store = resources["object_store"]
    log = prediction_log.read(store, PLAIN).to_pandas()
    hits = log[np.isclose(log["nps_score"], marker["nps_score"])]
    assert len(hits) >= 2 and set(hits["status"]) == {200}
    assert hits["prediction"].between(0, 1).all() and (hits["latency_ms"] > 0).all()
    assert set(hits["model_version"]) == {served[PLAIN.key]["v1"]}
    assert 422 in set(log["status"])
    assert set(log["tenant"]) == {PLAIN.key}
    other = prediction_log.read(store, CANARIED).to_pandas()
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


def test_batch_predictions_equal_online_predictions_for_the_same_rows(served, instance,
                                                                      resources):
    import pyarrow.dataset as ds

    from ml_assets.defs.serving.batch import batch_predictions

    result = materialize_one(batch_predictions, instance, resources, PLAIN)
    assert result.success
    made = result.output_for_node("batch_predictions")
    store = resources["object_store"]
    frame = ds.dataset(store.path(PLAIN, made["key"]), filesystem=store.filesystem(),
                       format="parquet").to_table().to_pandas()
    assert len(frame) == made["rows"] == SPEC.customers
    assert set(frame["model_version"]) == {served[PLAIN.key]["v1"]}  # Production
    sample = frame.sample(50, random_state=0)
    rows = [{f: (None if pd.isna(r[f]) else float(r[f])) for f in schema.FEATURES}
            for _, r in sample.iterrows()]
    status, headers, body = post_json(served[PLAIN.key]["url"], {"rows": rows})
    assert status == 200 and headers[VERSION_HEADER] == served[PLAIN.key]["v1"]
    assert body["predictions"] == pytest.approx(sample["prediction"].tolist(), abs=1e-6)


def test_a_tenant_without_production_gets_no_batch_or_triton_export(instance, resources):
    from ml_assets.defs.serving.batch import batch_predictions
    from ml_assets.defs.serving.triton import triton_model_repository

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

    from ml_assets.defs.serving.triton import INPUT, triton_model_repository

    result = materialize_one(triton_model_repository, instance, resources, PLAIN)
    assert result.success
    made = result.output_for_node("triton_model_repository")
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


def test_canary_weight_0_aborts_and_100_promotes(served, resources):
    from ml_assets.registry.actions import set_canary_weight
    from ml_assets.serving.routing import RouteError

    client, events = resources["mlflow"].client(), resources["events"]
    v1, v2 = served[CANARIED.key]["v1"], served[CANARIED.key]["v2"]
    url = served[CANARIED.key]["url"]

    def versions_seen() -> set[str]:
        """Versions answering 60 keys, once the replicas caught up with the route (ms)."""
        deadline = time.monotonic() + 10
        while True:
            seen = {post_json(url, {"rows": [row()], "key": f"k{i}"})[1][VERSION_HEADER]
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
