"""The one place that reads environment variables: where state lives and where servers are.

Every value has an embedded default under a project-local state folder, so `make demo` needs no
server; pointing a variable at a real server changes configuration only, never code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANY_MODELS_MAX_ROWS = 200_000


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    ray_address: str | None
    ray_num_cpus: int
    mlflow_tracking_uri: str
    mlflow_artifact_root: str | None
    s3_endpoint: str | None
    s3_bucket: str
    kafka_bootstrap: str | None
    feast_redis: str | None
    serve_host: str
    serve_port: int
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_rate_limit_per_minute: int = 120
    predict_rate_limit_per_minute: int = 600_000  # per key at the Serve replica: 10,000/s
    dagster_url: str = "http://127.0.0.1:3000"  # the webserver: GraphQL API and UI
    mlflow_ui_url: str | None = None
    executor: str = "multiprocess"  # or "k8s": every step its own Kubernetes Job (deploy/)
    serve_ray_address: str | None = None  # the Serve cluster when it is not RAY_ADDRESS's
    feast_registry: str | None = None  # SQLAlchemy URL of a shared Feast registry
    # Serve's direct ingress: the app's replica answers HTTP on its own port from this range,
    # skipping the proxy -> replica hop (c=1 p50 8.8 -> 1.1 ms in one run, bench/serving.py)
    serve_direct_ingress: bool = True
    serve_direct_ports: tuple[int, int] = (30000, 31000)
    # the Serve replica's loaded models, least recently used out beyond either bound: how many,
    # and how many MB of them (torch parameters and buffers, boosters' serialized size; None:
    # no memory bound). 256: a hundred tenants' Production and Staging versions; a churn MLP
    # cost ~190 KB of replica memory, and a cache smaller than the live models turned c=16 p95
    # from 14-21 to 418-570 ms at 100 tenants (most requests a reload: bench/serving_tenants.py)
    serve_models_per_replica: int = 256
    serve_model_cache_mb: float | None = 1024.0
    # the key store callers' keys are checked in: one per Serve app, so one per cluster
    api_keys_file: Path | None = None
    # alert receivers: the platform's Alertmanager and default webhook; tenants' own in a file
    alertmanager_url: str | None = None
    alert_webhook_url: str | None = None
    alert_receivers_file: Path | None = None
    # SQLAlchemy URL of the consumers' sinks (audit, catalog, notifications); None: sqlite
    platform_db: str | None = None
    # days of prediction log kept per tenant; older day partitions are deleted by compaction
    log_retention_days: int = 30
    # Triton: the shared server's HTTP URL, the backend that runs the ONNX model (python:
    # the server nvidia-pytriton bundles; onnxruntime: NVIDIA's image) and, for python, the
    # server's virtualenv with onnxruntime
    triton_url: str = "http://127.0.0.1:8010"
    triton_backend: str = "python"
    triton_python_env: str | None = None
    # the LLM gateway in front of the tenants' vLLM servers; vLLM runs in its own virtualenv
    llm_host: str = "127.0.0.1"
    llm_port: int = 8002
    vllm_python: Path = PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
    # a model with at most this many training (split == "train") rows, one worker and no GPU
    # trains in one Ray task (training.many_models) instead of a Ray Train fit; 0: every model
    # through Ray Train. 200,000: there the task's 8 default epochs on one core take 11.5 s,
    # what a Ray Train fit costs beyond its training passes (11-20 s); below it the task wins
    # by that fixed cost (bench/many_models.py, 2 cores: 100k rows 5.6 s vs 17.3 s, 200k 16.8
    # vs 31.4)
    many_models_max_rows: int = DEFAULT_MANY_MODELS_MAX_ROWS

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster"

    @property
    def raw_data_dir(self) -> Path:
        return self.state_dir / "raw"

    @property
    def feast_dir(self) -> Path:
        return self.state_dir / "feast"

    @property
    def objects_dir(self) -> Path:
        return self.state_dir / "objects"

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.db"

    @property
    def tenants_file(self) -> Path:
        return self.state_dir / "tenants.txt"

    @property
    def ray_address_file(self) -> Path:
        return self.state_dir / "ray" / "address"

    @property
    def io_dir(self) -> Path:
        return self.state_dir / "io"

    @property
    def api_keys_path(self) -> Path:
        return self.api_keys_file or self.state_dir / "api_keys.db"

    @property
    def llm_dir(self) -> Path:
        return self.state_dir / "llm"

    @property
    def alert_receivers_path(self) -> Path:
        return self.alert_receivers_file or self.state_dir / "alert_receivers.json"

    @property
    def platform_db_url(self) -> str:
        return self.platform_db or f"sqlite:///{self.state_dir / 'platform.db'}"


def _local_head_address(state_dir: Path) -> str | None:
    """The address of the Ray head `ml-assets ray up` started for this state folder, if any."""
    path = state_dir / "ray" / "address"
    return path.read_text().strip() or None if path.exists() else None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from the environment (or the mapping given), with embedded defaults."""
    env = os.environ if environ is None else environ
    state_dir = Path(env.get("ML_ASSETS_STATE_DIR", PROJECT_ROOT / ".ml_assets")).resolve()
    mlflow_dir = state_dir / "mlflow"
    tracking_uri = env.get("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}")
    return Settings(
        state_dir=state_dir,
        ray_address=env.get("RAY_ADDRESS") or _local_head_address(state_dir),
        ray_num_cpus=int(env.get("ML_ASSETS_RAY_NUM_CPUS", "4")),
        mlflow_tracking_uri=tracking_uri,
        # embedded: artifacts next to the sqlite store; a server decides its own artifact root
        mlflow_artifact_root=env.get("ML_ASSETS_MLFLOW_ARTIFACT_ROOT")
        or ((mlflow_dir / "artifacts").as_uri() if tracking_uri.startswith("sqlite") else None),
        s3_endpoint=env.get("ML_ASSETS_S3_ENDPOINT") or None,
        s3_bucket=env.get("ML_ASSETS_S3_BUCKET", "ml-assets"),
        kafka_bootstrap=env.get("ML_ASSETS_KAFKA_BOOTSTRAP") or None,
        feast_redis=env.get("ML_ASSETS_FEAST_REDIS") or None,  # e.g. 127.0.0.1:6379,db=0
        serve_host=env.get("ML_ASSETS_SERVE_HOST", "127.0.0.1"),
        serve_port=int(env.get("ML_ASSETS_SERVE_PORT", "8001")),
        api_host=env.get("ML_ASSETS_API_HOST", "127.0.0.1"),
        api_port=int(env.get("ML_ASSETS_API_PORT", "8000")),
        api_rate_limit_per_minute=int(env.get("ML_ASSETS_API_RATE_LIMIT", "120")),
        predict_rate_limit_per_minute=int(env.get("ML_ASSETS_PREDICT_RATE_LIMIT", "600000")),
        api_keys_file=Path(env["ML_ASSETS_API_KEYS"]) if env.get("ML_ASSETS_API_KEYS") else None,
        alertmanager_url=env.get("ML_ASSETS_ALERTMANAGER_URL") or None,
        alert_webhook_url=env.get("ML_ASSETS_ALERT_WEBHOOK_URL") or None,
        alert_receivers_file=Path(env["ML_ASSETS_ALERT_RECEIVERS"])
        if env.get("ML_ASSETS_ALERT_RECEIVERS") else None,
        llm_host=env.get("ML_ASSETS_LLM_HOST", "127.0.0.1"),
        llm_port=int(env.get("ML_ASSETS_LLM_PORT", "8002")),
        vllm_python=Path(env.get("ML_ASSETS_VLLM_PYTHON",
                                 PROJECT_ROOT / ".venv-vllm" / "bin" / "python")),
        dagster_url=env.get("ML_ASSETS_DAGSTER_URL", "http://127.0.0.1:3000").rstrip("/"),
        # links in API answers; an MLflow server's own URL is its UI
        mlflow_ui_url=env.get("ML_ASSETS_MLFLOW_UI_URL")
        or (tracking_uri if tracking_uri.startswith("http") else None),
        executor=_executor(env.get("ML_ASSETS_EXECUTOR", "multiprocess")),
        serve_ray_address=env.get("ML_ASSETS_SERVE_RAY_ADDRESS") or None,
        feast_registry=env.get("ML_ASSETS_FEAST_REGISTRY") or None,
        serve_direct_ingress=env.get("ML_ASSETS_SERVE_DIRECT_INGRESS", "1") == "1",
        serve_direct_ports=_port_range(env.get("ML_ASSETS_SERVE_DIRECT_PORTS", "30000-31000")),
        serve_models_per_replica=_positive_int(
            "ML_ASSETS_SERVE_MODELS_PER_REPLICA",
            env.get("ML_ASSETS_SERVE_MODELS_PER_REPLICA", "256")),
        serve_model_cache_mb=_cache_mb(env.get("ML_ASSETS_SERVE_MODEL_CACHE_MB", "1024")),
        platform_db=env.get("ML_ASSETS_PLATFORM_DB") or None,
        log_retention_days=_retention_days(env.get("ML_ASSETS_LOG_RETENTION_DAYS", "30")),
        triton_url=env.get("ML_ASSETS_TRITON_URL", "http://127.0.0.1:8010").rstrip("/"),
        triton_backend=_choice("ML_ASSETS_TRITON_BACKEND",
                               env.get("ML_ASSETS_TRITON_BACKEND", "python"), TRITON_BACKENDS),
        triton_python_env=env.get("ML_ASSETS_TRITON_PYTHON_ENV")
        or str(PROJECT_ROOT / TRITON_VENV),
        many_models_max_rows=_whole_number(
            "ML_ASSETS_MANY_MODELS_MAX_ROWS",
            env.get("ML_ASSETS_MANY_MODELS_MAX_ROWS", str(DEFAULT_MANY_MODELS_MAX_ROWS))),
    )


def _retention_days(text: str) -> int:
    days = int(text) if text.strip().isdigit() else 0
    if days < 1:
        raise ValueError(f"ML_ASSETS_LOG_RETENTION_DAYS={text!r}: want whole days, at least 1")
    return days


def _whole_number(variable: str, text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{variable}={text!r}: want a whole number, at least 0")
    return int(text)


def _positive_int(variable: str, text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise ValueError(f"{variable}={text!r}: want a whole number, at least 1")
    return value


def _cache_mb(text: str) -> float | None:
    if text.strip().lower() in ("", "none"):
        return None
    try:
        mb = float(text)
    except ValueError:
        mb = 0.0
    if not 0 < mb < float("inf"):
        raise ValueError(f"ML_ASSETS_SERVE_MODEL_CACHE_MB={text!r}: want megabytes above 0 "
                         "(e.g. 1024), or 'none' for no memory bound")
    return mb


def _port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        ports = int(low), int(high or low)
    except ValueError:
        ports = (0, 0)
    if not 0 < ports[0] <= ports[1] < 65536:
        raise ValueError(f"ML_ASSETS_SERVE_DIRECT_PORTS={text!r}: want LOW-HIGH, e.g. 30000-31000")
    return ports


EXECUTORS = ("multiprocess", "k8s")
TRITON_BACKENDS = ("python", "onnxruntime")  # ml_assets.serving.triton.BACKENDS
TRITON_VENV = ".venv-triton"  # made by the Makefile: nvidia-pytriton's server, onnxruntime


def _choice(variable: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{variable}={value!r}: must be one of {', '.join(allowed)}")
    return value


def _executor(name: str) -> str:
    return _choice("ML_ASSETS_EXECUTOR", name, EXECUTORS)
