"""Triton as the engine of a tenant's production route: one real tritonserver for the session
(explicit model control), tenants' real (untrained) MLflow versions, the one Serve app."""

from __future__ import annotations

import threading
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_assets import schema, use_case
from ml_assets.data import churn_data, sources
from ml_assets.events import EventType, Outbox
from ml_assets.registry import stages
from ml_assets.serving import prediction_log
from ml_assets.serving.routing import (
    ENGINE_HEADER,
    RAY,
    TRITON,
    VERSION_HEADER,
    get_route,
    set_route,
)
from ml_assets.serving.triton import TritonRepository, model_name
from ml_assets.tenants import Tenant
from ml_assets_testing.chain import chain
from ml_assets_testing.models import two_versions
from ml_assets_testing.servers import free_port

deployed_endpoint = chain().asset("deployed_endpoint")
triton_endpoint = chain().asset("triton_endpoint")

WONKA, STARK = Tenant("wonka"), Tenant("stark")
SPEC = churn_data.ChurnDataSpec(customers=200)


def deploy(instance, resources, tenant: Tenant, engine: str = TRITON,
           assets=(deployed_endpoint, triton_endpoint)) -> dg.ExecuteInProcessResult:
    return dg.materialize(list(assets), partition_key=tenant.key, instance=instance,
                          resources=resources, raise_on_error=False,
                          run_config={"ops": {"churn__triton_endpoint": {
                              "config": {"engine": engine}}}})


@pytest.fixture(scope="module")
def on_triton(instance, resources, settings, ray_cluster, triton_server) -> dict[str, dict]:
    """wonka and stark: v1 Production (on Triton), v2 Staging."""
    made = {}
    for tenant in (WONKA, STARK):
        churn_data.write(tenant.key, SPEC, settings.raw_data_dir)
        instance.add_dynamic_partitions("tenant", [tenant.key])
        v1, v2 = two_versions(resources["mlflow"], resources["events"], tenant)
        result = deploy(instance, resources, tenant)
        assert result.success, result.get_step_failure_events()
        made[tenant.key] = {**result.output_for_node("churn__triton_endpoint"), "v1": v1, "v2": v2}
    return made


@pytest.fixture(scope="module")
def repository(triton_server) -> TritonRepository:
    return TritonRepository(triton_server)


def rows(n: int, seed: int = 0) -> list[dict]:
    values = np.random.default_rng(seed).normal(size=(n, len(schema.FEATURES)))
    made = [dict(zip(schema.FEATURES, map(float, r), strict=True)) for r in values]
    for r in made[::9]:
        r[schema.FEATURES[2]] = None  # imputed inside the exported graph
    return made


def logged_model(tenant: Tenant, version: str, batch: list[dict]) -> np.ndarray:
    """What the tenant's logged MLflow model computes for the rows, in this process."""
    import mlflow.pytorch
    import torch

    model = mlflow.pytorch.load_model(f"models:/{tenant.registered_model_name}/{version}")
    matrix = torch.tensor([[np.nan if r[f] is None else r[f] for f in schema.FEATURES]
                           for r in batch], dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(matrix).numpy()


def test_the_served_answer_is_the_logged_models_on_100_rows(predict, on_triton, settings):
    batch = rows(100)
    for tenant in (WONKA, STARK):
        endpoint = on_triton[tenant.key]
        status, headers, body = predict(endpoint["url"], {"rows": batch})
        assert status == 200, body
        assert (headers[ENGINE_HEADER], headers[VERSION_HEADER]) == (TRITON, endpoint["v1"])
        served = np.array(body["predictions"])
        assert np.max(np.abs(served - logged_model(tenant, endpoint["v1"], batch))) <= 1e-5
    # online features reach Triton the same way
    activity = pd.read_parquet(sources.source_path(
        settings.raw_data_dir, WONKA, use_case.load("churn"), "customer_activity"))
    ids = [int(i) for i in activity[schema.ENTITY].unique()[:2]]
    status, headers, body = predict(on_triton[WONKA.key]["url"], {"customer_ids": ids})
    assert status == 200 and headers[ENGINE_HEADER] == TRITON and len(body["predictions"]) == 2


def test_triton_endpoint_metadata_and_event(on_triton, resources, instance):
    endpoint = on_triton[WONKA.key]
    assert endpoint["triton_model"] == "wonka-churn" and endpoint["engine"] == TRITON
    deployed = [e for e in Outbox(resources["events"].outbox_path).events(WONKA.key)
                if e.type == EventType.MODEL_DEPLOYED and e.data.get("engine") == TRITON]
    assert deployed and deployed[-1].data["version"] == endpoint["v1"]
    assert deployed[-1].data["triton_model"] == "wonka-churn"


def test_a_tenant_reaches_only_its_own_model(predict, on_triton, repository, settings):
    from ml_assets.access.keys import KeyStore, Role
    from ml_assets.serving.client import post_json

    before = {t.key: repository.inference_counts(t) for t in (WONKA, STARK)}
    for _ in range(5):
        assert predict(on_triton[WONKA.key]["url"], {"rows": rows(1)})[0] == 200
    after = {t.key: repository.inference_counts(t) for t in (WONKA, STARK)}
    v1 = on_triton[WONKA.key]["v1"]
    assert after[WONKA.key][v1] - before[WONKA.key][v1] == 5
    assert after[STARK.key] == before[STARK.key]  # not one request reached stark's model
    # a wonka key on stark's path is refused before anything is scored; a model name in the
    # body is an unknown field, never a way to pick a model
    _, token = KeyStore(settings.api_keys_path).create(WONKA, Role.predict)
    stark_url = on_triton[STARK.key]["url"]
    assert post_json(stark_url, {"rows": rows(1)}, token=token)[0] == 403
    status, _, body = predict(on_triton[WONKA.key]["url"],
                              {"rows": rows(1), "model": model_name(STARK)})
    assert status == 422 and "model" in body["error"]
    assert repository.inference_counts(STARK) == before[STARK.key]
    # loading is namespaced: a tenant's name can only make a model name of its own
    assert model_name(Tenant("wonka-churn")) == "wonka-churn-churn"
    assert not repository.version_ready(Tenant("wonka-churn"), "1")


def tick(instance, cursor, resources) -> dg.SensorResult:
    from ml_assets.defs.registry.sensors import mlflow_stage_change_sensor

    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources=resources) as context:
        return mlflow_stage_change_sensor(context)


def test_a_promotion_reloads_triton_without_dropping_a_request(
        predict, on_triton, resources, instance, repository):
    endpoint, tenant = on_triton[STARK.key], STARK
    v1, v2 = endpoint["v1"], endpoint["v2"]
    stop = threading.Event()
    answers: list[tuple[int, str, str]] = []

    def fire() -> None:
        while not stop.is_set():
            status, headers, _ = predict(endpoint["url"], {"rows": rows(2)})
            answers.append((status, headers.get(VERSION_HEADER), headers.get(ENGINE_HEADER)))

    assert predict(endpoint["url"], {"rows": rows(1)})[0] == 200  # its key made here, once
    sensor_resources = {"mlflow": resources["mlflow"], "events": resources["events"]}
    first = tick(instance, None, sensor_resources)  # learns what is deployed
    thread = threading.Thread(target=fire)
    thread.start()
    try:
        time.sleep(0.5)
        stages.transition(resources["mlflow"].client(), resources["events"], tenant, v2,
                          stages.PRODUCTION, "test", "pytest")
        # the stage-change sensor asks for both: a tenant on Triton is reloaded there
        (request,) = [r for r in tick(instance, first.cursor, sensor_resources).run_requests
                      if r.partition_key == tenant.key]
        assert {k.path[-1] for k in request.asset_selection} == {
            "deployed_endpoint", "triton_endpoint"}
        result = deploy(instance, resources, tenant)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result.success, result.get_step_failure_events()
    assert len(answers) > 20 and [a for a in answers if a[0] != 200] == []
    # v1 on Triton, v2 in-process while Triton loads it, then v2 on Triton: in that order
    phases = [a[1:] for i, a in enumerate(answers) if i == 0 or a[1:] != answers[i - 1][1:]]
    assert phases == [(v1, TRITON), (v2, RAY), (v2, TRITON)], phases
    # the Archived version is no longer loaded; only the Production one
    assert repository.version_ready(tenant, v2) and not repository.version_ready(tenant, v1)
    assert set(repository.inference_counts(tenant)) == {v2}
    on_triton[tenant.key]["v1"] = v2  # what later tests expect Production to be


def test_reloading_the_same_version_drops_no_request(predict, on_triton, resources, instance):
    """What the stage-change sensor does when only the Staging version moved."""
    endpoint = on_triton[WONKA.key]
    stop, answers = threading.Event(), []

    def fire() -> None:
        while not stop.is_set():
            status, headers, _ = predict(endpoint["url"], {"rows": rows(1)})
            answers.append((status, headers.get(ENGINE_HEADER)))

    thread = threading.Thread(target=fire)
    thread.start()
    try:
        result = deploy(instance, resources, WONKA, assets=[triton_endpoint])
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result.success and len(answers) > 10
    assert {status for status, _ in answers} == {200}
    phases = [a for i, a in enumerate(answers) if i == 0 or a != answers[i - 1]]
    assert phases == [(200, TRITON), (200, RAY), (200, TRITON)]  # in-process while reloading


def test_triton_errors_are_answered_and_logged_with_their_status(
        predict, on_triton, repository, resources, instance):
    from ray import serve

    from ml_assets.serving.app import APP_NAME

    tenant, endpoint = WONKA, on_triton[WONKA.key]
    version, url = endpoint["v1"], endpoint["url"]
    started = time.time()
    repository.unload(tenant)  # the model is gone from the server
    status, headers, body = predict(url, {"rows": rows(1)})
    assert (status, headers[ENGINE_HEADER]) == (503, TRITON)
    assert "not ready on Triton" in body["error"]
    route = get_route(tenant)
    set_route(tenant, route.changed(triton_url=f"http://127.0.0.1:{free_port()}"))  # down
    deadline = time.monotonic() + 10
    while "unreachable" not in body["error"] and time.monotonic() < deadline:
        status, _, body = predict(url, {"rows": rows(1)})
    assert status == 503 and "Triton is unreachable" in body["error"]
    bad, _, answer = predict(url, {"rows": [{"nps_score": 1.0}]})
    assert bad == 422 and "missing features" in answer["error"]  # checked before Triton
    serve.get_app_handle(APP_NAME).flush_log.remote().result()
    log = prediction_log.read(resources["object_store"], tenant, "churn").to_pandas()
    recent = log[log["ts"] >= pd.Timestamp(started, unit="s", tz="UTC")]
    failed = recent[recent["status"] == 503]
    assert len(failed) >= 2 and set(failed["route"]) == {prediction_log.PRODUCTION_ROUTE}
    assert set(failed["model_version"]) == {version} and failed["prediction"].isna().all()
    assert 422 in set(recent["status"])
    # back: reloaded and routed by the asset
    set_route(tenant, route)
    result = deploy(instance, resources, tenant, assets=[triton_endpoint])
    assert result.success
    assert predict(url, {"rows": rows(1)})[0] == 200


def test_engine_ray_routes_back_in_process_and_unloads(
        predict, on_triton, repository, resources, instance):
    tenant, endpoint = WONKA, on_triton[WONKA.key]
    result = deploy(instance, resources, tenant, engine=RAY, assets=[triton_endpoint])
    assert result.success
    status, headers, _ = predict(endpoint["url"], {"rows": rows(1)})
    assert (status, headers[ENGINE_HEADER]) == (200, RAY)
    assert get_route(tenant).engine == RAY
    assert repository.inference_counts(tenant) == {}  # unloaded


def test_triton_endpoint_serves_only_production(instance, resources, on_triton, repository):
    staged_only = Tenant("oscorp")
    instance.add_dynamic_partitions("tenant", [staged_only.key])
    from ml_assets_testing.models import log_untrained_models, register

    uri = log_untrained_models(resources["mlflow"], [staged_only.key])[staged_only.key][0]
    version = register(resources["mlflow"], staged_only, uri)
    stages.transition(resources["mlflow"].client(), resources["events"], staged_only, version,
                      stages.STAGING, "test", "pytest")
    result = deploy(instance, resources, staged_only, assets=[triton_endpoint])
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert "no Production model version" in str(error.cause or error)
    assert not repository.version_ready(staged_only, version)
    # an alias moved by hand onto a version without verified lineage is not loaded either
    from ml_assets.registry.actions import register_version

    orphan = str(register_version(resources["mlflow"], staged_only, uri, {}).version)
    resources["mlflow"].client().set_registered_model_alias(
        staged_only.registered_model_name, "production", orphan)
    result = deploy(instance, resources, staged_only, assets=[triton_endpoint])
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert not result.success and "no verified lineage" in str(error.cause or error)
    assert not repository.version_ready(staged_only, orphan)


def test_a_production_version_archived_is_unloaded(instance, resources, on_triton, repository):
    import mlflow.pytorch

    from ml_assets.serving.triton import export_onnx

    tenant, version = WONKA, on_triton[WONKA.key]["v1"]
    model = mlflow.pytorch.load_model(f"models:/{tenant.registered_model_name}/{version}")
    onnx = export_onnx(model.eval(), len(schema.FEATURES))
    repository.load(tenant, {version: onnx}, resources["triton"].backend,
                    resources["triton"].python_env)
    assert repository.version_ready(tenant, version)
    stages.transition(resources["mlflow"].client(), resources["events"], tenant, version,
                      stages.ARCHIVED, "test", "pytest")
    result = deploy(instance, resources, tenant, assets=[triton_endpoint])
    assert not result.success  # nothing to serve, and the Archived version is gone
    assert not repository.version_ready(tenant, version)
