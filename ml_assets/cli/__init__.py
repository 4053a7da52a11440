"""`ml-assets`: add tenants, run the local Ray head, run the demo and act on model versions.

One module per command group; each adds its subcommands with `add_commands` and sets the
function that runs them, which returns what to print."""

from __future__ import annotations

import argparse
import subprocess
import sys

from ml_assets.cli import (
    alerts,
    api_keys,
    consumers,
    demo,
    models,
    platform,
    ray_cluster,
    tenants,
    triton,
)
from ml_assets.settings import load_settings

COMMAND_GROUPS = (tenants, ray_cluster, triton, platform, demo, models, api_keys, alerts,
                  consumers)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="ml-assets", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = load_settings()
    try:
        output = args.run(settings, args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"ml-assets: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"ml-assets: {' '.join(exc.cmd[:3])}... failed with exit {exc.returncode}",
              file=sys.stderr)
        return 1
    if output:
        print(output)
    if getattr(args, "emits_events", True):  # a consumer only reads them
        relay_events(settings)
    return 0


def relay_events(settings) -> None:
    """An action's events reach the broker now, not at the relay sensor's next tick."""
    if settings.kafka_bootstrap:
        from ml_assets.resources import build_resources

        build_resources(settings)["events"].relay_soon()


if __name__ == "__main__":
    sys.exit(main())
