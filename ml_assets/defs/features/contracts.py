"""The source files' data contracts as blocking checks on the source assets: a tenant whose
files break one gets no join, no training and no MLflow run, and the check says why."""

import warnings

import dagster as dg

from ml_assets.data import contracts
from ml_assets.data.sources import source_names
from ml_assets.defs.features.assets import enabled_or_raise
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.defs.scope import key, own_key, tenant_of, use_case_of
from ml_assets.defs.tenant_runs import per_tenant_check
from ml_assets.resources.feast import FeastStore
from ml_assets.use_case import UseCase


def contract_result(path, contract: contracts.Contract) -> dg.AssetCheckResult:
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


def check_name(source: str) -> str:
    return f"{source}_contract"


def contract_check_keys(use_case: UseCase) -> list[dg.AssetCheckKey]:
    """The blocking contract checks of every source of the use case: a run that joins or
    trains runs them first."""
    return [dg.AssetCheckKey(key(use_case.name, s), check_name(s))
            for s in source_names(use_case)]


def holds_contract(context: dg.AssetCheckExecutionContext,
                   feast: FeastStore) -> dg.AssetCheckResult:
    use_case, tenant = use_case_of(context), tenant_of(context)
    enabled_or_raise(feast, tenant, use_case)
    source = own_key(context).path[-1]
    return contract_result(feast.source_path(tenant, use_case, source),
                           contracts.for_source(use_case, source))


def build(use_case: UseCase) -> list[dg.AssetChecksDefinition]:
    """A blocking, per-tenant check of each source file of the use case."""
    checks = []
    # partitioned checks are a preview in Dagster 1.13: without them a result belongs to no
    # tenant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        for check_key in contract_check_keys(use_case):
            source = check_key.asset_key.path[-1]
            checks.append(dg.asset_check(
                asset=check_key.asset_key, name=check_key.name, blocking=True,
                partitions_def=tenant_partitions,
                description=f"The tenant's {source} file is readable parquet with rows, the "
                "declared columns and types, timezone-aware timestamps, labels in their "
                "domain and no conflicting duplicate (key, timestamp) rows.",
            )(per_tenant_check(holds_contract)))
    return checks
