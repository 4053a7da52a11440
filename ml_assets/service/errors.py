"""How the ML Service API fails: the service's logger, the error responses its OpenAPI spec
declares, upstream failures as 503s, and the handlers for bad input and unexpected errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger("ml_assets.service")

ERRORS = {code: {"description": text} for code, text in (
    (401, "no API key, or not a valid one"),
    (403, "the key is for another tenant, or its role may not do this"),
    (404, "no such run, model version or use case for this tenant"),
    (429, "rate limit of this API key reached; see Retry-After"),
    (503, "Dagster or MLflow did not answer"),
)}
BODY_ERRORS = {**ERRORS, 400: {"description": "the body could not be read as JSON"}}


@contextmanager
def upstream(system: str) -> Iterator[None]:
    """A failure of MLflow or Dagster is a 503 naming the system, not a 500."""
    try:
        yield
    except HTTPException:
        raise
    except Exception as exc:
        # the detail (queries, server traces) goes to the log, not to the caller
        log.warning("%s call failed: %r", system, exc)
        raise HTTPException(503, f"{system} did not answer") from exc


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 saying where and what is wrong in the input."""
    # where and what, not the input echoed back: it may not even be JSON (Infinity)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A 500 with the request id to find the logged traceback by."""
    request_id = getattr(request.state, "request_id", "-")
    log.error("request %s failed", request_id, exc_info=exc)
    return JSONResponse({"detail": "internal error", "request_id": request_id},
                        status_code=500, headers={"X-Request-ID": request_id})
