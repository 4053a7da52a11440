"""The ML Service HTTP API: validate an experiment, apply the caller's tenant, launch its run.

Every tenant path checks the API key first (401), then that the key is the path's tenant and
its role is high enough (403), then the input (422). Runs and models of another tenant are not
addressable: a run id or version that is not the path tenant's answers 404.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from ml_assets.defs.training.config import ExperimentConfig
from ml_assets.resources.events import LifecycleEvents
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.service.dagster_runs import DagsterRuns, IdempotencyConflict, Run
from ml_assets.service.keys import ApiKey, KeyStore, Role
from ml_assets.service.rate_limit import RateLimiter
from ml_assets.settings import Settings
from ml_assets.tenants import Tenant

log = logging.getLogger("ml_assets.service")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
VERSION = r"^[1-9][0-9]{0,9}$"
LINEAGE_TAGS = ("run_id", "data_version", "code_version", "dagster_run_id", "baseline",
                "holdout_roc_auc")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record (`%(request_id)s`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


# --- request and response bodies ---------------------------------------------------------

def _declare_layer_check(schema: dict[str, Any]) -> None:
    # ExperimentConfig checks the layer sizes in a validator, which the generated JSON schema
    # cannot see: say it in the spec so clients (and the fuzzer) know.
    schema["properties"]["hidden_sizes"].update(
        minItems=1, items={"type": "integer", "minimum": 1})


def _takes_ints(annotation: Any) -> bool:
    return annotation is int or any(_takes_ints(arg) for arg in get_args(annotation))


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return [_integral(item) for item in value] if isinstance(value, list) else value


class ExperimentRequest(ExperimentConfig):
    """The `trained_model` config the assets take: same fields, same checks. Unknown fields,
    non-finite numbers and values of the wrong JSON type (`true` or `"3"` for an int) are
    refused here, not coerced into a run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True,
                              json_schema_extra=_declare_layer_check)
    # chaos testing makes a worker raise: for the test suite, never for a client of the API
    fault_injection_epoch: None = Field(None, description="not settable through the API")

    @model_validator(mode="before")
    @classmethod
    def _integral_floats_are_ints(cls, data: Any) -> Any:
        # JSON Schema counts 3.0 as an integer; strict mode alone would refuse it
        if not isinstance(data, dict):
            return data
        ints = {name for name, field in cls.model_fields.items()
                if _takes_ints(field.annotation)}
        return {key: _integral(value) if key in ints else value for key, value in data.items()}


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(min_length=3, max_length=500, description="recorded in the ledger")


class Links(BaseModel):
    dagster_run: str
    mlflow_experiment: str | None = Field(description="None when MLflow has no web UI here")


class ExperimentLaunched(BaseModel):
    tenant: str
    run_id: str
    status: str
    replayed: bool = Field(description="an earlier request with this Idempotency-Key made it")
    mlflow_experiment_id: str
    links: Links


class MlflowRunInfo(BaseModel):
    run_id: str
    status: str
    metrics: dict[str, float]
    params: dict[str, str]


class RunStatus(BaseModel):
    tenant: str
    run_id: str
    job: str
    status: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    experiment_config: dict[str, Any] | None
    mlflow: MlflowRunInfo | None
    links: Links


class ModelVersionInfo(BaseModel):
    name: str
    version: str
    stage: str
    aliases: list[str]
    created_at: datetime
    metrics: dict[str, float]
    lineage: dict[str, str]


class ProductionSpellInfo(BaseModel):
    version: str
    since: datetime
    until: datetime | None
    promoted_by: str
    reason: str


class PromotionHistory(BaseModel):
    tenant: str
    spells: list[ProductionSpellInfo]
    at: datetime | None = None
    production_at: str | None = Field(None, description="the Production version at `at`")


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]


ERRORS = {code: {"description": text} for code, text in (
    (401, "no API key, or not a valid one"),
    (403, "the key is for another tenant, or its role may not do this"),
    (404, "no such run or model version for this tenant"),
    (429, "rate limit of this API key reached; see Retry-After"),
    (503, "Dagster or MLflow did not answer"),
)}
BODY_ERRORS = {**ERRORS, 400: {"description": "the body could not be read as JSON"}}


# --- the service and its access checks --------------------------------------------------

@dataclass
class Service:
    """What the routes share: settings, keys, the limiter and the systems they talk to."""

    settings: Settings
    keys: KeyStore
    limiter: RateLimiter
    runs: DagsterRuns
    mlflow: MlflowRegistry
    events: LifecycleEvents

    def experiment_link(self, experiment_id: str | None) -> str | None:
        if self.settings.mlflow_ui_url is None or experiment_id is None:
            return None
        return f"{self.settings.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}"


def service(request: Request) -> Service:
    return request.app.state.service


bearer = HTTPBearer(auto_error=False, description="an API key from `ml-assets api-key create`")


def api_key(request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
            svc: Annotated[Service, Depends(service)]) -> ApiKey:
    key = svc.keys.verify(credentials.credentials) if credentials else None
    if key is None:
        raise HTTPException(401, "missing or invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.key_id = key.id
    wait = svc.limiter.acquire(key.id)
    if wait:
        raise HTTPException(429, "rate limit reached for this API key",
                            headers={"Retry-After": str(math.ceil(wait))})
    return key


@dataclass(frozen=True)
class Caller:
    key: ApiKey
    tenant: Tenant


def access(role: Role):
    """A dependency: the caller's key is the path tenant's and has at least `role`."""

    def check(tenant: Annotated[str, Path(description="the tenant key")],
              key: Annotated[ApiKey, Depends(api_key)]) -> Caller:
        # compared before any use of the path value: it is only ever the key's own tenant
        if tenant != key.tenant.key:
            raise HTTPException(403, "this API key is not for the tenant in the path")
        if key.role < role:
            raise HTTPException(403, f"role {key.role.name} may not do this: needs {role.name}")
        return Caller(key, key.tenant)

    return check


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


def _iso_time(value: Any) -> Any:
    # pydantic also reads a number as a Unix time; the API takes ISO 8601 only
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("expected an ISO 8601 time with offset, like 2026-11-26T10:00:00Z")
    return value


IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_time)]


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt `at` is an error, not ignored

    at: IsoTime | None = Field(None, description="ISO time with offset: which version was "
                               "Production then")


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


# --- routes -------------------------------------------------------------------------------

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


@router.post(
    "/v1/tenants/{tenant}/experiments", tags=["experiments"], status_code=201,
    response_model=ExperimentLaunched,
    responses={**BODY_ERRORS, 200: {"model": ExperimentLaunched,
                               "description": "a repeat: the run this Idempotency-Key made"},
               409: {"description": "the Idempotency-Key was used for another body"}})
def launch_experiment(
    config: ExperimentRequest,
    response: Response,
    caller: Annotated[Caller, Depends(access(Role.trainer))],
    svc: Annotated[Service, Depends(service)],
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=255,
        description="the same key and body again returns the first run instead of a new one",
    )] = None,
) -> ExperimentLaunched:
    """Validate the experiment config and launch `churn_model_job` for the tenant's partition
    with it as the `trained_model` config."""
    with upstream("MLflow"):
        experiment_id = svc.mlflow.experiment_id(caller.tenant)
    with upstream("Dagster"):
        try:
            launch = svc.runs.launch_training(caller.tenant, config.model_dump(mode="json"),
                                              caller.key.id, idempotency_key)
        except IdempotencyConflict as exc:
            raise HTTPException(409, str(exc)) from exc
    log.info("tenant %s: %s run %s", caller.tenant.key,
             "launched" if launch.created else "replayed", launch.run.run_id)
    if not launch.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return ExperimentLaunched(
        tenant=caller.tenant.key, run_id=launch.run.run_id, status=launch.run.status,
        replayed=not launch.created, mlflow_experiment_id=experiment_id,
        links=Links(dagster_run=svc.runs.run_url(launch.run.run_id),
                    mlflow_experiment=svc.experiment_link(experiment_id)))


@router.get("/v1/tenants/{tenant}/runs/{run_id}", tags=["experiments"],
            response_model=RunStatus, responses=ERRORS)
def get_run(run_id: uuid.UUID,
            caller: Annotated[Caller, Depends(access(Role.viewer))],
            svc: Annotated[Service, Depends(service)]) -> RunStatus:
    """The run's status from Dagster and its training metrics from MLflow."""
    with upstream("Dagster"):
        run = svc.runs.run(str(run_id))
    if run is None or run.tenant != caller.tenant.key:
        raise HTTPException(404, "this tenant has no such run")
    with upstream("MLflow"):
        experiment_id, mlflow_run = _mlflow_run_of(svc, caller.tenant, run)
    config = run.run_config.get("ops", {}).get("trained_model", {}).get("config")
    return RunStatus(
        tenant=caller.tenant.key, run_id=run.run_id, job=run.job, status=run.status,
        created_at=_time(run.created), started_at=_time(run.started), ended_at=_time(run.ended),
        experiment_config=config, mlflow=mlflow_run,
        links=Links(dagster_run=svc.runs.run_url(run.run_id),
                    mlflow_experiment=svc.experiment_link(experiment_id)))


def _mlflow_run_of(svc: Service, tenant: Tenant,
                   run: Run) -> tuple[str | None, MlflowRunInfo | None]:
    """The tenant's MLflow training run the Dagster run made, if it got that far."""
    client = svc.mlflow.client()
    experiment = client.get_experiment_by_name(tenant.experiment_name)
    if experiment is None:
        return None, None
    found = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.dagster_run_id = '{run.run_id}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return experiment.experiment_id, None
    mlflow_run = found[0]
    return experiment.experiment_id, MlflowRunInfo(
        run_id=mlflow_run.info.run_id, status=mlflow_run.info.status,
        metrics=mlflow_run.data.metrics, params=mlflow_run.data.params)


def _version_info(client, version) -> ModelVersionInfo:
    from ml_assets.defs.registry import stages

    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    return ModelVersionInfo(
        name=version.name, version=str(version.version), stage=stages.stage_of(version),
        aliases=sorted(version.aliases or []),
        created_at=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
        metrics=metrics,
        lineage={tag: version.tags[tag] for tag in LINEAGE_TAGS if tag in version.tags})


@router.get("/v1/tenants/{tenant}/models", tags=["models"],
            response_model=list[ModelVersionInfo], responses=ERRORS)
def list_models(caller: Annotated[Caller, Depends(access(Role.viewer))],
                svc: Annotated[Service, Depends(service)]) -> list[ModelVersionInfo]:
    """Every version of the tenant's registered model: stage, metrics, lineage."""
    name = caller.tenant.registered_model_name  # a validated tenant: safe in the filter
    with upstream("MLflow"):
        client = svc.mlflow.client()
        found = client.search_model_versions(f"name = '{name}'")
        # search results may omit aliases, which decide the stage: read each version
        versions = [client.get_model_version(name, v.version) for v in found]
        return [_version_info(client, v) for v in sorted(versions, key=lambda v: int(v.version))]


@router.get("/v1/tenants/{tenant}/models/history", tags=["models"],
            response_model=PromotionHistory, responses=ERRORS)
def promotion_history(
    caller: Annotated[Caller, Depends(access(Role.viewer))],
    svc: Annotated[Service, Depends(service)],
    query: Annotated[HistoryQuery, Query()],
) -> PromotionHistory:
    """The tenant's Production versions over time, from the promotion ledger."""
    from ml_assets.defs.registry.ledger import production_at, production_history

    at = query.at
    outbox = svc.events.outbox()
    spells = [ProductionSpellInfo(**vars(spell))
              for spell in production_history(outbox, caller.tenant)]
    return PromotionHistory(
        tenant=caller.tenant.key, spells=spells, at=at,
        production_at=production_at(outbox, caller.tenant, at) if at else None)


def _existing_version(client, tenant: Tenant, version: str):
    from ml_assets.defs.registry import stages

    try:
        return stages.model_version(client, tenant, version)
    except stages.StageTransitionError as exc:
        raise HTTPException(404, f"this tenant has no model version {version}") from exc


@router.post("/v1/tenants/{tenant}/models/{version}/promote", tags=["models"],
             response_model=ModelVersionInfo,
             responses={**BODY_ERRORS,
                        409: {"description": "the stage graph forbids the move"}})
def promote(version: Annotated[str, Path(pattern=VERSION)], body: PromoteRequest,
            caller: Annotated[Caller, Depends(access(Role.promoter))],
            svc: Annotated[Service, Depends(service)]) -> ModelVersionInfo:
    """Move a Staging version to Production (the previous Production is archived); the
    stage-change sensor redeploys."""
    from ml_assets.defs.registry import stages

    with upstream("MLflow"):
        client = svc.mlflow.client()
        _existing_version(client, caller.tenant, version)
        try:
            moved = stages.transition(client, svc.events, caller.tenant, version,
                                      stages.PRODUCTION, body.reason, f"api:{caller.key.id}")
        except stages.StageTransitionError as exc:
            raise HTTPException(409, str(exc)) from exc
        return _version_info(client, moved)


@router.post("/v1/tenants/{tenant}/models/{version}/rollback", tags=["models"],
             response_model=ModelVersionInfo,
             responses={**ERRORS, 409: {"description": "the version is not Production, or "
                                        "there is no earlier Production to go back to"}})
def rollback(version: Annotated[str, Path(pattern=VERSION)],
             caller: Annotated[Caller, Depends(access(Role.promoter))],
             svc: Annotated[Service, Depends(service)]) -> ModelVersionInfo:
    """Roll the Production `version` back to the Production version before it. Naming the
    version makes a retried rollback a 409, not a second step back."""
    from ml_assets.defs.registry import stages
    from ml_assets.defs.registry.promotion import rollback as rollback_version

    with upstream("MLflow"):
        client = svc.mlflow.client()
        _existing_version(client, caller.tenant, version)
        current = stages.version_with_alias(client, caller.tenant, stages.PRODUCTION)
        if current is None or str(current.version) != version:
            raise HTTPException(409, f"version {version} is not this tenant's Production version")
        try:
            moved = rollback_version(client, svc.events, caller.tenant,
                                     actor=f"api:{caller.key.id}")
        except stages.StageTransitionError as exc:
            raise HTTPException(409, str(exc)) from exc
        return _version_info(client, moved)


# --- the app ------------------------------------------------------------------------------

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
    app.include_router(router)

    @app.middleware("http")
    async def request_context(request: Request, call_next):
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

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # where and what, not the input echoed back: it may not even be JSON (Infinity)
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "-")
        log.error("request %s failed", request_id, exc_info=exc)
        return JSONResponse({"detail": "internal error", "request_id": request_id},
                            status_code=500, headers={"X-Request-ID": request_id})

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
