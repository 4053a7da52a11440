"""The feature store as a Dagster resource."""

import dagster as dg

from ml_assets.data.feature_store import TenantFeatureStore


class FeastStore(dg.ConfigurableResource, TenantFeatureStore):
    """Feast per tenant: local provider, duckdb offline store, online store on sqlite or Redis
    (`redis_url`), registry a file per tenant or one SQL database (`registry_url`)."""
