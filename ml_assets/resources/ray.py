"""Ray: connect to the cluster at RAY_ADDRESS, or start one local Ray per process."""

from __future__ import annotations

import threading

import dagster as dg

from ml_assets.settings import DEFAULT_MANY_MODELS_MAX_ROWS
from ml_assets.tenants import Tenant

_CONNECTING = threading.Lock()


class RayCluster(dg.ConfigurableResource):
    """Connects once per process; every asset that needs Ray calls `connect()`."""

    address: str | None = None
    num_cpus: int = 4  # logical CPUs of a local fallback cluster (Data and Train share them)
    # a model whose training split is at most this many rows trains in one Ray task, not Ray
    # Train (ml_assets/training/many_models.py; ML_ASSETS_MANY_MODELS_MAX_ROWS)
    task_max_rows: int = DEFAULT_MANY_MODELS_MAX_ROWS

    def connect(self) -> None:
        import ray

        with _CONNECTING:  # a run over many tenants trains them from threads
            if ray.is_initialized():
                return
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(
                    address="local",  # a new cluster, never one already on this machine
                    num_cpus=self.num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )


class ServeEndpoint(dg.ConfigurableResource):
    """Where Ray Serve's HTTP proxy listens, and whether the app's replica serves HTTP itself
    (Serve's direct ingress) on a port from [direct_port_min, direct_port_max]."""

    host: str = "127.0.0.1"
    port: int = 8001
    direct_ingress: bool = True
    direct_port_min: int = 30000
    direct_port_max: int = 31000
    api_keys_path: str = ".ml_assets/api_keys.db"  # the key store callers' keys are checked in
    predict_rate_limit_per_minute: int = 600_000  # per key, per replica
    models_per_replica: int = 256  # loaded models a replica keeps, least recently used out
    model_cache_mb: float | None = 1024.0  # and their measured MB at most (None: unbounded)

    def replica_config(self) -> dict:
        """What the Serve app's replica needs besides the stores: the keys it checks, the bounds
        of its model cache."""
        return {"keys_path": self.api_keys_path,
                "rate_limit_per_minute": self.predict_rate_limit_per_minute,
                "models_per_replica": self.models_per_replica,
                "model_cache_mb": self.model_cache_mb}

    def url(self, tenant: Tenant, port: int | None = None, staging: bool = False) -> str:
        """The predict URL of the tenant's use case (its pre-production route with `staging`)
        at the proxy, or at the replica's own `port`."""
        path = "staging/predict" if staging else "predict"
        return (f"http://{self.host}:{port or self.port}{tenant.route_prefix}/"
                f"{tenant.use_case}/{path}")

    def controller_env(self) -> dict[str, str]:
        """Env of the Serve controller this project starts; the proxy and replicas it starts
        inherit it. Serve 2.60 reads these once per process (ray/serve/_private/constants.py)."""
        if not self.direct_ingress:
            return {}
        return {
            "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(self.direct_port_min),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(self.direct_port_max),
            # both serve an external load balancer (deregistration window, stale backends);
            # with none in front they only hold a stopping replica's port and slow shutdown
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
            "RAY_SERVE_PORT_QUARANTINE_S": "0",
            # with the proxy hop gone, the hop from the replica's loop to the user-code thread
            # shows: on its main loop p99 at concurrency 16 fell 108-175 -> 45-69 ms in three
            # same-run comparisons (bench/serving.py); the handler blocks nothing (model loads
            # and online-feature reads run in threads)
            "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
            "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
        }
