"""`ml-assets tenant add|list`: register tenant partitions and write their source data."""

from __future__ import annotations

import argparse

from ml_assets import use_case
from ml_assets.cli.common import instance
from ml_assets.data import churn_data, sources
from ml_assets.settings import Settings
from ml_assets.tenants import Tenant, add_tenant, registered_tenants


def tenant_add(settings: Settings, key: str, spec: churn_data.ChurnDataSpec,
               regenerate: bool = False) -> Tenant:
    """Register the tenant partition and write its source data (unless it already exists)."""
    tenant = Tenant(key)
    if regenerate or not sources.data_dir(settings.raw_data_dir, tenant,
                                          use_case.load("churn")).exists():
        churn_data.write(tenant.key, spec, settings.raw_data_dir)
    with instance(settings) as dagster:
        add_tenant(dagster, tenant.key)
    return tenant


def _add(settings: Settings, args: argparse.Namespace) -> str:
    spec = churn_data.ChurnDataSpec(customers=args.customers, churn_rate=args.churn_rate,
                                    drift=args.drift, seed=args.seed)
    return f"tenant {tenant_add(settings, args.name, spec, args.regenerate).key} ready"


def _list(settings: Settings, args: argparse.Namespace) -> str:
    with instance(settings) as dagster:
        return "\n".join(registered_tenants(dagster))


def add_commands(commands: argparse._SubParsersAction) -> None:
    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="action", required=True)
    add = tenant.add_parser("add", help="register a tenant and generate its source data")
    add.add_argument("name")
    add.add_argument("--customers", type=int, default=2000)
    add.add_argument("--churn-rate", type=float, default=0.25)
    add.add_argument("--drift", type=float, default=0.0)
    add.add_argument("--seed", type=int, default=7)
    add.add_argument("--regenerate", action="store_true", help="overwrite existing source data")
    add.set_defaults(run=_add)
    tenant.add_parser("list", help="registered tenants").set_defaults(run=_list)
