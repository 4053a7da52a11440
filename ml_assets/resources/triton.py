"""Triton Inference Server: where it listens and which backend runs the tenants' models."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from ml_assets.serving.triton import BACKENDS, TritonRepository


class TritonServer(dg.ConfigurableResource):
    """The shared Triton server (explicit model control) that `triton_endpoint` loads tenants'
    Production models into and the Serve replica calls for tenants routed to it."""

    url: str = "http://127.0.0.1:8010"
    backend: str = Field("python", description=f"one of {BACKENDS}: python runs ONNX Runtime "
                         "in Triton's python backend, onnxruntime is Triton's own backend")
    python_env: str | None = Field(
        None, description="the server's virtualenv with onnxruntime (python backend only)")
    timeout_s: float = 120.0

    def repository(self) -> TritonRepository:
        return TritonRepository(self.url, self.timeout_s)
