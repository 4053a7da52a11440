"""What the command groups share: the Dagster instance of the state folder, the registry
client and event sink of the settings, and who the caller is."""

from __future__ import annotations

import getpass
import os
import shutil

from ml_assets.settings import PROJECT_ROOT, Settings


def instance(settings: Settings):
    """The Dagster instance under the settings' DAGSTER_HOME (created from dagster.yaml)."""
    import dagster as dg

    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", config)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    return dg.DagsterInstance.get()


def registry(settings: Settings):
    """(MlflowClient, LifecycleEvents) of the settings."""
    from ml_assets.resources import build_resources

    resources = build_resources(settings)
    return resources["mlflow"].client(), resources["events"]


def actor() -> str:
    """Who a CLI action is recorded as, in the ledger and the events."""
    return f"cli:{getpass.getuser()}"
