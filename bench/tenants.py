"""A hundred tenants on one machine: N new tenants (2,000 customers each) from empty to a
Production version served on the Serve app, as ONE run over their partitions (what a backfill
from the UI launches: every asset has the single-run backfill policy), through the CLI's path
(`dagster asset materialize --partition-range`, a process per step, one shared Ray head). Wall,
CPU-seconds and the marginal cost of a tenant; the baseline is one tenant, the same way, in the
same process.

    python -m bench.tenants [--tenants 1 4 10 100] [--customers 2000]
"""

import argparse
import os
import shutil
import signal
import time

from bench.common import report
from bench.graph import GRAPH, fresh_state, machine_cpu_seconds, run_graph, start_ray_head

GOAL_S = 600  # 100 tenants in under 10 minutes on 2 cores


def run_range(settings, tenants: list[str]) -> float:
    """The CLI's materialize of GRAPH over the tenants' range as one run; its wall time."""
    return run_graph(settings, f"{len(tenants)}-tenants", partitions=[
        "--partition-range", f"{tenants[0]}...{tenants[-1]}"])


def step_seconds(settings, tenants: list[str]) -> dict[str, float]:
    """Seconds each step of the run over the tenants took (each step covers all of them)."""
    import dagster as dg

    from ml_assets.cli.common import instance

    with instance(settings) as dagster:
        run = dagster.get_runs(dg.RunsFilter(tags={
            "dagster/asset_partition_range_start": tenants[0],
            "dagster/asset_partition_range_end": tenants[-1]}), limit=1)[0]
        started, took = {}, {}
        for record in dagster.get_records_for_run(run.run_id, of_type={
                dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}).records:
            entry = record.event_log_entry
            if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                started[entry.step_key] = entry.timestamp
            else:
                took[entry.step_key.removeprefix("churn__")] = (
                    entry.timestamp - started[entry.step_key])
        return {name: took.get(name) for name in GRAPH}


def served(settings, tenants: list[str]) -> tuple[int, int]:
    """(tenants whose Production version is registered, tenants whose production route
    answered a prediction with 200), one request each with the tenant's own key."""
    from mlflow import MlflowClient

    from ml_assets import schema
    from ml_assets.access.keys import KeyStore, Role
    from ml_assets.registry import stages
    from ml_assets.serving.client import post_json
    from ml_assets.tenants import Tenant

    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    keys = KeyStore(settings.api_keys_path)
    production = answered = 0
    for key in tenants:
        tenant = Tenant(key)
        versions = client.search_model_versions(f"name = '{tenant.registered_model_name}'")
        production += any(v.tags.get(stages.STAGE_TAG) == stages.PRODUCTION for v in versions)
        url = (f"http://127.0.0.1:{settings.serve_port}/v1/{key}/churn/predict")
        status, _, _ = post_json(url, {"rows": [dict.fromkeys(schema.FEATURES, 1.0)]},
                                 token=keys.create(tenant, Role.predict)[1])
        answered += status == 200
    return production, answered


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, nargs="+", default=[1, 4, 10, 100])
    parser.add_argument("--customers", type=int, default=2000)
    args = parser.parse_args(argv)
    from ml_assets.cli.tenants import tenant_add
    from ml_assets.data import churn_data

    state, settings = fresh_state("bench-tenants-")
    spec = churn_data.ChurnDataSpec(customers=args.customers)
    rows = []
    head = start_ray_head(settings)
    try:
        for n in args.tenants:
            tenants = [f"n{n}-{i:03d}" for i in range(n)]
            started = time.perf_counter()
            for tenant in tenants:
                tenant_add(settings, tenant, spec)
            onboarding = time.perf_counter() - started
            cpu = machine_cpu_seconds()
            wall = run_range(settings, tenants)
            cpu = machine_cpu_seconds() - cpu
            production, answered = served(settings, tenants)
            rows.append({"tenants": n, "wall_s": wall, "cpu_s": cpu,
                         "wall_per_tenant_s": wall / n, "cores_busy": cpu / wall,
                         "production": production, "served": answered,
                         "onboarding_s": onboarding, **step_seconds(settings, tenants)})
            print(rows[-1], flush=True)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)
    base = rows[0]
    for row in rows:
        row["vs_first"] = row["wall_s"] / base["wall_s"]
        if row["tenants"] > base["tenants"]:
            row["marginal_s_per_tenant"] = ((row["wall_s"] - base["wall_s"])
                                            / (row["tenants"] - base["tenants"]))
    shutil.rmtree(state, ignore_errors=True)  # kept when a run failed: its logs are there
    hundred = next((r for r in rows if r["tenants"] == 100), None)
    four = next((r for r in rows if r["tenants"] == 4), None)
    report("tenants", ["tenants", "wall_s", "cpu_s", "cores_busy", "wall_per_tenant_s",
                       "marginal_s_per_tenant", "vs_first", "production", "served", *GRAPH,
                       "onboarding_s"], rows, {
        "path": "`dagster asset materialize --select churn/<graph> --partition-range "
                "FIRST...LAST` (the CLI's): one run over the new tenants, a process per step, "
                "one shared Ray head started before the first scenario",
        "data": f"{args.customers:,} customers per tenant, new tenants per scenario; "
                "trained_model at its defaults; onboarding (data written, partition added) "
                "is not in wall_s",
        "columns": "asset columns: seconds of the one step that covered every tenant",
        "served": "tenants whose production route answered one prediction (200) with their "
                  "own key after the run",
        "goal": f"100 tenants < {GOAL_S} s; 4 tenants < 2x one tenant",
        "met": {"100 tenants": None if hundred is None else hundred["wall_s"] < GOAL_S,
                "4 tenants vs 1": None if four is None else four["vs_first"] < 2},
    })


if __name__ == "__main__":
    main()
