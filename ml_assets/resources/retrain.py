"""The retrain policy the retrain sensor follows."""

import dagster as dg
from pydantic import Field


class RetrainPolicy(dg.ConfigurableResource):
    """When the retrain sensor may act: which failed checks count, cooldown, concurrency."""

    checks: list[str] = Field(default_factory=lambda: [
        "prediction_drift_within_2_sigma", "feature_drift", "error_rate_below_1_percent"])
    cooldown_minutes: float = Field(60.0, ge=0)
    max_concurrent: int = Field(1, ge=1)
