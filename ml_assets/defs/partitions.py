"""The tenant partitions every asset, check and job of the graph is split by."""

import dagster as dg

from ml_assets.tenants import PARTITIONS

tenant_partitions = dg.DynamicPartitionsDefinition(name=PARTITIONS)
