"""The request and response bodies of the ML Service API, and the checks its inputs get beyond
those of the configs they carry."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from ml_assets.events import EventType
from ml_assets.training.config import ExperimentConfig, LightGBMConfig, XGBoostConfig


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


def _integral_floats_are_ints(cls, data: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; strict mode alone would refuse it
    if not isinstance(data, dict):
        return data
    ints = {name for name, field in cls.model_fields.items() if _takes_ints(field.annotation)}
    return {key: _integral(value) if key in ints else value for key, value in data.items()}


# Unknown fields, non-finite numbers and values of the wrong JSON type (`true` or `"3"` for an
# int) are refused in a request body, not coerced into a run.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class ExperimentRequest(ExperimentConfig):
    """The torch_mlp `trained_model` config the assets take: same fields, same checks."""

    model_config = ConfigDict(**STRICT, json_schema_extra=_declare_layer_check)
    # required here: a body without it is the use case's family (UseCaseFamilyRequest)
    family: Literal["torch_mlp"]
    # chaos testing makes a worker raise: for the test suite, never for a client of the API
    fault_injection_epoch: None = Field(None, description="not settable through the API")
    _ints = model_validator(mode="before")(classmethod(_integral_floats_are_ints))


class XGBoostRequest(XGBoostConfig):
    """The xgboost `trained_model` config."""

    model_config = STRICT
    family: Literal["xgboost"]
    fault_injection_round: None = Field(None, description="not settable through the API")
    _ints = model_validator(mode="before")(classmethod(_integral_floats_are_ints))


class LightGBMRequest(LightGBMConfig):
    """The lightgbm `trained_model` config."""

    model_config = STRICT
    family: Literal["lightgbm"]
    fault_injection_round: None = Field(None, description="not settable through the API")
    _ints = model_validator(mode="before")(classmethod(_integral_floats_are_ints))


def _use_case_family_schema(schema: dict[str, Any]) -> None:
    # what a family-less body holds depends on the use case in the query: the spec shows the
    # default use case's (churn: torch_mlp), so a client (and the fuzzer) sends what it takes
    torch = ExperimentRequest.model_json_schema()
    properties = {k: v for k, v in torch["properties"].items() if k != "family"}
    schema.update(properties=properties, additionalProperties=False,
                  description="no `family`: the fields of the use case's family, with its "
                  "declared defaults under them (shown: churn's torch_mlp)")


class UseCaseFamilyRequest(BaseModel):
    """A body without `family`: its fields are checked against the use case's family (and
    that family's declared defaults) when the route knows the use case."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_use_case_family_schema)


REQUESTS: dict[str, type[BaseModel]] = {
    "torch_mlp": ExperimentRequest, "xgboost": XGBoostRequest, "lightgbm": LightGBMRequest}


def _family_tag(body: Any) -> str:
    family = body.get("family") if isinstance(body, dict) else getattr(body, "family", None)
    return "use_case" if family is None else str(family)


ExperimentBody = Annotated[
    Annotated[ExperimentRequest, Tag("torch_mlp")] | Annotated[XGBoostRequest, Tag("xgboost")]
    | Annotated[LightGBMRequest, Tag("lightgbm")]
    | Annotated[UseCaseFamilyRequest, Tag("use_case")],
    Discriminator(_family_tag),
]


def experiment_request(body: BaseModel, family: str, defaults: dict[str, Any]) -> BaseModel:
    """The body as its family's request: a family-less body checked against `family` (the use
    case's) with `defaults` (its declared params) under it. pydantic's ValidationError names a
    field of another family or a bad value."""
    if not isinstance(body, UseCaseFamilyRequest):
        return body
    return REQUESTS[family].model_validate(
        {**defaults, **(body.model_extra or {}), "family": family})


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


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt filter is an error, not ignored

    type: EventType | None = Field(None, description="only events of this type")
    since: IsoTime | None = Field(None, description="ISO time with offset: events at or after")
    limit: int = Field(100, ge=1, le=1000, description="most events returned, oldest first")

    @field_validator("since")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        try:  # stored and compared in UTC
            return value.astimezone(UTC) if value else None
        except OverflowError as exc:  # 0001-01-01T00:00:00+05:00 has no UTC time
            raise ValueError("time out of range once in UTC") from exc


class AuditEntry(BaseModel):
    id: str
    type: str
    tenant: str
    time: datetime
    source: str
    data: dict[str, Any]
    partition: int
    offset: int
    consumed_at: datetime


class CatalogVersion(BaseModel):
    version: str
    model: str | None
    stage: str | None
    stage_since: datetime | None
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    registered_at: datetime | None
    deployed_at: datetime | None
    endpoint_url: str | None
    rolled_back_at: datetime | None
