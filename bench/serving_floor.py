"""The floor for bench/serving: the same model, request checks and JSON answer in one bare
uvicorn + Starlette process, no Ray. With FLOOR_SECURED=1 it also does what the Serve replica
adds around them: the caller's key checked in the key store (KEYS_PATH), the per-key rate
limit, and every request appended to the prediction log (flushed to parquet every 2 s, off the
request path), so the two variants in one run price those mechanisms.

    MODEL_URI=models:/t-churn/1 MLFLOW_TRACKING_URI=... uvicorn bench.serving_floor:app
"""

import asyncio
import contextlib
import os
import time

import mlflow.pytorch
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ml_assets.access.guard import AccessDenied, authorize
from ml_assets.access.keys import REPLICA_CACHE_S, KeyStore, Role
from ml_assets.access.rate_limit import RateLimiter
from ml_assets.data.object_store import ObjectStoreClient
from ml_assets.serving import prediction_log
from ml_assets.serving.request import (
    RequestError,
    decode_json,
    parse_body,
    predict_target,
    validate_rows,
)
from ml_assets.use_case import load

model = mlflow.pytorch.load_model(os.environ["MODEL_URI"]).eval()
VERSION = os.environ["MODEL_URI"].rsplit("/", 1)[-1]
SECURED = os.environ.get("FLOOR_SECURED") == "1"
keys = KeyStore(os.environ["KEYS_PATH"], cache_s=REPLICA_CACHE_S) if SECURED else None
limiter = RateLimiter(600_000)
store = ObjectStoreClient(root=os.environ.get("OBJECTS_DIR", "/tmp/floor-objects"))
buffer: dict[str, prediction_log.LogBuffer] = {}
USE_CASE = load("churn")


def log(tenant: str, status: int, started: float, matrix: list, predictions: list) -> None:
    """What the replica's _log does."""
    if tenant not in buffer:
        buffer[tenant] = prediction_log.LogBuffer(tenant, USE_CASE)
    buffer[tenant].add(VERSION, "production", status, (time.perf_counter() - started) * 1000,
                       [None], matrix, predictions)


async def predict(request: Request) -> JSONResponse:
    started = time.perf_counter()
    try:
        tenant = predict_target(request.url.path)[0]
        if SECURED:
            authorize(keys, limiter, request.headers.get("authorization"), tenant, Role.predict)
        _, rows, _ = parse_body(decode_json(await request.body()))
        matrix = validate_rows(rows, USE_CASE.features)
    except (RequestError, AccessDenied) as exc:
        return JSONResponse({"error": str(exc)}, exc.status)
    with torch.no_grad():
        predictions = model(torch.tensor(matrix, dtype=torch.float32)).tolist()
    response = JSONResponse({"tenant": tenant, "model_version": VERSION,
                             "predictions": predictions}, headers={"x-model-version": VERSION})
    if SECURED:
        log(tenant, 200, started, matrix, predictions)
    return response


async def flush_every_2s() -> None:
    while True:
        await asyncio.sleep(2)
        taken = list(buffer.values())
        buffer.clear()
        for tenant_rows in taken:
            await asyncio.to_thread(prediction_log.write_buffer, store, tenant_rows)


@contextlib.asynccontextmanager
async def lifespan(_: Starlette):
    flusher = asyncio.create_task(flush_every_2s()) if SECURED else None
    yield
    if flusher:
        flusher.cancel()


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/v1/{tenant}/churn/predict", predict, methods=["POST"]),
                        Route("/healthz", healthz)], lifespan=lifespan)
