"""The assets against a Ray cluster started apart from them (`ray start --head` in its own
process, RAY_ADDRESS set): the code path of a KubeRay RayCluster, with no local fallback."""

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

HEAD_CPUS = 3  # not what a local fallback cluster would get (ML_ASSETS_RAY_NUM_CPUS=4, 2 cores)


class RayHead:
    """`ray start --head --block` on free ports with its own temp dir, in its own process group
    so that stopping it ends exactly its processes (`ray stop` would end every Ray here)."""

    def __init__(self) -> None:
        # short: Ray's unix socket paths live under it (108-byte limit)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
        self.port, self.node_manager_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        ports = {"port": self.port, "node-manager-port": self.node_manager_port,
                 "object-manager-port": free_port(), "ray-client-server-port": free_port(),
                 "dashboard-agent-listen-port": free_port(),
                 "dashboard-agent-grpc-port": free_port(),
                 "runtime-env-agent-port": free_port(), "metrics-export-port": free_port()}
        self.process = subprocess.Popen(
            [venv_bin("ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--num-cpus={HEAD_CPUS}", "--include-dashboard=false", "--disable-usage-stats",
             f"--temp-dir={self.temp_dir}", *[f"--{k}={v}" for k, v in ports.items()]],
            env={**os.environ, "RAY_AUTH_MODE": "token"}, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for port in (self.port, self.node_manager_port):  # GCS, then the raylet
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("ray start --head did not come up") from None
                    time.sleep(0.5)

    def worker_logs(self) -> str:
        logs = self.temp_dir / "session_latest" / "logs"
        return "\n".join(path.read_text(errors="replace") for path in logs.glob("worker-*"))

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
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


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    head = RayHead()
    try:
        head.wait_ready()
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def remote_run(ray_head, tmp_path_factory) -> dict:
    state = tmp_path_factory.mktemp("remote-state")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ML_ASSETS_", "MLFLOW_"))}
    env.update(RAY_ADDRESS=ray_head.address, RAY_AUTH_MODE="token",
               ML_ASSETS_STATE_DIR=str(state))
    done = subprocess.run(
        [sys.executable, "-m", "ml_assets_tests.remote_ray_driver", "remote",
         str(tmp_path_factory.mktemp("remote-dagster"))],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "state": state}


def test_assets_run_on_the_cluster_at_ray_address(remote_run, ray_head):
    assert remote_run["ray_address"] == ray_head.address
    # connected to that GCS (Ray reports it under the node's own IP), not a new local cluster
    assert remote_run["gcs_address"].rpartition(":")[2] == str(ray_head.port)
    assert remote_run["cluster_cpus"] == HEAD_CPUS
    # the cluster's own record: the training workers were processes of that head's raylet
    assert "RayTrainWorker" in ray_head.worker_logs()


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
