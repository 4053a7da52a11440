"""A Dagster run in its own process against the Ray cluster at RAY_ADDRESS (one ray.init per
process: the test session's local Ray lives in the pytest process). Started by
test_remote_ray.py; prints what ran where as one JSON line."""

from __future__ import annotations

import json
import sys

import dagster as dg

from ml_assets.data import churn_data
from ml_assets.resources import build_resources
from ml_assets.settings import load_settings
from ml_assets_tests.conftest import materialize, run_config


def main(tenant: str, home: str) -> None:
    import ray

    settings = load_settings()
    churn_data.write(tenant, churn_data.ChurnDataSpec(customers=500), settings.raw_data_dir)
    resources = build_resources(settings)
    with dg.instance_for_test(temp_dir=home) as instance:
        instance.add_dynamic_partitions("tenant", [tenant])
        result = materialize(instance, resources, tenant,
                             selection=["training_features", "hyperparameter_search",
                                        "trained_model"],
                             config=run_config(epochs=2))
    report = {
        "ray_address": settings.ray_address,
        "gcs_address": ray.get_runtime_context().gcs_address,
        "cluster_cpus": ray.cluster_resources().get("CPU"),
        "feature_rows": len(result.output_for_node("churn__training_features")),
        "trained_model": result.output_for_node("churn__trained_model"),
    }
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
