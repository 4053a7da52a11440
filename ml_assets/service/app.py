"""The ML Service HTTP API: validate an experiment, apply the caller's tenant, launch its run.
This module builds the app from the routers (`create_app`), tags each request and its log
lines with a request id, and serves it (`serve`)."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from ml_assets.access.keys import KeyStore
from ml_assets.access.rate_limit import RateLimiter
from ml_assets.service.auth import Service
from ml_assets.service.dagster_runs import DagsterRuns
from ml_assets.service.errors import invalid_request, log, unexpected_error
from ml_assets.service.routers import experiments, health, lifecycle, models
from ml_assets.settings import Settings

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record (`%(request_id)s`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


async def request_context(request: Request, call_next):
    """Gives the request an id (the client's X-Request-ID when well formed), returns it in the
    response's X-Request-ID and logs the request with it."""
    request_id = request.headers.get("x-request-id", "")
    if not REQUEST_ID.fullmatch(request_id):
        request_id = uuid.uuid4().hex
    request.state.request_id = request_id
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    try:
        response = await call_next(request)
        response.headers["X-Request-ID"] = request_id
        log.info("request %s: %s %s -> %d in %.1f ms (key %s)", request_id,
                 request.method, request.url.path, response.status_code,
                 (time.perf_counter() - started) * 1000, getattr(request.state, "key_id", "-"))
        return response
    finally:
        request_id_var.reset(token)


def create_app(settings: Settings, rate_limit_per_minute: int | None = None) -> FastAPI:
    """The API for the settings' state folder, Dagster webserver and MLflow."""
    from ml_assets.resources import build_resources

    resources = build_resources(settings)
    app = FastAPI(
        title="ml_assets ML Service",
        version="1",
        description="Launch churn-model experiments as Dagster runs, read their status and "
        "metrics, and promote or roll back model versions, one tenant per API key.",
    )
    app.state.service = Service(
        settings=settings,
        keys=KeyStore(settings.api_keys_path),
        limiter=RateLimiter(rate_limit_per_minute or settings.api_rate_limit_per_minute),
        runs=DagsterRuns(settings.dagster_url),
        mlflow=resources["mlflow"],
        events=resources["events"],
    )
    for routes in (health, experiments, models, lifecycle):
        app.include_router(routes.router)
    app.middleware("http")(request_context)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, unexpected_error)
    return app


def serve(settings: Settings) -> None:
    """Run the API with uvicorn on the settings' host and port (one process: the in-process
    idempotency guard and rate limits assume it)."""
    import uvicorn

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port,
                access_log=False)  # the request-context middleware logs each request with its id
