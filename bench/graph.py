"""The whole graph as the CLI runs it (`dagster asset materialize` of the model's assets, a
step per process, every step connected to one local Ray head): one tenant cold (a fresh Ray
head), the same tenant warm, warm again with steps spawned (Dagster's default start method)
instead of forked from the project's preloaded forkserver, then N tenants at once on the same
head. Per-asset wall time comes from the Dagster event log
(STEP_START -> STEP_SUCCESS).

    python -m bench.graph [--tenants 4] [--customers 2000]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import report
from ml_assets.executor import PRELOAD_MODULES

# the model's life: features -> (search, off by default) -> training -> evaluation -> registry ->
# endpoint; the assets after it (batch scoring, Triton export, monitoring) need a Production
# version, which this graph only stages
GRAPH = ["training_features", "hyperparameter_search", "trained_model", "evaluation_report",
         "registered_model", "deployed_endpoint"]
def start_ray_head(settings) -> subprocess.Popen:
    """A Ray head this benchmark owns (`ray start --block` in its own process group), so it
    stops only its own processes; `ray stop` would stop every Ray on the machine."""
    from ml_assets.cli.ray_cluster import ensure_ray_token, free_port, ray_env, reachable

    port = free_port()
    ensure_ray_token()
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
         f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={settings.ray_num_cpus}",
         "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ray_env(),
        start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not reachable(address):
        if head.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the Ray head did not start at {address}")
        time.sleep(0.5)
    settings.ray_address_file.parent.mkdir(parents=True, exist_ok=True)
    settings.ray_address_file.write_text(address)
    return head


def fresh_state(prefix: str):
    """A throw-away state folder and a free Serve port for this process: (folder, settings)."""
    from ml_assets.settings import load_settings
    from ml_assets_testing.servers import free_port

    state = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update({"ML_ASSETS_STATE_DIR": str(state),
                       "ML_ASSETS_SERVE_PORT": str(free_port())})
    return state, load_settings()


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (every process: steps, Ray's workers and
    actors, servers), from /proc/stat: a scenario's share is the difference around it."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def run_graph(settings, tenant: str, config: Path | None = None,
              partitions: list[str] | None = None) -> float:
    """The command the CLI runs (cli.materialize with a selection: `dagster asset materialize`)
    for GRAPH and the tenant (or the `partitions` arguments given instead), with an optional
    run config file; its wall time. Its log goes to the state folder."""
    from ml_assets.cli.ray_cluster import ray_env
    from ml_assets.settings import PROJECT_ROOT

    env = {**ray_env(), "RAY_ADDRESS": settings.ray_address_file.read_text().strip(),
           "DAGSTER_HOME": str(settings.dagster_home)}
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
               "ml_assets.definitions", "--select", ",".join(f"churn/{a}" for a in GRAPH),
               *(partitions or ["--partition", tenant])]
    if config:
        command += ["-c", str(config)]
    log = settings.state_dir / f"{tenant}-{time.time_ns()}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=out)
    if done.returncode:
        raise RuntimeError(f"the run of {tenant} failed; its log: {log}\n"
                           + log.read_text()[-3000:])
    return time.perf_counter() - started


def spawn_config(directory: Path) -> Path:
    """Run config: every step a freshly spawned process that imports what it needs (Dagster's
    default start method; the project's executor forks them from a preloaded server)."""
    path = directory / "spawn.json"
    path.write_text(json.dumps({"execution": {"config": {"start_method": "spawn"}}}))
    return path


def step_times(settings, tenant: str) -> dict[str, float]:
    """Seconds each asset's step took in the tenant's latest run, from the event log."""
    import dagster as dg

    from ml_assets.cli.common import instance

    with instance(settings) as dagster:
        run = dagster.get_runs(dg.RunsFilter(tags={"dagster/partition": tenant}), limit=1)[0]
        if run.status != dg.DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"run {run.run_id} of {tenant} ended {run.status}")
        started: dict[str, float] = {}
        took: dict[str, float] = {}
        records = dagster.get_records_for_run(run.run_id, of_type={
            dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}).records
        for record in records:
            entry = record.event_log_entry
            if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                started[entry.step_key] = entry.timestamp
            else:
                took[entry.step_key] = entry.timestamp - started[entry.step_key]
        stats = dagster.get_run_stats(run.run_id)
        took["run (event log)"] = stats.end_time - stats.start_time
        # the steps run one after another: the rest is step processes starting and importing
        took["outside steps"] = took["run (event log)"] - sum(
            v for k, v in took.items() if k != "run (event log)")
    return took


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=4, help="tenants run at once")
    parser.add_argument("--customers", type=int, default=2000, help="per tenant (demo: 2000)")
    args = parser.parse_args(argv)
    from ml_assets.cli.tenants import tenant_add
    from ml_assets.data import churn_data

    state, settings = fresh_state("bench-graph-")
    spec = churn_data.ChurnDataSpec(customers=args.customers)
    tenants = [f"tenant-{i}" for i in range(args.tenants)]
    for tenant in tenants:
        tenant_add(settings, tenant, spec)

    rows = []

    def busy(wall: float, cpu_before: float) -> dict[str, float]:
        cpu = machine_cpu_seconds() - cpu_before
        return {"wall_s": wall, "cpu_s": cpu, "cores_busy": cpu / wall}

    started, cpu = time.perf_counter(), machine_cpu_seconds()
    head = start_ray_head(settings)
    try:
        ray_start = time.perf_counter() - started
        cold = run_graph(settings, tenants[0])
        rows.append({"scenario": "1 tenant, cold (fresh Ray head)", **busy(ray_start + cold, cpu),
                     "ray_head_start_s": ray_start, **step_times(settings, tenants[0])})
        cpu = machine_cpu_seconds()
        warm = run_graph(settings, tenants[0])
        rows.append({"scenario": "1 tenant, warm", **busy(warm, cpu),
                     **step_times(settings, tenants[0])})
        cpu = machine_cpu_seconds()
        spawned = run_graph(settings, tenants[0], spawn_config(state))
        rows.append({"scenario": "1 tenant, warm, steps spawned", **busy(spawned, cpu),
                     "vs_warm": spawned / warm, **step_times(settings, tenants[0])})
        if len(tenants) > 1:
            started, cpu = time.perf_counter(), machine_cpu_seconds()
            with ThreadPoolExecutor(len(tenants)) as pool:
                list(pool.map(lambda t: run_graph(settings, t), tenants))
            together = time.perf_counter() - started
            per_tenant = [step_times(settings, t) for t in tenants]
            rows.append({"scenario": f"{len(tenants)} tenants at once", **busy(together, cpu),
                         "vs_warm": together / warm,
                         **{k: max(p[k] for p in per_tenant) for k in per_tenant[0]}})
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)
    shutil.rmtree(state, ignore_errors=True)  # kept when a run failed: its logs are there
    rows[1]["vs_warm"] = 1.0
    steps = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in
             ("scenario", "wall_s", "cpu_s", "cores_busy", "vs_warm", "ray_head_start_s",
              "run (event log)", "outside steps")]
    report("graph", ["scenario", "wall_s", "cpu_s", "cores_busy", "vs_warm", "ray_head_start_s",
                     *steps, "outside steps", "run (event log)"], rows,
           {"path": f"`dagster asset materialize --select {','.join(GRAPH)}` (the CLI's), "
            "a process per step, one shared Ray head (RAY_ADDRESS)",
            "data": f"{args.customers:,} customers x 6 snapshots, {args.customers * 2:,} "
            "label rows per tenant; trained_model at its defaults (8 epochs, batch 64)",
            "columns": "asset columns: seconds from STEP_START to STEP_SUCCESS; for N tenants "
            "the slowest tenant's",
            "executor": "steps forked from a forkserver that preloaded "
            f"{PRELOAD_MODULES} (ml_assets/executor.py); 'steps spawned': "
            "execution.config.start_method = spawn, Dagster's default",
            "cpu_s": "CPU seconds the whole machine spent busy during the scenario (/proc/stat)"
            f"; cores_busy = cpu_s / wall_s, of {os.cpu_count()}: N tenants at once cannot take "
            "less than N x (one tenant's cpu_s) / cores, so against one warm tenant their ratio "
            "is at least N x its cores_busy / cores",
            "goal": "warm < 180 s per tenant; N tenants at once < 2x one warm tenant"})


if __name__ == "__main__":
    main()
