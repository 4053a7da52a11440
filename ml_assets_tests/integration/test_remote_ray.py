"""The assets against a Ray cluster started apart from them (`ray start` processes: a head and
a worker node on another address; RAY_ADDRESS set): the code path of a KubeRay RayCluster whose
step pods join as nodes without resources (ml_assets/executor.py), with no local fallback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_assets.settings import PROJECT_ROOT
from ml_assets_tests.conftest import free_port, venv_bin

WORKER_CPUS = 3  # not what a local fallback cluster would get (ML_ASSETS_RAY_NUM_CPUS=4)


class RayNode:
    """`ray start --block` on free ports with its own temp dir, in its own process group so that
    stopping it ends exactly its processes (`ray stop` would end every Ray on the machine)."""

    def __init__(self, ip: str, args: list[str]) -> None:
        # short: Ray's unix socket paths live under it (108-byte limit)
        self.ip, self.temp_dir = ip, Path(tempfile.mkdtemp(prefix="rn-", dir="/tmp"))
        self.node_manager_port = free_port()
        ports = {"node-manager-port": self.node_manager_port, "object-manager-port": free_port(),
                 "dashboard-agent-listen-port": free_port(),
                 "dashboard-agent-grpc-port": free_port(),
                 "runtime-env-agent-port": free_port(), "metrics-export-port": free_port()}
        self.log = self.temp_dir / "ray-start.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [venv_bin("ray"), "start", "--block", f"--node-ip-address={ip}",
                 "--disable-usage-stats", f"--temp-dir={self.temp_dir}", *args,
                 *[f"--{k}={v}" for k, v in ports.items()]],
                env={**os.environ, "RAY_AUTH_MODE": "token"}, start_new_session=True,
                stdout=log, stderr=subprocess.STDOUT)

    def wait_listening(self, port: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((self.ip, port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    output = self.log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"ray node on {self.ip} did not come up on port {port} "
                                       f"(exit {self.process.poll()}):\n{output}") from None
                time.sleep(0.5)

    def worker_logs(self) -> str:
        logs = self.temp_dir.glob("session_*/logs/worker-*")
        return "\n".join(path.read_text(errors="replace") for path in logs)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class LocalRayCluster:
    """A head without resources, where the driver attaches (a step pod that joined the
    cluster), and a worker node on another address (a KubeRay worker pod) that does the work."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.head = RayNode("127.0.0.1", ["--head", f"--port={self.port}", "--num-cpus=0",
                                          "--include-dashboard=false",
                                          f"--ray-client-server-port={free_port()}"])
        self.worker: RayNode | None = None

    def start(self) -> None:
        self.head.wait_listening(self.port)
        self.head.wait_listening(self.head.node_manager_port)
        self.worker = RayNode("127.0.0.2", [f"--address={self.address}",
                                            f"--num-cpus={WORKER_CPUS}"])
        self.worker.wait_listening(self.worker.node_manager_port)

    def stop(self) -> None:
        for node in (self.worker, self.head):
            if node is not None:
                node.stop()


@pytest.fixture(scope="module")
def ray_cluster_apart() -> Iterator[LocalRayCluster]:
    from ml_assets.cli.ray_cluster import ensure_ray_token

    # the cluster's token (a Kubernetes secret in deploy/): on a fresh machine, where no test
    # before this one has run a local ray.init, `ray start --head` refuses to start without it
    ensure_ray_token()
    cluster = LocalRayCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def remote_run(ray_cluster_apart, tmp_path_factory) -> dict:
    state = tmp_path_factory.mktemp("remote-state")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ML_ASSETS_", "MLFLOW_"))}
    env.update(RAY_ADDRESS=ray_cluster_apart.address, RAY_AUTH_MODE="token",
               ML_ASSETS_STATE_DIR=str(state))
    done = subprocess.run(
        [sys.executable, "-m", "ml_assets_tests.integration.remote_ray_driver", "remote",
         str(tmp_path_factory.mktemp("remote-dagster"))],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "state": state}


def test_assets_run_on_the_cluster_at_ray_address(remote_run, ray_cluster_apart):
    assert remote_run["ray_address"] == ray_cluster_apart.address
    # connected to that GCS (Ray reports it under the node's own IP), not a new local cluster
    assert remote_run["gcs_address"].rpartition(":")[2] == str(ray_cluster_apart.port)
    assert remote_run["cluster_cpus"] == WORKER_CPUS
    # the cluster's own record: the training workers ran on the worker node, none beside the
    # driver on the head (which has no CPUs to give them)
    # the tenant's small model trained in one Ray task on the cluster's worker node
    assert ":task_name:train:churn-mlp-" in ray_cluster_apart.worker.worker_logs()
    assert "RayTrainWorker" not in ray_cluster_apart.head.worker_logs()


def test_the_model_trained_there_is_tracked_and_checkpointed(remote_run):
    from mlflow import MlflowClient

    from ml_assets.settings import load_settings

    trained = remote_run["trained_model"]
    assert remote_run["feature_rows"] > 0
    assert 0.0 <= trained["metrics"]["val_roc_auc"] <= 1.0
    assert "/tenants/remote/checkpoints/" in trained["checkpoint_dir"]
    settings = load_settings({"ML_ASSETS_STATE_DIR": str(remote_run["state"])})
    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1]


def test_a_head_starts_on_a_machine_that_has_no_ray_token(tmp_path, monkeypatch):
    """A fresh machine has no ~/.ray/auth_token, and `ray start --head` with token auth refuses
    to start without one; `ml-assets ray up` and the benchmarks' head create it first."""
    from ml_assets.cli.ray_cluster import ensure_ray_token

    monkeypatch.setenv("HOME", str(tmp_path))  # a home without ~/.ray
    head_args = ["--head", "--num-cpus=1", "--include-dashboard=false"]
    refused = RayNode("127.0.0.1", [*head_args, f"--port={free_port()}"])
    try:
        assert refused.process.wait(timeout=120) != 0
    finally:
        refused.stop()

    ensure_ray_token()
    token = (tmp_path / ".ray" / "auth_token").read_text().strip()
    assert len(token) >= 32
    port = free_port()
    head = RayNode("127.0.0.1", [*head_args, f"--port={port}"])
    try:
        head.wait_listening(port)
        head.wait_listening(head.node_manager_port)
        # a client with the token (same HOME) is let in and sees the head's CPU
        joined = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}'); "
             "print(ray.cluster_resources().get('CPU'))"],
            env={**os.environ, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True,
            timeout=120)
        assert joined.returncode == 0, joined.stderr[-2000:]
        assert joined.stdout.strip().splitlines()[-1] == "1.0"
        ensure_ray_token()  # an existing token is kept: the running head still trusts it
        assert (tmp_path / ".ray" / "auth_token").read_text().strip() == token
    finally:
        head.stop()
