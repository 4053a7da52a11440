"""The Dagster component of a use case: a `defs.yaml` under defs/ declares one (see
ml_assets/use_case.py for what it holds) and this builds the use case's asset chain."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ml_assets import use_case


class UseCaseComponent(dg.Component, dg.Model, dg.Resolvable):
    """A use case: entity, feature views, label, model family, gate and monitoring defaults.
    The nested parts are validated by `ml_assets.use_case.UseCase`, the one model the Serve
    replica and the CLI read too."""

    name: str
    description: str = ""
    entity: dict[str, Any]
    feature_views: list[dict[str, Any]]
    label: dict[str, Any]
    training: dict[str, Any]
    gate: dict[str, Any]
    monitoring: dict[str, Any] = {}

    @property
    def use_case(self) -> use_case.UseCase:
        return use_case.UseCase.model_validate(self.model_dump())

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        self.use_case  # noqa: B018  a bad declaration fails the code location, naming the field
        return dg.Definitions()
