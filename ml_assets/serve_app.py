"""The Ray Serve deployment answering one tenant's predictions over HTTP.

Imported only by the serving asset: ray.serve and mlflow are slow to import.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from ml_assets.churn_data import FEATURES

MAX_ROWS = 1024
VERSION_HEADER = "x-model-version"


def validate_rows(body: Any) -> list[list[float]]:
    """Feature rows from a request body {"rows": [{feature: number|null, ...}, ...]}."""
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list) or not body["rows"]:
        raise ValueError('body must be {"rows": [{feature: value, ...}, ...]} with >= 1 row')
    rows = body["rows"]
    if len(rows) > MAX_ROWS:
        raise OverflowError(f"{len(rows)} rows in one request; at most {MAX_ROWS}")
    matrix = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"rows[{i}] must be an object of feature values")
        missing, unknown = set(FEATURES) - row.keys(), row.keys() - set(FEATURES)
        if missing or unknown:
            raise ValueError(f"rows[{i}]: missing features {sorted(missing)}, "
                             f"unknown features {sorted(unknown)}")
        values = []
        for name in FEATURES:
            value = row[name]
            if value is None:
                values.append(math.nan)  # imputed by the model, like a missing feature row
            elif isinstance(value, int | float) and not isinstance(value, bool):
                values.append(float(value))
            else:
                raise ValueError(f"rows[{i}].{name} must be a number or null, got {value!r}")
        matrix.append(values)
    return matrix


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class ChurnPredictor:
    """Loads one registered model version and scores feature rows."""

    def __init__(self, tenant: str, model_uri: str, version: str, tracking_uri: str) -> None:
        import mlflow
        import mlflow.pytorch

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.tenant, self.version = tenant, version
        self.model = mlflow.pytorch.load_model(model_uri).eval()

    async def __call__(self, request: Request) -> JSONResponse:
        headers = {VERSION_HEADER: self.version}
        if request.method != "POST" or not request.url.path.rstrip("/").endswith("/predict"):
            return JSONResponse({"error": "POST /v1/{tenant}/predict"}, 404, headers=headers)
        try:
            rows = validate_rows(await request.json())
        except OverflowError as exc:
            return JSONResponse({"error": str(exc)}, 413, headers=headers)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 422, headers=headers)
        with torch.no_grad():
            p = self.model(torch.tensor(rows, dtype=torch.float32)).tolist()
        return JSONResponse(
            {"tenant": self.tenant, "model_version": self.version, "predictions": p},
            headers=headers,
        )
