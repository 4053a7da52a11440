"""The Production model as a Triton Inference Server model repository (ONNX, dynamic batching)."""

import dagster as dg

from ml_assets import names
from ml_assets.defs.scope import tenant_of, use_case_asset, use_case_of
from ml_assets.registry.actions import production_version
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.resources.object_store import ObjectStore
from ml_assets.serving.triton import INPUT, MAX_BATCH, OUTPUT, export_onnx
from ml_assets.use_case import UseCase


def exportable_or_raise(client, tenant, version: str) -> None:
    """Triton gets a version as ONNX exported from torch: a boosted-tree version is refused,
    naming its family, before anything is exported or loaded."""
    from ml_assets.registry import stages
    from ml_assets.serving.models import family_of

    family = family_of(stages.model_version(client, tenant, version).tags)
    if family != "torch_mlp":
        raise stages.StageTransitionError(
            f"Triton serves torch_mlp versions (as ONNX); version {version} of "
            f"{tenant.registered_model_name} is {family}: its route stays on the Serve replica")


def triton_config(model_name: str, features: int) -> str:
    """config.pbtxt: ONNX Runtime backend, dynamic batching; no instance_group, so Triton
    places it on the GPU when there is one and on the CPU otherwise."""
    return f"""name: "{model_name}"
platform: "onnxruntime_onnx"
max_batch_size: {MAX_BATCH}
input [ {{ name: "{INPUT}" data_type: TYPE_FP32 dims: [ {features} ] }} ]
output [ {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ 1 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 500 }}
"""


def triton_model_repository(
    context: dg.AssetExecutionContext,
    mlflow: MlflowRegistry,
    object_store: ObjectStore,
) -> dg.Output[dict]:
    """The tenant's Production model exported to ONNX with a Triton `config.pbtxt` (dynamic
    batching), laid out as a Triton model repository under the tenant's object-store prefix:
    point `tritonserver --model-repository` at it for GPU-optimized serving."""
    from mlflow import pytorch as mlflow_pytorch  # `import mlflow.x` would rebind `mlflow`

    tenant = tenant_of(context)
    features = len(use_case_of(context).features)
    version = production_version(mlflow.client(), tenant)
    exportable_or_raise(mlflow.client(), tenant, version)
    object_store.check()
    model = mlflow_pytorch.load_model(f"models:/{tenant.registered_model_name}/{version}").eval()
    name = tenant.registered_model_name
    onnx_key = f"triton/{name}/{version}/model.onnx"
    object_store.put_bytes(tenant, onnx_key, export_onnx(model, features))
    config = triton_config(name, features)
    object_store.put_bytes(tenant, f"triton/{name}/config.pbtxt", config.encode())
    repository = object_store.uri(tenant, "triton")
    return dg.Output(
        {"repository": repository, "model_name": name, "version": version,
         "onnx_key": onnx_key},
        metadata={"repository": repository, "version": version,
                  "config": dg.MetadataValue.md(f"```\n{triton_config(name, features)}```")},
    )


def build(use_case: UseCase) -> list[dg.AssetsDefinition]:
    return [use_case_asset(use_case, triton_model_repository, names.TRITON_MODEL_REPOSITORY,
                           "serving", {"pytorch", "onnx", "s3"},
                           deps=(names.REGISTERED_MODEL,))]  # exports its Production version
