"""Jobs a person launches from the UI or the CLI."""

import dagster as dg

from ml_assets import names
from ml_assets.defs.features.contracts import contract_check_keys
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.defs.scope import key
from ml_assets.use_case import UseCase


def build(use_case: UseCase) -> list:
    return [dg.define_asset_job(
        names.model_job(use_case.name),
        # the lifecycle up to the live endpoint; batch scoring and the Triton export need a
        # Production version (a promotion decision), monitoring runs on its own schedule
        # and the source files' contracts, which block the join when they fail
        selection=dg.AssetSelection.assets(*[key(use_case.name, a) for a in names.MODEL_GRAPH])
        | dg.AssetSelection.checks(*contract_check_keys(use_case)),
        partitions_def=tenant_partitions,
        description=f"{use_case.name}: features -> trained model -> evaluation -> registered "
        "version -> live endpoint, for a tenant partition, or for many in one run (a "
        "backfill: each tenant on its own, a failed tenant stops alone).",
    )]
