"""What the Dagster UI shows besides values: progress lines while work runs, inline plots, links
into the MLflow UI (for the tenant's own runs only)."""

from __future__ import annotations

import base64
import io
import re
import threading
import time

import numpy as np
import pytest

from ml_assets.defs.evaluation.assets import _report_png, png_markdown
from ml_assets.resources.mlflow import MlflowRegistry
from ml_assets.tenants import Tenant
from ml_assets.training.progress import streamed_lines

UI = "http://mlflow.internal:5000"


def test_streamed_lines_logs_each_line_while_the_work_still_runs():
    lines = ["epoch 1 (an earlier attempt's)"]
    logged: list[str] = []
    seen_during_work = threading.Event()

    def log(line: str) -> None:
        logged.append(line)
        if line == "epoch 2":
            seen_during_work.set()

    with streamed_lines(lambda: list(lines), log, interval_s=0.05):
        lines.append("epoch 2")
        assert seen_during_work.wait(5), "a finished epoch was not logged before the work ended"
        lines.append("epoch 3")  # lands after the last poll: the exit flush logs it
    assert logged == ["epoch 2", "epoch 3"]


def test_streamed_lines_survives_a_failing_poll_and_keeps_the_work_error():
    calls = {"n": 0}

    def poll() -> list[str]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("tracking server restarting")
        return ["epoch 1"] if calls["n"] > 2 else []

    logged: list[str] = []
    with pytest.raises(ValueError, match="the work's own error"):
        with streamed_lines(poll, logged.append, interval_s=0.05):
            time.sleep(0.3)
            raise ValueError("the work's own error")
    assert any("tracking server restarting" in line for line in logged)
    assert "epoch 1" in logged


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> MlflowRegistry:
    root = tmp_path_factory.mktemp("mlflow")
    return MlflowRegistry(tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                          artifact_root=(root / "artifacts").as_uri(), ui_url=UI + "/")


def test_run_link_points_at_the_run_in_its_tenants_experiment(registry):
    acme = Tenant("acme")
    run_id = registry.start_run(acme, "links", tags={})
    link = registry.run_links(acme, run_id)["mlflow_run"]
    assert link.value == f"{UI}/#/experiments/{registry.experiment_id(acme)}/runs/{run_id}"


def test_run_link_refuses_another_tenants_run(registry):
    run_id = registry.start_run(Tenant("acme"), "links", tags={})
    with pytest.raises(PermissionError, match="not in tenant 'globex'"):
        registry.run_links(Tenant("globex"), run_id)


def test_no_mlflow_ui_no_links(registry):
    bare = MlflowRegistry(tracking_uri=registry.tracking_uri)
    assert bare.run_links(Tenant("acme"), "any") == {}
    assert bare.version_links("churn-acme", "3") == {}


def test_version_link_names_the_registered_version(registry):
    link = registry.version_links("churn model acme", "3")["mlflow_model_version"]
    assert link.value == f"{UI}/#/models/churn%20model%20acme/versions/3"


def test_evaluation_plot_is_an_inline_png_in_markdown():
    from PIL import Image

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = np.clip(y * 0.6 + rng.random(400) * 0.4, 0, 1)
    markdown = png_markdown(_report_png(y, {"candidate": good, "baseline": rng.random(400)}),
                            "holdout ROC and calibration").value
    match = re.fullmatch(r"!\[holdout ROC and calibration\]\(data:image/png;base64,(.+)\)",
                         markdown)
    assert match
    image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert image.format == "PNG"
    assert image.width > 2 * image.height * 0.8  # two panels side by side: ROC, calibration


@pytest.fixture(scope="module")
def drift_profile() -> dict:
    from ml_assets_testing import synthetic_log

    return synthetic_log.reference("acme")


def _check_metadata(profile: dict, spec) -> dict:
    from ml_assets.defs.monitoring.assets import check_result
    from ml_assets.monitoring.window import evaluate
    from ml_assets.resources.monitoring import MonitoringThresholds
    from ml_assets_testing import synthetic_log

    _, found = evaluate(synthetic_log.generate("acme", spec), profile, spec.version,
                        MonitoringThresholds())
    return {o.check: check_result(o, {}, spec.version).metadata for o in found}


def test_feature_drift_table_lists_every_feature_the_shifted_one_first(drift_profile):
    from ml_assets.monitoring.statistics import FEATURE_DRIFT
    from ml_assets.schema import FEATURES
    from ml_assets_testing.synthetic_log import LogSpec

    metadata = _check_metadata(drift_profile, LogSpec(feature_shift={"monthly_spend": 0.5}))
    table = metadata[FEATURE_DRIFT]["feature_drift_table"].value.splitlines()
    rows = table[2:]
    assert sorted(row.split(" | ")[0].strip("| ") for row in rows) == sorted(FEATURES)
    assert rows[0].startswith("| monthly_spend | **yes** |")
    assert sum("**yes**" in row for row in rows) == 1


def test_prediction_histogram_shows_where_the_mass_moved(drift_profile):
    from ml_assets.monitoring.statistics import PREDICTION_DRIFT
    from ml_assets_testing.synthetic_log import LogSpec

    def window_shares(spec) -> list[float]:
        table = _check_metadata(drift_profile, spec)[PREDICTION_DRIFT]["prediction_histogram"]
        rows = table.value.splitlines()[2:]
        return [float(row.split(" | ")[2].rstrip("%")) / 100 for row in rows]

    steady, shifted = window_shares(LogSpec()), window_shares(LogSpec(prediction_shift=3.0))
    assert len(steady) == len(shifted) >= 5
    assert max(steady) < 0.2  # about a tenth in each reference decile
    assert shifted[-1] > 0.5  # shifted up: most predictions above the reference's top decile
