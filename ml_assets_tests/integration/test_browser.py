"""The Dagster UI as an ML engineer uses it: `dagster dev` (webserver + daemon) on a throw-away
instance with the demo tenant, driven by a real headless Chromium (Debian's, through
Playwright's `executable_path`: nothing is downloaded).

One real training run is launched by clicking, then the run log, the asset pages and the
checks tab are read the way a person reads them. Screenshots go to ml_assets_tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ml_assets.settings import PROJECT_ROOT
from ml_assets_testing.servers import free_port, venv_bin, wait_for_http

ARTIFACTS = Path(__file__).parents[1] / "artifacts"
TENANT = "demo"
EPOCHS = 3
MLFLOW_UI = "http://mlflow.example:5000"  # only links are checked: nothing serves it here
ASSETS_BY_GROUP = {
    "features": ["churn_labels", "customer_activity", "training_features"],
    "training": ["hyperparameter_search", "trained_model"],
    "evaluation": ["evaluation_report"],
    "registry": ["registered_model"],
    "serving": ["deployed_endpoint", "batch_predictions", "triton_model_repository",
                "triton_endpoint"],
    "monitoring": ["model_monitoring"],
}
MONITORING_CHECKS = ["prediction_drift_within_2_sigma", "feature_drift", "latency_p95_within_sla",
                     "error_rate_below_1_percent", "canary_no_worse_than_production",
                     "serving_alive", "realized_quality"]
RUN_TIMEOUT_MS = 8 * 60 * 1000  # one real training run on a shared 2-core machine
UI_TIMEOUT_MS = 60 * 1000


def _chromium() -> str | None:
    for name in ("chromium", "chromium-headless-shell", "chromium-browser"):
        if path := shutil.which(name) or (shutil.which(name, path="/usr/lib/chromium")):
            return path
    return None


CHROMIUM = _chromium()
if CHROMIUM is None:
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError("CI=true but no chromium on PATH: .ci/run installs Debian's chromium")
    pytest.skip("no chromium binary (apt-get install chromium; .ci/run does)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dagster dev` on a free port: a fresh instance and state folder, tenant `demo` added,
    model_monitoring materialized once so its checks have results to show."""
    state = tmp_path_factory.mktemp("ui_state")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(ML_ASSETS_STATE_DIR=str(state), DAGSTER_HOME=str(state / "dagster"),
               ML_ASSETS_MLFLOW_UI_URL=MLFLOW_UI, RAY_AUTH_MODE="token",
               ML_ASSETS_SERVE_PORT=str(free_port()))
    subprocess.run([venv_bin("ml-assets"), "tenant", "add", TENANT, "--generate",
                    "--customers", "1000"], env=env, check=True, capture_output=True)
    port = free_port()
    log = (state / "dagster_dev.log").open("wb")
    server = subprocess.Popen(
        [venv_bin("dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/server_info", server, timeout=300)
        _graphql(url, "mutation { setNuxSeen }")  # the community sign-up dialog of a new instance
        monitoring = subprocess.run(
            [venv_bin("dagster"), "asset", "materialize", "-m", "ml_assets.definitions",
             "--select", "churn/model_monitoring", "--partition", TENANT],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert monitoring.returncode == 0, monitoring.stderr[-3000:]
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # dagster dev, its daemon and code server
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", json.dumps({"query": query}).encode(),
                                     {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def page(dagster_ui: str):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000}, base_url=dagster_ui,
                                device_scale_factor=2)  # sharp screenshots for the README
        page.set_default_timeout(UI_TIMEOUT_MS)
        yield page
        browser.close()


def _asset_graph(page) -> None:
    page.goto("/asset-groups")
    page.get_by_text("training", exact=True).filter(visible=True).first.wait_for()
    page.keyboard.press("Alt+e")  # expand all groups


def test_asset_graph_shows_every_asset_in_its_group(page):
    _asset_graph(page)
    boxes = []
    for group, assets in ASSETS_BY_GROUP.items():
        page.get_by_text(group, exact=True).filter(visible=True).first.wait_for()
        for asset in assets:
            # zoomed out, a node shortens a long name in the middle: hyperparam…_search; the
            # use case's prefix (churn/) may show
            label = re.compile(rf"^(churn/)?({re.escape(asset)}|{re.escape(asset[:6])}\S*…"
                               rf"\S*{re.escape(asset[-6:])})$")
            node = page.get_by_text(label).filter(visible=True).first
            node.wait_for()
            boxes.append(node.bounding_box())
    page.wait_for_timeout(1000)  # the graph eases into its layout
    left, top = min(b["x"] for b in boxes) - 60, min(b["y"] for b in boxes) - 60
    right = max(b["x"] + b["width"] for b in boxes) + 60
    bottom = max(b["y"] + b["height"] for b in boxes) + 60
    page.screenshot(path=ARTIFACTS / "asset_graph.png", animations="disabled",
                    clip={"x": left, "y": top, "width": right - left, "height": bottom - top})


@pytest.fixture(scope="module")
def evaluated_run(page) -> str:
    """Materialize evaluation_report with everything upstream of it (trained_model and its
    features) for the demo tenant by clicking through the UI, and wait for the run to succeed.
    Returns the run id."""
    _asset_graph(page)
    page.locator(".CodeMirror").first.click()
    page.keyboard.type("+key:churn/evaluation_report")
    page.keyboard.press("Enter")
    page.get_by_role("button", name=re.compile(r"Materialize all")).first.click()
    page.get_by_text("Select a partition or create one").click()
    page.keyboard.type(TENANT)
    page.locator("[role=menu] span").filter(has_text=re.compile(rf"^{TENANT}$")).first.click()
    page.keyboard.press("Escape")
    page.get_by_text("Config", exact=True).click()  # a short training, set as a person would
    page.get_by_role("button", name="Add config").click()
    # the dialog's own editor: it mounts after its schema loads, and until then the only
    # CodeMirror on the page is the asset filter behind the dialog
    page.get_by_role("dialog").filter(has_text="Config Editor").locator(".CodeMirror").click()
    page.keyboard.insert_text(
        f"ops: {{churn__trained_model: {{config: {{epochs: {EPOCHS}, num_workers: 1}}}}}}")
    page.get_by_role("button", name="Save config").click()
    page.get_by_role("button", name="Launch 1 run").click()
    page.locator("a[href^='/runs/']", has_text="View").click()  # the "Launched run" toast
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    page.get_by_text("Success", exact=True).first.wait_for(timeout=RUN_TIMEOUT_MS)
    return run_id


def test_run_log_shows_each_epoch_as_it_finishes(page, evaluated_run):
    page.goto(f"/runs/{evaluated_run}")
    page.get_by_placeholder(re.compile("Filter")).first.fill("epoch ")
    for epoch in range(1, EPOCHS + 1):
        page.get_by_text(re.compile(rf"epoch {epoch}/{EPOCHS} train_loss=\d")).first.wait_for()
    page.screenshot(path=ARTIFACTS / "training_run_log.png", animations="disabled")


def test_evaluation_report_page_shows_plot_table_and_mlflow_link(page, evaluated_run):
    page.goto(f"/assets/churn/evaluation_report?partition={TENANT}")
    _assert_mlflow_run_link(page)
    page.get_by_text("holdout_roc_auc", exact=True).wait_for()  # numeric: Dagster plots it
    report = page.get_by_role("row").filter(has_text="report").first
    # the markdown cell fills in after its row appears: expect retries until the table is there
    expect(report).to_contain_text(re.compile(r"roc_auc\s+0\.\d+\s+0\.\d+"),
                                   use_inner_text=True, timeout=UI_TIMEOUT_MS)
    plot_row = page.get_by_role("row").filter(has_text="roc_and_calibration")
    plot_row.scroll_into_view_if_needed()
    plot_row.get_by_text("[Show Markdown]").click()
    plot = page.get_by_role("img", name="holdout ROC and calibration")
    plot.wait_for()
    # decoded and drawn, not a broken-image icon
    assert plot.evaluate("img => img.complete ? img.naturalWidth : 0") > 300
    page.screenshot(path=ARTIFACTS / "evaluation_report.png", animations="disabled")
    page.get_by_role("button", name="Close").click()


def _assert_mlflow_run_link(page) -> None:
    link = page.locator(f"a[href^='{MLFLOW_UI}/#/experiments/']").first
    link.wait_for()
    href = link.get_attribute("href")
    assert re.fullmatch(rf"{re.escape(MLFLOW_UI)}/#/experiments/\d+/runs/[0-9a-f]{{32}}", href)


def test_trained_model_page_links_its_mlflow_run(page, evaluated_run):
    page.goto(f"/assets/churn/trained_model?partition={TENANT}")
    _assert_mlflow_run_link(page)
    page.get_by_text("val_roc_auc", exact=True).wait_for()


def test_checks_tab_lists_monitoring_checks_with_their_last_result(page):
    page.goto("/assets/churn/model_monitoring?view=checks")
    page.get_by_text(f"Checks ({len(MONITORING_CHECKS)})").wait_for()
    for check in MONITORING_CHECKS:
        page.get_by_placeholder("Filter checks").fill(check)
        # the list item: its (maybe shortened) name and the last result
        page.get_by_text(re.compile(r"^(Succeeded|Failed)$")).first.click()
        page.get_by_text(check, exact=True).filter(visible=True).first.wait_for()  # in full
        page.get_by_text(re.compile(r"^(Passed|Failed)$")).first.wait_for()
        page.get_by_text(TENANT, exact=True).first.wait_for()  # the partition it ran for
    page.get_by_placeholder("Filter checks").fill("")
    page.screenshot(path=ARTIFACTS / "monitoring_checks.png", animations="disabled")
