"""The Serve application as a KubeRay RayService declares it (`import_path:
ml_assets.serving.builder:app` in deploy/k8s/51-rayservice.yaml): the same ModelService the
deployed_endpoint asset starts, with the feature and object stores the environment names."""

from __future__ import annotations

from typing import Any


def app(args: dict[str, Any]):
    """Ray Serve application builder; takes no arguments, everything is configuration."""
    if args:
        raise ValueError(f"the models app takes no args, got {sorted(args)}: set environment "
                         "variables (ml_assets/settings.py) instead")
    from ml_assets.resources import build_resources
    from ml_assets.serving.app import ModelService
    from ml_assets.settings import load_settings

    resources = build_resources(load_settings())
    # the replicas get plain config, secrets resolved, like the asset's serve.run
    feast = resources["feast"].process_config_and_initialize().model_dump()
    object_store = resources["object_store"].process_config_and_initialize().model_dump()
    return ModelService.bind(feast, object_store, **resources["serve_endpoint"].replica_config())
