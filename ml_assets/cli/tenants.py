"""`ml-assets tenant add|list`: register a tenant for a use case with its own files (or, for
demos, generated ones)."""

from __future__ import annotations

import argparse

from ml_assets import use_case
from ml_assets.cli.common import instance
from ml_assets.data import churn_data
from ml_assets.settings import Settings
from ml_assets.tenants import Tenant, add_tenant, registered_tenants


def tenant_add(settings: Settings, key: str, spec: churn_data.ChurnDataSpec,
               regenerate: bool = False) -> Tenant:
    """Register the tenant partition and write its generated churn data (unless it exists)."""
    tenant = Tenant(key, "churn")
    if regenerate or not (settings.raw_data_dir / tenant.key / tenant.use_case).exists():
        churn_data.write(tenant.key, spec, settings.raw_data_dir)
    with instance(settings) as dagster:
        add_tenant(dagster, tenant.key)
    return tenant


def _generate(settings: Settings, tenant: Tenant, args: argparse.Namespace) -> None:
    """Demo data of the use cases that ship a generator."""
    if tenant.use_case == "churn":
        churn_data.write(tenant.key, churn_data.ChurnDataSpec(
            customers=args.customers, churn_rate=args.churn_rate, drift=args.drift,
            seed=args.seed), settings.raw_data_dir)
    elif tenant.use_case == "spend":
        from ml_assets.data import spend_data

        spend_data.write(tenant.key, spend_data.SpendDataSpec(
            accounts=args.customers, drift=args.drift, seed=args.seed), settings.raw_data_dir)
    else:
        raise ValueError(f"use case {tenant.use_case!r} has no generator: onboard the "
                         "tenant's files with --source VIEW=PATH ... --labels PATH")


def _sources(declared: use_case.UseCase, args: argparse.Namespace) -> dict[str, str]:
    sources = {}
    for given in args.source:
        view, sep, uri = given.partition("=")
        if not sep or not view or not uri:
            raise ValueError(f"--source {given!r}: expected VIEW=PATH_OR_S3_URI")
        if view in sources:
            raise ValueError(f"--source {view} given twice")
        sources[view] = uri
    if args.labels:
        sources[declared.label.name] = args.labels
    return sources


def _add(settings: Settings, args: argparse.Namespace) -> str:
    from ml_assets.data.onboarding import OnboardingError, onboard
    from ml_assets.resources import build_resources

    try:
        declared = use_case.load(args.use_case)
    except use_case.UnknownUseCaseError as exc:  # a KeyError: its message as the CLI's error
        raise ValueError(exc.args[0]) from None
    tenant = Tenant(args.name, declared.name)
    if args.generate == bool(args.source or args.labels):
        raise ValueError("give the tenant's files (--source VIEW=PATH_OR_S3_URI for each of "
                         f"{[v.name for v in declared.feature_views]} and --labels "
                         "PATH_OR_S3_URI), or --generate for demo data")
    if args.generate:
        if args.regenerate or not (settings.raw_data_dir / tenant.key / declared.name).exists():
            _generate(settings, tenant, args)
        done = "generated data"
    else:
        resources = build_resources(settings)
        try:
            paths = onboard(resources["feast"], resources["object_store"], tenant, declared,
                            _sources(declared, args))
        except OnboardingError as exc:
            raise OnboardingError(f"tenant {tenant.key}, use case {declared.name}: {exc}"
                                  ) from None
        done = f"{len(paths)} files"
    with instance(settings) as dagster:
        add_tenant(dagster, tenant.key)
    return f"tenant {tenant.key} ready for use case {declared.name} ({done})"


def _list(settings: Settings, args: argparse.Namespace) -> str:
    with instance(settings) as dagster:
        return "\n".join(registered_tenants(dagster))


def add_commands(commands: argparse._SubParsersAction) -> None:
    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="action", required=True)
    add = tenant.add_parser("add", help="register a tenant for a use case with its own files "
                            "(or generated demo data)")
    add.add_argument("name")
    add.add_argument("--use-case", default="churn", help="a use case declared under "
                     "ml_assets/defs/<name>/defs.yaml (default: churn)")
    add.add_argument("--source", action="append", default=[], metavar="VIEW=PATH_OR_S3_URI",
                     help="the file of one feature view (local parquet or s3://bucket/key on "
                     "the configured object store); once per feature view")
    add.add_argument("--labels", metavar="PATH_OR_S3_URI", help="the label file")
    add.add_argument("--generate", action="store_true",
                     help="demo data from the use case's deterministic generator")
    add.add_argument("--customers", type=int, default=2000, help="--generate: entities")
    add.add_argument("--churn-rate", type=float, default=0.25, help="--generate: churn only")
    add.add_argument("--drift", type=float, default=0.0, help="--generate: feature shift")
    add.add_argument("--seed", type=int, default=7)
    add.add_argument("--regenerate", action="store_true", help="overwrite generated data")
    add.set_defaults(run=_add)
    tenant.add_parser("list", help="registered tenants").set_defaults(run=_list)
