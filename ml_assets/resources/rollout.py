"""The progressive rollout policy: how a new Staging version reaches Production unattended."""

import dagster as dg
from pydantic import Field, field_validator

from ml_assets.tenants import Tenant, validated_keys


class RolloutSteps(dg.Config):
    """Shadow first, then canary shares, each step gated by the canary check on enough live
    requests and time (the analysis model of Flagger and Argo Rollouts)."""

    enabled: bool = Field(True, description="off: a Staging version waits for a person")
    shadow_requests: int = Field(
        200, ge=0, description="production requests Staging answers in shadow (logged, never "
        "returned) before its first canary step; 0 skips the shadow")
    canary_steps: list[int] = Field(
        default_factory=lambda: [10, 50, 100],
        description="percent of keys per step, increasing; 100 promotes to Production")
    min_requests: int = Field(200, ge=1, description="canary requests a step needs to advance")
    min_minutes: float = Field(10.0, ge=0, description="minutes a step lasts at least")

    @field_validator("canary_steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[int]) -> list[int]:
        if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps) or any(
                a >= b for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"canary_steps must increase within 1-100 and end at 100, got {steps}")
        return steps


class RolloutPolicy(dg.ConfigurableResource):
    """The rollout steps, per tenant where it says so."""

    steps: RolloutSteps = Field(default_factory=RolloutSteps)
    tenant_steps: dict[str, RolloutSteps] = Field(default_factory=dict)

    _valid_tenants = field_validator("tenant_steps")(lambda cls, value: validated_keys(value))

    def for_tenant(self, tenant: Tenant) -> RolloutSteps:
        return self.tenant_steps.get(tenant.key, self.steps)
