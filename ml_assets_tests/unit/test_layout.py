"""The package layout holds: definitions on top of plain domain packages, never the reverse."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ml_assets"
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _is_definition_module(path: Path) -> bool:
    relative = path.relative_to(PACKAGE).parts
    return relative[0] in ("defs", "definitions.py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_definitions_import_defs_and_no_product_module_imports_tests(path):
    imported = _imported(path)
    if not _is_definition_module(path):
        assert not {m for m in imported if m.startswith("ml_assets.defs")}, path
    assert not {m for m in imported if m.startswith(("ml_assets_tests", "ml_assets_testing"))}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_is_short(path):
    assert len(path.read_text().splitlines()) < MAX_LINES


@pytest.mark.parametrize("module", ["ml_assets.serving.app", "ml_assets.tenants",
                                    "ml_assets.serving.request", "ml_assets.registry.stages",
                                    "ml_assets.consumers.process"])
def test_the_request_path_and_domain_packages_import_no_dagster(module):
    """The Serve replica loads ml_assets.serving.app: Dagster there is seconds of start-up."""
    code = f"import sys, {module}; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
