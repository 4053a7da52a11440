"""The one reader of monitoring check history in the Dagster instance: the alert de-duplication
of `model_monitoring` and the retrain sensor both ask it."""

from __future__ import annotations

import dagster as dg

from ml_assets import names
from ml_assets.tenants import Tenant


def evaluations(instance: dg.DagsterInstance, check: str, tenant: Tenant, limit: int,
                failed_only: bool = False) -> list[tuple[int, dg.AssetCheckEvaluation]]:
    """(record id, evaluation) of the tenant's newest completed evaluations of a
    model_monitoring check of its use case, newest first."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import (
        COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
        AssetCheckExecutionRecordStatus,
    )

    statuses = ({AssetCheckExecutionRecordStatus.FAILED} if failed_only
                else set(COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES))
    key = dg.AssetCheckKey(dg.AssetKey([tenant.use_case, names.MODEL_MONITORING]), check)
    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=limit, status=statuses, partition_filter=PartitionKeyFilter(key=tenant.key))
    return [(r.id, r.event.asset_check_evaluation) for r in records
            if r.event is not None and r.event.asset_check_evaluation is not None]


def is_breach(evaluation: dg.AssetCheckEvaluation) -> bool:
    """Failed with severity ERROR: a too-few-rows warning is not a breach."""
    return not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
