"""What the monitoring checks hold a tenant's prediction log to: window and thresholds."""

import dagster as dg
from pydantic import Field, field_validator

from ml_assets.tenants import Tenant, validated_keys
from ml_assets.use_case import known_metric, load


class MonitoringThresholds(dg.Config):
    """Limits of one tenant's checks; a breach fails the check with severity ERROR."""

    latency_p95_sla_ms: float = Field(50.0, gt=0, description="p95 request latency SLA")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="share of 5xx requests")
    prediction_shift_sigmas: float = Field(
        2.0, gt=0, description="mean prediction shift, in reference prediction std devs")
    feature_drift_alpha: float = Field(
        0.01, gt=0, lt=1, description="KS p-value (Benjamini-Hochberg adjusted) below which a "
        "feature shift is significant")
    feature_drift_min_psi: float = Field(
        0.1, ge=0, description="PSI from which a significant shift counts as drift")
    min_rows: int = Field(200, ge=1, description="fewer scored rows: drift checks only warn")
    min_requests: int = Field(100, ge=1, description="fewer requests: SLA checks only warn")
    quiet_minutes: float = Field(
        5.0, gt=0, description="no answered production request for this long: a probe "
        "request checks the endpoint is alive")
    quality_metric: str | None = Field(
        None, description="the metric realized_quality computes on labeled rows; default: the "
        "use case's gate metric")

    _known_metric = field_validator("quality_metric")(lambda cls, value: known_metric(value))
    max_quality_drop: float = Field(
        0.05, ge=0, description="how far the realized metric may fall below the version's "
        "holdout value")
    min_labeled_rows: int = Field(
        100, ge=1, description="fewer scored-then-labeled rows: realized_quality only warns")


class MonitoringPolicy(dg.ConfigurableResource):
    """The window each monitoring run summarizes and the thresholds per tenant."""

    window_minutes: float = Field(60.0, gt=0)
    thresholds: MonitoringThresholds = Field(default_factory=MonitoringThresholds)
    tenant_thresholds: dict[str, MonitoringThresholds] = Field(
        default_factory=dict, description="per-tenant thresholds; fields left out take the "
        "built-in defaults")

    _valid_tenants = field_validator("tenant_thresholds")(lambda cls, value: validated_keys(value))

    def for_tenant(self, tenant: Tenant) -> MonitoringThresholds:
        """The tenant's thresholds; what they leave out, its use case's declared defaults."""
        chosen = self.tenant_thresholds.get(tenant.key, self.thresholds)
        declared = load(tenant.use_case).monitoring
        defaults = {"latency_p95_sla_ms": declared.latency_sla_ms,
                    "max_error_rate": declared.max_error_rate,
                    "max_quality_drop": declared.max_quality_drop}
        return chosen.model_copy(update={name: value for name, value in defaults.items()
                                         if name not in chosen.model_fields_set})
