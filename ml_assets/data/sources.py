"""Where a tenant's source files of a use case live: raw_data_dir/<tenant>/<use case>/<file>.

A tenant has a use case enabled iff its folder exists. No Feast here: the generators, the
contracts and the feature store all resolve paths through it."""

from __future__ import annotations

from pathlib import Path

from ml_assets.tenants import Tenant
from ml_assets.use_case import UseCase


def data_dir(raw_data_dir: str | Path, tenant: Tenant, use_case: UseCase) -> Path:
    return Path(raw_data_dir) / tenant.key / use_case.name


def source_names(use_case: UseCase) -> list[str]:
    """Every source of the use case: its feature views, then its label."""
    return [view.name for view in use_case.feature_views] + [use_case.label.name]


def source_file(use_case: UseCase, name: str) -> str:
    """The file name of a feature view's source or of the label source."""
    if name == use_case.label.name:
        return use_case.label.source
    for view in use_case.feature_views:
        if view.name == name:
            return view.source
    raise KeyError(f"use case {use_case.name!r} has no source {name!r}: one of "
                   f"{source_names(use_case)}")


def source_path(raw_data_dir: str | Path, tenant: Tenant, use_case: UseCase, name: str) -> Path:
    return data_dir(raw_data_dir, tenant, use_case) / source_file(use_case, name)
