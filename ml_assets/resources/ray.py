"""Ray: connect to the cluster at RAY_ADDRESS, or start one local Ray per process."""

from __future__ import annotations

import os

import dagster as dg

from ml_assets.tenants import Tenant

# Serve 2.60 settings that bench/serving.py measured on 2 cores (c=16 p95 147 -> 75 ms, c=1 p50
# 9.0 -> 6.4 ms): user code and router on the replica's main loop, request-path logs buffered,
# no log copy to stderr. Read when the cluster starts: set for `ray start` and a local ray.init.
SERVE_LATENCY_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}


class RayCluster(dg.ConfigurableResource):
    """Connects once per process; every asset that needs Ray calls `connect()`."""

    address: str | None = None
    num_cpus: int = 4  # logical CPUs of a local fallback cluster (Data and Train share them)

    def connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            for key, value in SERVE_LATENCY_ENV.items():  # the new cluster's workers inherit
                os.environ.setdefault(key, value)
            ray.init(
                address="local",  # a new cluster, never one that happens to run on this machine
                num_cpus=self.num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )


class ServeEndpoint(dg.ConfigurableResource):
    """Where Ray Serve's HTTP proxy listens."""

    host: str = "127.0.0.1"
    port: int = 8001

    def url(self, tenant: Tenant) -> str:
        return f"http://{self.host}:{self.port}{tenant.route_prefix}/predict"
