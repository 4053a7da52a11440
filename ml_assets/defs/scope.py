"""What a step of a use case's chain works on: its asset keys, its use case and its tenant.

Every asset and check of a use case is keyed under the use case's name (`churn/trained_model`),
so one body serves every use case: it reads the use case from its own key."""

from __future__ import annotations

import dagster as dg

from ml_assets import use_case
from ml_assets.defs.partitions import tenant_partitions
from ml_assets.defs.tenant_runs import BACKFILL_POLICY, per_tenant, whole_run
from ml_assets.tenants import Tenant


def key(use_case_name: str, asset: str) -> dg.AssetKey:
    return dg.AssetKey([use_case_name, asset])


def inputs(use_case_name: str, *upstream: str) -> dict[str, dg.AssetIn]:
    """The `ins` of an asset whose parameters name upstream assets of the same use case."""
    return {name: dg.AssetIn(key=key(use_case_name, name)) for name in upstream}


def use_case_asset(declared: use_case.UseCase, body, name: str, group: str, kinds: set[str],
                   upstream: tuple[str, ...] = (), deps: tuple[str, ...] = (),
                   threads: int = 1, **asset_args) -> dg.AssetsDefinition:
    """`body` as the use case's asset `name`: keyed under the use case, partitioned by tenant,
    its `upstream` assets as inputs and `deps` as dependencies (both of the same use case).
    A run over many tenants runs the body once per tenant, `threads` tenants at a time
    (ml_assets/defs/tenant_runs.py)."""
    return dg.asset(
        name=name, key_prefix=declared.name, partitions_def=tenant_partitions, group_name=group,
        kinds=kinds, ins=inputs(declared.name, *upstream),
        deps=[key(declared.name, dep) for dep in deps], backfill_policy=BACKFILL_POLICY,
        **asset_args,
    )(per_tenant(body, upstream, threads))


def own_key(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> dg.AssetKey:
    """The key of the asset being executed, or of the one the check is on."""
    context = whole_run(context)  # a tenant's view of a run over many tenants
    if isinstance(context, dg.AssetCheckExecutionContext):
        return next(iter(context.check_specs)).asset_key
    return context.asset_key


def use_case_of(context) -> use_case.UseCase:
    """The use case of the asset (or check) being executed, from its key."""
    return use_case.load(own_key(context).path[0])


def tenant_of(context) -> Tenant:
    """The partition's tenant, scoped to the step's use case."""
    return Tenant(context.partition_key, own_key(context).path[0])
