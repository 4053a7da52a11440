"""The tenant's LLM endpoint watched through the gateway's request log: time to first token
within the seed's 100 ms, few server errors; alerts like the model's monitoring."""

import warnings
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from ml_assets import names
from ml_assets.defs.monitoring.alerting import deliver_alerts
from ml_assets.defs.monitoring.assets import check_result
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.llm.registry import LlmTenant
from ml_assets.monitoring.llm_window import LLM_ERROR_RATE, LLM_TTFT_P95, evaluate
from ml_assets.resources.alerts import AlertReceivers
from ml_assets.resources.object_store import ObjectStore
from ml_assets.serving import llm_log

with warnings.catch_warnings():  # partitioned checks: see defs/monitoring/assets.py
    warnings.simplefilter("ignore", dg.PreviewWarning)
    CHECK_SPECS = [
        dg.AssetCheckSpec(LLM_TTFT_P95, asset=names.LLM_MONITORING,
                          partitions_def=tenant_partitions,
                          description="p95 time to first token of answered requests within "
                          "the SLA (the seed's 100 ms for LLM serving)."),
        dg.AssetCheckSpec(LLM_ERROR_RATE, asset=names.LLM_MONITORING,
                          partitions_def=tenant_partitions,
                          description="Share of 5xx answers at most the limit (1 %)."),
    ]


class LlmMonitoringConfig(dg.Config):
    window_minutes: float = Field(60.0, gt=0)
    ttft_sla_ms: float = Field(100.0, gt=0, description="p95 time-to-first-token SLA")
    max_error_rate: float = Field(0.01, ge=0, le=1)
    min_requests: int = Field(20, ge=1, description="fewer: the checks only warn")


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="llm",
    kinds={"vllm", "parquet"},
    deps=[names.LLM_ENDPOINT],  # reads the log the gateway writes, not the endpoint's output
    check_specs=CHECK_SPECS,
)
def llm_monitoring(context: dg.AssetExecutionContext, config: LlmMonitoringConfig,
                   object_store: ObjectStore, alert_receivers: AlertReceivers):
    """The last window of the tenant's LLM requests: time to first token (p50/p95), latency,
    tokens/s, sizes and errors, held to the SLA; a breach alerts once, like model_monitoring."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tenant = LlmTenant(context.partition_key)
    end = datetime.now(UTC)
    start = end - timedelta(minutes=config.window_minutes)
    logged = llm_log.read(object_store, tenant)
    table = logged.filter(pc.greater_equal(logged["ts"], pa.scalar(start, logged["ts"].type)))
    found, outcomes = evaluate(table, config.ttft_sla_ms, config.max_error_rate,
                               config.min_requests)
    versions = [v for v in table["model_version"].to_pylist() if v]
    version = versions[-1] if versions else None
    window = {"window_start": start.isoformat(), "window_end": end.isoformat()}
    delivered = deliver_alerts(alert_receivers, context.instance, tenant, outcomes, version,
                               window, context.log, asset=names.LLM_MONITORING, use_case="llm")
    yield dg.Output({**found, "model_version": version, **window, "alerts": delivered},
                    metadata={**{k: dg.MetadataValue.float(float(v)) for k, v in found.items()
                                 if v is not None},
                              "model_version": version or "", **window,
                              "alerts_delivered": dg.MetadataValue.json(delivered)})
    for outcome in outcomes:
        yield check_result(outcome, window, version)
