"""Tenants come from a file (one key per line): the sensor adds their partitions."""

import dagster as dg

from ml_assets.defs.partitions import tenant_partitions
from ml_assets.settings import load_settings
from ml_assets.tenants import Tenant


def tenants_in_file(text: str) -> list[str]:
    """Valid keys, in order, without duplicates; blank lines and # comments are skipped."""
    keys: list[str] = []
    for line in text.splitlines():
        key = line.split("#", 1)[0].strip()
        if key and Tenant(key).key not in keys:
            keys.append(key)
    return keys


@dg.sensor(
    name="tenant_partitions_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a `tenant` partition for each new key in the tenants file. It never "
    "removes a partition: a tenant's data and models outlive a line deleted by mistake.",
)
def tenant_partitions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    path = load_settings().tenants_file
    if not path.exists():
        return dg.SensorResult(skip_reason=f"no tenants file at {path}")
    existing = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    new = [k for k in tenants_in_file(path.read_text()) if k not in existing]
    if not new:
        return dg.SensorResult(skip_reason="no new tenants")
    return dg.SensorResult(dynamic_partitions_requests=[tenant_partitions.build_add_request(new)])
