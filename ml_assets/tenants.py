"""The tenant context: a validated key and the names and prefixes that tenant may touch.

Imported by the Serve replica's request path: no Dagster here (the partitions definition is
`ml_assets.defs.partitions`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

TENANT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")

PARTITIONS = "tenant"  # the name of the dynamic partitions definition of every asset


class InvalidTenantError(ValueError):
    """A tenant key that does not match TENANT_PATTERN or is not registered."""


USE_CASE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,30}$")  # ml_assets.use_case.NAME_PATTERN


@dataclass(frozen=True)
class Tenant:
    """A validated tenant key, the use case at hand, and every name derived from them: one
    tenant's models of two use cases are two registered models, never one."""

    key: str
    use_case: str = "churn"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not TENANT_PATTERN.fullmatch(self.key):
            raise InvalidTenantError(
                f"invalid tenant {self.key!r}: expected {TENANT_PATTERN.pattern} "
                "(2-40 lowercase letters, digits or '-': a letter first, no '-' last)"
            )
        if not isinstance(self.use_case, str) or not USE_CASE_PATTERN.fullmatch(self.use_case):
            raise InvalidTenantError(f"invalid use case {self.use_case!r}: expected "
                                     f"{USE_CASE_PATTERN.pattern}")

    @property
    def experiment_name(self) -> str:
        return f"ml_assets/{self.key}"

    @property
    def registered_model_name(self) -> str:
        return f"{self.key}-{self.use_case}"

    @property
    def prefix(self) -> str:
        """Object-store prefix: everything of this tenant lives under it."""
        return f"tenants/{self.key}"

    @property
    def route_prefix(self) -> str:
        return f"/v1/{self.key}"


def validated_keys(per_tenant: dict) -> dict:
    """A per-tenant mapping whose keys are all valid tenant keys (InvalidTenantError if not)."""
    for key in per_tenant:
        Tenant(key)
    return per_tenant


def add_tenant(instance: dg.DagsterInstance, key: str) -> Tenant:
    """Validate and register a tenant partition (idempotent)."""
    tenant = Tenant(key)
    if not instance.has_dynamic_partition(PARTITIONS, tenant.key):
        instance.add_dynamic_partitions(PARTITIONS, [tenant.key])
    return tenant


def registered_tenants(instance: dg.DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(PARTITIONS))
