"""Experiments: launch a tenant's training run with a validated config, read its status from
Dagster and its metrics from MLflow. Another tenant's run id is a 404."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ml_assets import names, use_case
from ml_assets.access.keys import Role
from ml_assets.service.auth import Caller, Service, access, service
from ml_assets.service.dagster_runs import IdempotencyConflict, Run
from ml_assets.service.errors import BODY_ERRORS, ERRORS, log, upstream
from ml_assets.service.schemas import (
    ExperimentBody,
    ExperimentLaunched,
    Links,
    MlflowRunInfo,
    RunStatus,
    experiment_request,
)
from ml_assets.tenants import Tenant

router = APIRouter()


@router.post(
    "/v1/tenants/{tenant}/experiments", tags=["experiments"], status_code=201,
    response_model=ExperimentLaunched,
    responses={**BODY_ERRORS, 200: {"model": ExperimentLaunched,
                               "description": "a repeat: the run this Idempotency-Key made"},
               409: {"description": "the Idempotency-Key was used for another body"}})
def launch_experiment(
    config: ExperimentBody,
    request: Request,
    response: Response,
    caller: Annotated[Caller, Depends(access(Role.trainer))],
    svc: Annotated[Service, Depends(service)],
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=255,
        description="the same key and body again returns the first run instead of a new one",
    )] = None,
    use_case_name: Annotated[str, Query(
        alias="use_case", pattern=use_case.NAME_PATTERN,
        description="the use case to train (declared under ml_assets/defs/<name>/defs.yaml)",
    )] = "churn",
) -> ExperimentLaunched:
    """Validate the experiment config and launch the use case's `{use_case}_model_job` for the
    tenant's partition with it as the `trained_model` config: the body's `family` (torch_mlp,
    xgboost, lightgbm) picks its fields; without one, the use case's family and its declared
    defaults. A field of another family or a bad value is a 422 naming it; a use case that is
    not declared, or that the tenant was not onboarded for, a 404."""
    unknown = sorted(set(request.query_params) - {"use_case"})
    if unknown:  # a misspelled use_case would otherwise train churn
        raise RequestValidationError([{"loc": ("query", name), "msg": "unknown parameter",
                                       "type": "extra_forbidden"} for name in unknown])
    tenant = Tenant(caller.tenant.key, use_case_name)
    if use_case_name not in use_case.names():
        raise HTTPException(404, f"use_case {use_case_name!r} is not declared: one of "
                                 f"{use_case.names()}")
    if not (svc.settings.raw_data_dir / tenant.key / use_case_name).is_dir():
        raise HTTPException(404, f"tenant {tenant.key!r} is not enabled for use_case "
                                 f"{use_case_name!r}")
    training = use_case.load(use_case_name).training
    try:
        config = experiment_request(config, training.family, training.params)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in exc.errors(include_url=False)]) from None
    with upstream("MLflow"):
        experiment_id = svc.mlflow.experiment_id(tenant)
    with upstream("Dagster"):
        try:
            launch = svc.runs.launch_training(tenant, config.model_dump(mode="json"),
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
    # the job says whose use case's run it is: {use_case}_model_job
    step = names.op_name(run.job.removesuffix("_model_job"), names.TRAINED_MODEL)
    config = run.run_config.get("ops", {}).get(step, {}).get("config")
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


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
