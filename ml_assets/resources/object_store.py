"""The object store as a Dagster resource."""

import dagster as dg

from ml_assets.data.object_store import ObjectStoreClient


class ObjectStore(dg.ConfigurableResource, ObjectStoreClient):
    """Checkpoints, artifacts and prediction logs under each tenant's prefix: a local directory,
    or a bucket on an S3 API (`endpoint`)."""
