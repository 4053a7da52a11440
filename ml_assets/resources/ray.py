"""Ray: connect to the cluster at RAY_ADDRESS, or start one local Ray per process."""

from __future__ import annotations

import dagster as dg

from ml_assets.tenants import Tenant


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
