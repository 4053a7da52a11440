"""How long a tenant's prediction log is kept and when its hours are compacted."""

import dagster as dg
from pydantic import Field


class PredictionLogPolicy(dg.ConfigurableResource):
    """Retention and compaction of every tenant's prediction log."""

    retention_days: int = Field(30, ge=1, description="day partitions whose every row is older "
                                "are deleted (ML_ASSETS_LOG_RETENTION_DAYS)")
    grace_minutes: float = Field(5.0, ge=0, description="an hour is compacted this long after "
                                 "it ends: the replica's last write into it has landed")
    lookback_days: int = Field(1, ge=0, description="days before today whose hours a run "
                               "compacts (raise it once to compact an older log)")
