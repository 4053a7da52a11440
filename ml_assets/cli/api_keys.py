"""`ml-assets api-key create|list|revoke`: API keys of the ML Service."""

from __future__ import annotations

import argparse

from ml_assets.access.keys import KeyStore, Role
from ml_assets.cli.common import instance
from ml_assets.settings import Settings
from ml_assets.tenants import Tenant, registered_tenants


def api_key_command(settings: Settings, args: argparse.Namespace) -> str:
    """Create (for a registered tenant), list or revoke ML Service API keys."""
    keys = KeyStore(settings.api_keys_path)
    if args.action == "create":
        tenant = Tenant(args.tenant)
        with instance(settings) as dagster:
            if tenant.key not in registered_tenants(dagster):
                raise ValueError(f"tenant {tenant.key!r} is not registered: "
                                 f"run `ml-assets tenant add {tenant.key}` first")
        key, token = keys.create(tenant, Role[args.role])
        return (f"API key {key.id} for tenant {tenant.key}, role {key.role.name} "
                f"(shown once, store it now):\n{token}")
    if args.action == "list":
        return "\n".join(f"{k.id}  {k.tenant.key:40}  {k.role.name:9}  {k.created_at}"
                         for k in keys.list())
    if not keys.revoke(args.key_id):
        raise ValueError(f"no active API key {args.key_id!r}")
    return f"API key {args.key_id} revoked"


def add_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("api-key", help="API keys of the ML Service")
    group.set_defaults(run=api_key_command)
    api_key = group.add_subparsers(dest="action", required=True)
    create = api_key.add_parser("create", help="a key for one tenant; prints it once")
    create.add_argument("tenant")
    create.add_argument("--role", choices=[role.name for role in Role], default="viewer",
                        help="predict: the production prediction route; staging: + the "
                        "pre-production route; viewer, trainer, promoter: the ML Service")
    api_key.add_parser("list", help="active keys (ids, tenants, roles; never secrets)")
    revoke = api_key.add_parser("revoke")
    revoke.add_argument("key_id")
