"""One ConfigurableResource per external system, and the choice of them per environment."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ml_assets.resources.alerts import AlertReceivers
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.feast import FeastStore
from ml_assets.resources.io import TenantFilesystemIOManager
from ml_assets.resources.llm import LlmServing
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.monitoring import MonitoringPolicy
from ml_assets.resources.object_store import ObjectStore
from ml_assets.resources.prediction_log import PredictionLogPolicy
from ml_assets.resources.ray import RayCluster, ServeEndpoint
from ml_assets.resources.retrain import RetrainPolicy
from ml_assets.resources.rollout import RolloutPolicy
from ml_assets.resources.triton import TritonServer
from ml_assets.settings import Settings


def build_resources(settings: Settings) -> dict[str, Any]:
    """Resources for the settings: embedded defaults, or the servers the settings name."""
    object_store = ObjectStore(root=str(settings.objects_dir))
    if settings.s3_endpoint:
        object_store = ObjectStore(
            root=str(settings.objects_dir),
            endpoint=settings.s3_endpoint,
            bucket=settings.s3_bucket,
            access_key=dg.EnvVar("ML_ASSETS_S3_ACCESS_KEY"),
            secret_key=dg.EnvVar("ML_ASSETS_S3_SECRET_KEY"),
        )
    return {
        "feast": FeastStore(root_dir=str(settings.feast_dir),
                            raw_data_dir=str(settings.raw_data_dir),
                            # may carry a password, like the registry URL
                            redis_url=dg.EnvVar("ML_ASSETS_FEAST_REDIS")
                            if settings.feast_redis else None,
                            # a URL with the database password: resolved at launch, hidden in the UI
                            registry_url=dg.EnvVar("ML_ASSETS_FEAST_REGISTRY")
                            if settings.feast_registry else None),
        "ray": RayCluster(address=settings.ray_address, num_cpus=settings.ray_num_cpus,
                          task_max_rows=settings.many_models_max_rows),
        "llm": LlmServing(vllm_python=str(settings.vllm_python), state_dir=str(settings.llm_dir),
                          gateway_host=settings.llm_host, gateway_port=settings.llm_port,
                          api_keys_path=str(settings.api_keys_path),
                          rate_limit_per_minute=settings.predict_rate_limit_per_minute),
        "mlflow": MlflowRegistry(tracking_uri=settings.mlflow_tracking_uri,
                                 artifact_root=settings.mlflow_artifact_root,
                                 ui_url=settings.mlflow_ui_url),
        "object_store": object_store,
        "events": LifecycleEvents(outbox_path=str(settings.outbox_path),
                                  kafka_bootstrap=settings.kafka_bootstrap),
        "retrain_policy": RetrainPolicy(),
        "monitoring_policy": MonitoringPolicy(),
        "rollout_policy": RolloutPolicy(),
        "prediction_log_policy": PredictionLogPolicy(retention_days=settings.log_retention_days),
        "serve_endpoint": ServeEndpoint(host=settings.serve_host, port=settings.serve_port,
                                        direct_ingress=settings.serve_direct_ingress,
                                        direct_port_min=settings.serve_direct_ports[0],
                                        direct_port_max=settings.serve_direct_ports[1],
                                        api_keys_path=str(settings.api_keys_path),
                                        predict_rate_limit_per_minute=(
                                            settings.predict_rate_limit_per_minute),
                                        models_per_replica=settings.serve_models_per_replica,
                                        model_cache_mb=settings.serve_model_cache_mb),
        "alert_receivers": AlertReceivers(alertmanager_url=settings.alertmanager_url,
                                          webhook_url=settings.alert_webhook_url,
                                          receivers_file=str(settings.alert_receivers_path),
                                          dagster_url=settings.dagster_url,
                                          mlflow_ui_url=settings.mlflow_ui_url),
        "triton": TritonServer(url=settings.triton_url, backend=settings.triton_backend,
                               python_env=settings.triton_python_env
                               if settings.triton_backend == "python" else None),
        "io_manager": TenantFilesystemIOManager(base_dir=str(settings.io_dir)),
    }


def bootstrap(resources: dict[str, Any]) -> None:
    """What a new deployment needs before the first run: the bucket, the events topic."""
    resources["object_store"].process_config_and_initialize().ensure_bucket()
    events = resources["events"]
    if events.kafka_bootstrap:
        from ml_assets.events import ensure_topic

        ensure_topic(events.kafka_bootstrap, events.topic)
