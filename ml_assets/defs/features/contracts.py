"""The source files' data contracts as blocking checks on the source assets: a tenant whose
files break one gets no join, no training and no MLflow run, and the check says why."""

import warnings
from pathlib import Path

import dagster as dg

from ml_assets import names, use_case
from ml_assets.data import contracts
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.resources.feast import FeastStore
from ml_assets.tenants import Tenant
from ml_assets.use_case import UseCase


def contract_result(path: Path, contract: contracts.Contract) -> dg.AssetCheckResult:
    found = contracts.violations(path, contract)
    return dg.AssetCheckResult(
        passed=not found,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(map(str, found)) or f"{path.name} holds its contract",
        metadata={
            "file": str(path),
            "violations": len(found),
            "rules_broken": ", ".join(sorted({v.rule for v in found})) or "none",
            **({"details": dg.MetadataValue.json([{**vars(v)} for v in found])} if found
               else {}),
        },
    )


def contract_check(asset: str, check: str, case: UseCase, source: str,
                   description: str) -> dg.AssetChecksDefinition:
    """A blocking, per-tenant check of one source file of the use case (`source`: a feature
    view's name or the label's)."""
    contract = contracts.for_source(case, source)
    # partitioned checks are a preview in Dagster 1.13: without them a result belongs to no
    # tenant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)

        @dg.asset_check(asset=asset, name=check, blocking=True,
                        partitions_def=tenant_partitions, description=description)
        def holds_contract(context: dg.AssetCheckExecutionContext,
                           feast: FeastStore) -> dg.AssetCheckResult:
            tenant = Tenant(context.partition_key)
            return contract_result(feast.source_path(tenant, case, source), contract)

    return holds_contract


customer_activity_contract = contract_check(
    names.CUSTOMER_ACTIVITY, names.ACTIVITY_CONTRACT, use_case.load("churn"),
    names.CUSTOMER_ACTIVITY,
    "The activity file is readable parquet with rows, integer customer ids, timezone-aware "
    "timestamps, numeric features and no conflicting duplicate (customer, timestamp) rows.")
churn_labels_contract = contract_check(
    names.CHURN_LABELS, names.LABELS_CONTRACT, use_case.load("churn"), names.CHURN_LABELS,
    "The label file is readable parquet with rows, integer customer ids, timezone-aware label "
    "times, labels 0 or 1 (never null) and no conflicting duplicate (customer, label time) "
    "rows.")
