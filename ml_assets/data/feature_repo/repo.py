"""Feast objects of the churn use case. Imported only inside resource methods: feast is slow."""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64
from feast.value_type import ValueType

from ml_assets.schema import ENTITY, FEATURES, TIMESTAMP

FEATURE_VIEW = "customer_activity"
# A snapshot older than this says nothing about the customer now: the join returns nulls.
ACTIVITY_TTL = timedelta(days=90)

customer = Entity(
    name="customer",
    join_keys=[ENTITY],
    value_type=ValueType.INT64,
    description="A customer of the tenant.",
)


def activity_feature_view(activity_path: str) -> FeatureView:
    """The activity features of one tenant, read from that tenant's own parquet file."""
    source = FileSource(
        name="customer_activity_source",
        path=activity_path,
        timestamp_field=TIMESTAMP,
    )
    return FeatureView(
        name=FEATURE_VIEW,
        entities=[customer],
        ttl=ACTIVITY_TTL,
        schema=[Field(name=f, dtype=Float64) for f in FEATURES],
        source=source,
        online=True,
    )


def feature_refs() -> list[str]:
    return [f"{FEATURE_VIEW}:{f}" for f in FEATURES]
