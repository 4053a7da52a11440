"""The Dagster component of a use case: a `defs.yaml` under defs/ declares one (see
ml_assets/use_case.py for what it holds) and this builds the use case's asset chain, keyed
under its name and partitioned by tenant."""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)

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
        declared = self.use_case  # a bad declaration fails the code location, naming the field
        if declared != use_case.load(declared.name):
            raise ValueError(f"use case {declared.name!r} must be declared in "
                             f"{use_case.declaration_path(declared.name)}")
        return build_chain(declared)


def build_chain(declared: use_case.UseCase) -> dg.Definitions:
    """Every asset, check, sensor, schedule and job of the use case's chain."""
    from ml_assets.defs import jobs
    from ml_assets.defs.evaluation import assets as evaluation
    from ml_assets.defs.features import assets as features
    from ml_assets.defs.features import contracts
    from ml_assets.defs.monitoring import assets as monitoring
    from ml_assets.defs.monitoring import compaction
    from ml_assets.defs.monitoring import sensors as monitoring_sensors
    from ml_assets.defs.registry import assets as registry
    from ml_assets.defs.serving import assets as serving
    from ml_assets.defs.serving import batch, triton, triton_endpoint
    from ml_assets.defs.training import assets as training
    from ml_assets.defs.training import search_assets

    built = [definition for module in (
        features, contracts, search_assets, training, evaluation, registry, serving, batch,
        triton, triton_endpoint, monitoring, compaction, monitoring_sensors, jobs)
        for definition in module.build(declared)]
    return dg.Definitions(
        # an AssetChecksDefinition is an AssetsDefinition too
        assets=[d for d in built if isinstance(d, dg.AssetsDefinition | dg.AssetSpec)
                and not isinstance(d, dg.AssetChecksDefinition)],
        asset_checks=[d for d in built if isinstance(d, dg.AssetChecksDefinition)],
        sensors=[d for d in built if isinstance(d, dg.SensorDefinition)],
        schedules=[d for d in built if isinstance(d, dg.ScheduleDefinition)],
        jobs=[d for d in built if isinstance(d, UnresolvedAssetJobDefinition)],
    )
