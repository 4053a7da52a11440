"""Jobs a person launches from the UI or the CLI."""

import dagster as dg

from ml_assets import names
from ml_assets.defs.partitions import tenant_partitions

churn_model_job = dg.define_asset_job(
    names.CHURN_MODEL_JOB,
    # the lifecycle up to the live endpoint; batch scoring and the Triton export need a
    # Production version (a promotion decision), monitoring runs on its own schedule
    # and the source files' contracts, which block the join when they fail
    selection=dg.AssetSelection.assets(*names.MODEL_GRAPH) | dg.AssetSelection.checks(
        *[dg.AssetCheckKey(dg.AssetKey(asset), check) for asset, check in names.CONTRACTS]),
    partitions_def=tenant_partitions,
    description="Features -> trained model -> evaluation -> registered version -> live endpoint, "
    "for one tenant partition.",
)
