"""Liveness and readiness probes: the process answers, and Dagster and MLflow answer it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ml_assets.service.auth import Service, service
from ml_assets.service.errors import log
from ml_assets.service.schemas import Readiness

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], response_model=Readiness,
            responses={503: {"model": Readiness, "description": "a dependency is down"}})
def readyz(svc: Annotated[Service, Depends(service)]) -> JSONResponse:
    """Dagster's webserver and MLflow answer."""
    checks: dict[str, str] = {}
    for system, check in (("dagster", svc.runs.ready),
                          ("mlflow", lambda: _mlflow_ready(svc.mlflow.tracking_uri))):
        try:
            check()
            checks[system] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness: %s unavailable: %r", system, exc)  # details: log only
            checks[system] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(Readiness(ready=ready, checks=checks).model_dump(),
                        status_code=200 if ready else 503)


def _mlflow_ready(tracking_uri: str) -> None:
    if tracking_uri.startswith("http"):
        import urllib.request

        # the client's own calls retry for minutes against a dead server: ask /health once
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=3).read()
    else:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri).search_experiments(max_results=1)
