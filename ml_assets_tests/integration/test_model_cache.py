"""The Serve replica's model cache under real traffic: bounded to two models (by count, or by
their bytes), three tenants served in turn. A second app beside the shared one, so the shared
app keeps its settings and its port."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ml_assets import schema
from ml_assets.serving.routing import VERSION_HEADER, Route, set_route
from ml_assets.tenants import Tenant
from ml_assets_testing.models import production_version

PREFIX = "/v1/lru-"  # the app's route prefix: every path of its tenants starts with it
TENANTS = [Tenant(f"lru-{name}") for name in ("a", "b", "c")]
APP = "models-lru"
ROUNDS = 3


def model_bytes(resources, tenant: Tenant, version: str) -> int:
    import mlflow.pytorch

    from ml_assets.serving.models import torch_bytes

    return torch_bytes(mlflow.pytorch.load_model(
        f"models:/{tenant.registered_model_name}/{version}"))


def expected(tenant: Tenant, version: str, rows: list[dict]) -> list[float]:
    """What the tenant's registered version computes for the rows, outside Serve."""
    import mlflow.pytorch
    import torch

    model = mlflow.pytorch.load_model(f"models:/{tenant.registered_model_name}/{version}")
    with torch.no_grad():
        return model(torch.tensor([[r[f] for f in schema.FEATURES] for r in rows])).tolist()


@pytest.fixture(scope="module")
def versions(resources, ray_cluster) -> dict[str, str]:
    """A Production version per tenant, each with its own weights, routed."""
    registry, events = resources["mlflow"], resources["events"]
    made = {}
    for seed, tenant in enumerate(TENANTS):
        made[tenant.key] = production_version(registry, events, tenant, seed=seed + 10)
        set_route(tenant, Route(registry_uri=registry.tracking_uri, primary=made[tenant.key]))
    yield made
    for tenant in TENANTS:
        set_route(tenant, None)


@pytest.fixture(params=["count", "bytes"])
def bounded_app(request, resources, versions):
    """The app, deployed with room for two of the three models: two by count, or 2.5 models'
    bytes with room for 32 by count."""
    from ray import serve

    from ml_assets.defs.serving.assets import direct_ingress_port, start_serve
    from ml_assets.serving.app import ModelService

    size = model_bytes(resources, TENANTS[0], versions[TENANTS[0].key])
    bounds = ({"models_per_replica": 2} if request.param == "count" else
              {"models_per_replica": 32, "model_cache_mb": 2.5 * size / 2**20})
    endpoint = resources["serve_endpoint"].model_copy(update=bounds)
    start_serve(endpoint)
    serve.run(ModelService.bind(resources["feast"].model_dump(),
                                resources["object_store"].model_dump(),
                                **endpoint.replica_config()),
              name=APP, route_prefix=PREFIX)
    port = direct_ingress_port(APP)
    assert port is not None, "the tests run Serve with direct ingress"
    yield {t.key: endpoint.url(t, port) for t in TENANTS}, serve.get_app_handle(APP)
    serve.delete(APP)


def row(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {name: float(rng.normal()) for name in schema.FEATURES}


def test_the_model_cache_evicts_and_reloads_without_errors(predict, resources, versions,
                                                          bounded_app):
    urls, app = bounded_app
    rows = [row(1), row(2)]
    wanted = {t.key: expected(t, versions[t.key], rows) for t in TENANTS}
    assert len({tuple(np.round(w, 6)) for w in wanted.values()}) == 3  # tells them apart

    def ask(tenant: Tenant) -> None:
        deadline = time.monotonic() + 10
        while True:  # until the replica has the routes (long-poll)
            status, headers, body = predict(urls[tenant.key], {"rows": rows})
            if status != 404 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert (status, headers.get(VERSION_HEADER)) == (200, versions[tenant.key]), body
        assert body["predictions"] == pytest.approx(wanted[tenant.key], abs=1e-6)

    for tenant in TENANTS:
        ask(tenant)
    stats = app.model_cache_stats.remote().result()
    a, b, c = (f"{t.key}/churn/{versions[t.key]}" for t in TENANTS)
    assert stats["models"] == [b, c] and stats["evictions"] == 1  # a, least recently used
    for _ in range(ROUNDS - 1):
        for tenant in TENANTS:  # each is the one evicted last: every request reloads
            ask(tenant)
    stats = app.model_cache_stats.remote().result()
    requests = ROUNDS * len(TENANTS)
    assert (stats["hits"], stats["misses"], stats["loads"]) == (0, requests, requests)
    assert (stats["evictions"], stats["failures"], stats["loaded"]) == (requests - 2, 0, 2)
    assert stats["bytes"] == 2 * model_bytes(resources, TENANTS[0], versions[TENANTS[0].key])
    ask(TENANTS[-1])  # the most recently used is still loaded
    assert app.model_cache_stats.remote().result()["hits"] == 1
