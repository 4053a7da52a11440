"""Jobs a person launches from the UI or the CLI."""

import dagster as dg

from ml_assets.tenants import tenant_partitions

churn_model_job = dg.define_asset_job(
    "churn_model_job",
    selection=dg.AssetSelection.all(),
    partitions_def=tenant_partitions,
    description="Features -> trained model -> evaluation -> registered version -> live endpoint, "
    "for one tenant partition.",
)
