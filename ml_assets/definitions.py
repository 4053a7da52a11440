"""The code location: the defs/ folder plus the resources and executor the environment calls for."""

from pathlib import Path

import dagster as dg

from ml_assets.executor import executor_for
from ml_assets.resources import build_resources
from ml_assets.settings import load_settings


@dg.definitions
def defs() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(resources=build_resources(settings), executor=executor_for(settings)),
    )
