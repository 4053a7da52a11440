"""The monitoring checks that look beyond the log's numbers: is the endpoint alive (a probe
when it is quiet), and how good were the served predictions once their labels arrived."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ml_assets import use_case
from ml_assets.access.keys import Role, temporary_token
from ml_assets.monitoring import liveness, realized
from ml_assets.registry import stages
from ml_assets.resources.feast import FeastStore
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.monitoring import MonitoringThresholds
from ml_assets.resources.ray import RayCluster, ServeEndpoint
from ml_assets.serving.client import input_example, post_json
from ml_assets.tenants import Tenant

if TYPE_CHECKING:
    import pyarrow as pa

    from ml_assets.monitoring.statistics import Outcome


def serving_alive(ray: RayCluster, serve_endpoint: ServeEndpoint, tenant: Tenant,
                  table: pa.Table, now: datetime, limits: MonitoringThresholds) -> Outcome:
    """Alive on the window's own traffic; when the production route answered nothing for
    `quiet_minutes`, one probe request with the Production version's input example."""
    from ml_assets.serving.routing import get_route

    quiet_s = limits.quiet_minutes * 60
    age = liveness.last_answer_age_s(table, now)
    if age is not None and age <= quiet_s:
        return liveness.from_traffic(age, quiet_s)
    ray.connect()
    route = get_route(tenant)
    if route is None or route.primary is None:
        return liveness.not_deployed(f"tenant {tenant.key} has no Production version deployed")
    row = input_example(f"models:/{tenant.registered_model_name}/{route.primary}")[0]
    url = serve_endpoint.url(tenant)  # through the proxy: what callers reach
    started = time.perf_counter()
    status, error, answered = None, None, 0
    with temporary_token(Path(serve_endpoint.api_keys_path), tenant, Role.predict) as token:
        try:
            status, _, body = post_json(url, {"rows": [row], "key": "probe"}, token=token,
                                        timeout=10)
            answered = len(body.get("predictions") or [])
            error = body.get("error")
        except OSError as exc:  # refused, reset, timed out: the endpoint is down
            error = f"{url}: {exc}"
    latency_ms = (time.perf_counter() - started) * 1000
    return liveness.from_probe(status, answered, latency_ms, quiet_s, error)


def realized_quality(feast: FeastStore, mlflow: MlflowRegistry, tenant: Tenant,
                     table: pa.Table, version: str | None,
                     limits: MonitoringThresholds) -> Outcome:
    """The gate metric on the version's scored customers whose labels (the tenant's label
    source) arrived after scoring, against the version's holdout value."""
    import pandas as pd
    import pyarrow.compute as pc

    from ml_assets.serving.prediction_log import ENTITY_KEY, PRODUCTION_ROUTE

    declared = use_case.load(tenant.use_case)
    key, label = declared.key, declared.label
    metric = limits.quality_metric or declared.gate.metric
    holdout, scored = None, pd.DataFrame(columns=[key, "ts", "prediction"])
    if version is not None:
        client = mlflow.client()
        run_id = stages.model_version(client, tenant, version).run_id
        holdout = client.get_run(run_id).data.metrics.get(f"holdout_{metric}")
        rows = table.filter(pc.and_(pc.and_(pc.equal(table["route"], PRODUCTION_ROUTE),
                                            pc.equal(table["model_version"], version)),
                                    pc.equal(table["status"], 200)))
        scored = (rows.select([ENTITY_KEY, "ts", "prediction"]).to_pandas()
                  .rename(columns={ENTITY_KEY: key}))
    path = feast.source_path(tenant, declared, label.name)
    columns = [key, label.column, label.timestamp_field]
    labels = pd.read_parquet(path, columns=columns) if path.exists() else pd.DataFrame(
        columns=columns)
    joined = realized.labeled_after_scoring(scored, labels, key, "ts", label.column,
                                            label.timestamp_field)
    return realized.realized_quality(joined, label.column, holdout, metric,
                                     limits.max_quality_drop, limits.min_labeled_rows,
                                     scored["prediction"].to_numpy(dtype="float64"),
                                     label.task)
