"""Table printing and JSON results shared by the benchmarks."""

import json
import platform
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


@contextmanager
def timer(out: dict, key: str):
    started = time.perf_counter()
    yield
    out[key] = time.perf_counter() - started


def report(name: str, columns: list[str], rows: list[dict], notes: dict) -> None:
    """Print a markdown table and write it, with the machine and notes, as JSON."""
    print(f"\n### {name}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    for key, value in notes.items():
        print(f"- {key}: {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"name": name, "machine": platform.node(), "python": platform.python_version(),
         "rows": rows, "notes": notes}, indent=2, default=str))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)
