"""`ml-assets bootstrap|serve-api`: the platform's own servers and what they need first."""

from __future__ import annotations

import argparse

from ml_assets.settings import Settings


def _bootstrap(settings: Settings, args: argparse.Namespace) -> str:
    from ml_assets.resources import bootstrap, build_resources

    bootstrap(build_resources(settings))
    return "bootstrapped"


def _serve_api(settings: Settings, args: argparse.Namespace) -> None:
    from ml_assets.service.app import serve

    serve(settings)


def add_commands(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("bootstrap", help="create the bucket and events topic the settings "
                        "name").set_defaults(run=_bootstrap)
    commands.add_parser("serve-api", help="the ML Service API (port 8000 unless "
                        "ML_ASSETS_API_PORT says otherwise)").set_defaults(run=_serve_api)
