"""`ml-assets triton up|down`: the local Triton Inference Server that `triton_endpoint` loads
tenants' models into: the server nvidia-pytriton bundles, from its own virtualenv
(`.venv-triton`, made by `make install`), with explicit model control."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from ml_assets.serving.triton import TritonRepository
from ml_assets.settings import Settings


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3.*/site-packages"))
    if not found or not (found[0] / "pytriton" / "tritonserver").is_dir():
        raise FileNotFoundError(f"no Triton server in {venv}: run `make install`")
    return found[0]


def server_command(venv: Path, repository: Path, http_port: int) -> tuple[list[str], dict]:
    """tritonserver's command line and environment: HTTP on loopback only, explicit model
    control (models come and go through the repository API), no gRPC or metrics port."""
    site = site_packages(venv)
    root = site / "pytriton" / "tritonserver"
    home = next(line.split("=", 1)[1].strip() for line in (venv / "pyvenv.cfg").read_text()
                .splitlines() if line.startswith("home"))
    # the python backend's stub embeds libpython: the venv interpreter's own, not the system's
    # (Debian's 3.11.2 lacks what the stub calls), and the wheel's bundled libraries
    libraries = [str(site / "nvidia_pytriton.libs"), str(Path(home).parent / "lib")]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(
        libraries + [p for p in [os.environ.get("LD_LIBRARY_PATH")] if p])}
    command = [str(root / "bin" / "tritonserver"), f"--model-repository={repository}",
               f"--backend-directory={root / 'backends'}", "--model-control-mode=explicit",
               "--http-address=127.0.0.1", f"--http-port={http_port}",
               "--allow-grpc=false", "--allow-metrics=false", "--log-verbose=0"]
    return command, env


def start(venv: Path, state: Path, http_port: int, log: Path) -> subprocess.Popen:
    """Start tritonserver in the background; the caller waits for readiness."""
    repository = state / "repository"  # empty: every model arrives with its load request
    repository.mkdir(parents=True, exist_ok=True)
    command, env = server_command(venv, repository, http_port)
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    repository, deadline = TritonRepository(url, timeout_s=2), time.monotonic() + timeout_s
    while not repository.ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"tritonserver at {url} did not become ready")
        time.sleep(0.2)


def triton_up(settings: Settings) -> str:
    if TritonRepository(settings.triton_url, timeout_s=2).ready():
        return settings.triton_url
    state = settings.state_dir / "triton"
    state.mkdir(parents=True, exist_ok=True)
    port = urlparse(settings.triton_url).port or 8010
    process = start(Path(settings.triton_python_env), state, port, state / "server.log")
    wait_ready(settings.triton_url, process)
    (state / "pid").write_text(str(process.pid))
    return settings.triton_url


def triton_down(settings: Settings) -> None:
    pid_file = settings.state_dir / "triton" / "pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
        pid_file.unlink()


def add_commands(commands: argparse._SubParsersAction) -> None:
    triton = commands.add_parser("triton", help="the local Triton Inference Server").add_subparsers(
        dest="action", required=True)
    triton.add_parser("up").set_defaults(run=lambda settings, args: triton_up(settings))
    triton.add_parser("down").set_defaults(run=lambda settings, args: triton_down(settings))
