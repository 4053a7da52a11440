"""Where the tenants' LLMs are served: local vLLM processes behind the LLM gateway."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ml_assets.llm.vllm_server import VllmOptions
from ml_assets.tenants import Tenant


class LlmServing(dg.ConfigurableResource):
    """The vLLM virtualenv's interpreter, the gateway's address, and the folder holding the
    routes file, downloaded model directories and server logs."""

    vllm_python: str
    state_dir: str
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8002
    api_keys_path: str = ".ml_assets/api_keys.db"  # the key store callers' keys are checked in
    rate_limit_per_minute: int = 600_000
    max_model_len: int = 256
    kv_cache_gib: int = 1
    # eager: no torch.compile at start-up; uni: the worker runs in the engine's process, one
    # interpreter fewer to start (118 -> 61 s to ready on 2 loaded cores); float32: with bf16
    # the worker process died of SIGILL on the first request here (AMX kernels, CPU only)
    vllm_args: list[str] = ["--enforce-eager", "--distributed-executor-backend", "uni",
                            "--dtype", "float32"]
    start_timeout_s: float = 300.0
    log_flush_s: float = 1.0

    def options(self) -> VllmOptions:
        return VllmOptions(python=self.vllm_python, max_model_len=self.max_model_len,
                           kv_cache_gib=self.kv_cache_gib, extra_args=tuple(self.vllm_args),
                           start_timeout_s=self.start_timeout_s)

    @property
    def root(self) -> Path:
        return Path(self.state_dir)

    @property
    def routes_path(self) -> Path:
        return self.root / "routes.json"

    def url(self, tenant: Tenant, endpoint: str = "completions") -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}{tenant.route_prefix}/llm/{endpoint}"
