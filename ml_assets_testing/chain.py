"""A use case's chain as its component builds it, looked up by name: what tests and benches
materialize (`chain("churn").asset("trained_model")`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import dagster as dg

from ml_assets import use_case
from ml_assets.defs.use_cases import build_chain


@dataclass(frozen=True)
class Chain:
    definitions: dg.Definitions

    def asset(self, name: str) -> dg.AssetsDefinition:
        for asset in self.definitions.assets or []:
            if isinstance(asset, dg.AssetsDefinition) and asset.key.path[-1] == name:
                return asset
        raise KeyError(name)

    def checks(self) -> list[dg.AssetChecksDefinition]:
        return list(self.definitions.asset_checks or [])

    def sensor(self, name: str) -> dg.SensorDefinition:
        return next(s for s in self.definitions.sensors or [] if s.name.endswith(name))

    def schedule(self, name: str) -> dg.ScheduleDefinition:
        return next(s for s in self.definitions.schedules or [] if s.name.endswith(name))


@functools.cache
def chain(name: str = "churn") -> Chain:
    return Chain(build_chain(use_case.load(name)))
