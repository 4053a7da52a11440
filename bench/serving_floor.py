"""The floor for bench/serving: the same model, request checks and JSON answer in one bare
uvicorn + Starlette process, no Ray.

    MODEL_URI=models:/t-churn/1 MLFLOW_TRACKING_URI=... uvicorn bench.serving_floor:app
"""

import os

import mlflow.pytorch
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ml_assets.serving.request import (
    RequestError,
    decode_json,
    parse_body,
    tenant_of,
    validate_rows,
)

model = mlflow.pytorch.load_model(os.environ["MODEL_URI"]).eval()
VERSION = os.environ["MODEL_URI"].rsplit("/", 1)[-1]


async def predict(request: Request) -> JSONResponse:
    try:
        tenant = tenant_of(request.url.path)
        _, rows = parse_body(decode_json(await request.body()))
        matrix = validate_rows(rows)
    except RequestError as exc:
        return JSONResponse({"error": str(exc)}, exc.status)
    with torch.no_grad():
        predictions = model(torch.tensor(matrix, dtype=torch.float32)).tolist()
    return JSONResponse({"tenant": tenant, "model_version": VERSION, "predictions": predictions},
                        headers={"x-model-version": VERSION})


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/v1/{tenant}/predict", predict, methods=["POST"]),
                        Route("/healthz", healthz)])
