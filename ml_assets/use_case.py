"""A use case: what the platform trains, declared in a `defs.yaml` under `ml_assets/defs/<name>/`
and never in code. The entity and its key type, the feature views joined point in time, the label
and its task, the model family and its defaults, the promotion gate and the monitoring defaults.

Plain pydantic, no Dagster: the Serve replica, the CLI and the Dagster component all read the
same declaration (`load(name)`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

USE_CASES_DIR = Path(__file__).parent / "defs"
COMPONENT_TYPE = "ml_assets.defs.use_cases.UseCaseComponent"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,30}$"
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"

Task = Literal["binary_classification", "regression"]
Family = Literal["torch_mlp", "xgboost", "lightgbm"]
# the metrics each task is evaluated and gated on; lower is better for the losses and errors
METRICS: dict[str, tuple[str, ...]] = {
    "binary_classification": ("roc_auc", "f1", "accuracy", "brier", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}


def known_metric(value: str | None) -> str | None:
    """A metric of some task (or None), else a ValueError naming them all."""
    known = [metric for metrics in METRICS.values() for metric in metrics]
    if value is not None and value not in known:
        raise ValueError(f"unknown metric {value!r}: one of {known}")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entity(Strict):
    """What a row is about, and the key every feature view and the label join on."""

    name: str = Field(pattern=NAME_PATTERN)
    join_key: str = Field(pattern=COLUMN_PATTERN)
    key_type: Literal["int", "string"]


class FeatureView(Strict):
    """One source of features: a file of the tenant's, one row per (entity, timestamp)."""

    name: str = Field(pattern=NAME_PATTERN)
    source: str = Field(description="file name under the tenant's data folder")
    timestamp_field: str = Field("event_timestamp", pattern=COLUMN_PATTERN)
    fields: dict[str, Literal["float", "int"]] = Field(min_length=1)
    ttl_days: int = Field(90, gt=0, le=3650)


class Label(Strict):
    """The outcome to learn, each row at its label time."""

    name: str = Field(pattern=NAME_PATTERN, description="the source asset of the label file")
    source: str
    column: str = Field(pattern=COLUMN_PATTERN)
    timestamp_field: str = Field("label_timestamp", pattern=COLUMN_PATTERN)
    task: Task


class Training(Strict):
    """The model family trained by default, and its defaults (an experiment may override)."""

    family: Family
    params: dict[str, Any] = Field(default_factory=dict)


class Gate(Strict):
    """The candidate must beat the baseline on `metric` by `margin` to be registered."""

    metric: str
    margin: float = Field(0.0, ge=-1, le=1)


class Monitoring(Strict):
    """The defaults of the monitoring checks (each may be overridden per run)."""

    latency_sla_ms: float = Field(100.0, gt=0)
    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_quality_drop: float = Field(0.05, ge=0)


class UseCase(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    entity: Entity
    feature_views: list[FeatureView] = Field(min_length=1)
    label: Label
    training: Training
    gate: Gate
    monitoring: Monitoring = Monitoring()

    @model_validator(mode="after")
    def _consistent(self) -> UseCase:
        features = [f for view in self.feature_views for f in view.fields]
        duplicated = sorted({f for f in features if features.count(f) > 1})
        if duplicated:
            raise ValueError(f"features declared by more than one feature view: {duplicated}")
        reserved = {self.entity.join_key, self.label.column, self.label.timestamp_field}
        clash = sorted(reserved & set(features))
        if clash:
            raise ValueError(f"features named like the key, label or label time: {clash}")
        views = [v.name for v in self.feature_views] + [self.label.name]
        if len(set(views)) != len(views):
            raise ValueError(f"feature views and the label need distinct names: {views}")
        if self.gate.metric not in METRICS[self.label.task]:
            raise ValueError(f"gate.metric {self.gate.metric!r} is not a {self.label.task} "
                             f"metric: one of {list(METRICS[self.label.task])}")
        return self

    @property
    def features(self) -> list[str]:
        """Every feature, in the order of the views and their fields: the model's input."""
        return [f for view in self.feature_views for f in view.fields]

    @property
    def feature_refs(self) -> list[str]:
        return [f"{view.name}:{f}" for view in self.feature_views for f in view.fields]

    @property
    def key(self) -> str:
        return self.entity.join_key

    @property
    def binary(self) -> bool:
        return self.label.task == "binary_classification"

    def view(self, name: str) -> FeatureView:
        for view in self.feature_views:
            if view.name == name:
                return view
        raise KeyError(f"use case {self.name!r} has no feature view {name!r}: "
                       f"{[v.name for v in self.feature_views]}")


class UnknownUseCaseError(KeyError):
    """A use case with no `defs.yaml` declaring it."""


def declaration_path(name: str) -> Path:
    return USE_CASES_DIR / name / "defs.yaml"


def parse(document: dict[str, Any]) -> UseCase:
    """The use case of one `defs.yaml` document (its component attributes)."""
    if document.get("type") != COMPONENT_TYPE:
        raise ValueError(f"not a use case component: type {document.get('type')!r}")
    return UseCase.model_validate(document.get("attributes") or {})


@functools.cache
def load(name: str) -> UseCase:
    path = declaration_path(name)
    if not path.exists():
        raise UnknownUseCaseError(f"no use case {name!r}: known {names()}")
    return parse(yaml.safe_load(path.read_text()))


def names() -> list[str]:
    """Every use case declared under defs/ (a folder with a use-case `defs.yaml`)."""
    return list(_declared())


@functools.cache
def _declared() -> tuple[str, ...]:
    # declarations are code, read once per process like `load`: not on every sensor tick or
    # API request
    found = []
    for path in sorted(USE_CASES_DIR.glob("*/defs.yaml")):
        document = yaml.safe_load(path.read_text()) or {}
        if document.get("type") == COMPONENT_TYPE:
            found.append(path.parent.name)
    return tuple(found)
