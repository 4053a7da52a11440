"""`make bench`: every benchmark that exists, each in its own process, then the project's whole
performance table: bench/results/performance.md, and README's performance section between its
markers, with the machine it ran on.

    python -m bench.run [--only pit_join graph ...] [--render-only]
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS

# run order: graph writes what no_platform compares against; others' benches run if present
BENCHES = ["pit_join", "pit_join_two_views", "graph", "tenants", "no_platform", "training",
           "many_models", "gbm_training",
           "events", "drift", "monitoring_history", "serving", "serving_tenants", "triton"]
README = Path(__file__).parent.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({model}), {memory / 2**20:.0f} GiB, "
            f"Python {platform.python_version()}")


def settle(below: float = 1.5, at_most_s: float = 60) -> None:
    """Wait (a while at most) for the last benchmark's processes to wind down: one that starts
    while the 4-tenant graph's Ray workers still exit measures them too."""
    deadline = time.monotonic() + at_most_s
    while os.getloadavg()[0] > below and time.monotonic() < deadline:
        time.sleep(5)


def run(names: list[str]) -> dict[str, dict]:
    """Each benchmark as `python -m bench.NAME`; {name: {seconds, ok, load before/after}}."""
    ran = {}
    for name in names:
        if importlib.util.find_spec(f"bench.{name}") is None:
            continue
        settle()
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", f"bench.{name}"])
        ran[name] = {"seconds": time.perf_counter() - started, "ok": done.returncode == 0,
                     "load_before": load, "load_after": os.getloadavg()[0]}
    return ran


def table(result: dict) -> str:
    rows = result["rows"]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    lines += [f"- {k}: {v}" for k, v in result.get("notes", {}).items()]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def render(ran: dict[str, dict]) -> str:
    """The performance section: one table per benchmark result found in bench/results."""
    parts = [f"Measured on {machine()}; each table says when it ran."]
    if ran:
        parts.append("Each benchmark's wall time (1-minute load average before -> after: "
                     "other work on the machine makes every absolute number noisy; the ratios "
                     "are against a floor measured in the same run): " + ", ".join(
                         f"{n} {r['seconds']:.0f} s ({r['load_before']:.1f} -> "
                         f"{r['load_after']:.1f}){'' if r['ok'] else ' FAILED'}"
                         for n, r in ran.items()) + ".")
    for name in BENCHES:
        path = RESULTS / f"{name}.json"
        if path.exists():
            result = json.loads(path.read_text())
            at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))
            parts.append(f"#### {name} (`bench/{name}.py`, {at})\n\n{table(result)}")
    return "\n\n".join(parts)


def update_readme(section: str) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} markers for the performance table")
    head, rest = text.split(START, 1)
    README.write_text(f"{head}{START}\n{section}\n{END}{rest.split(END, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these")
    parser.add_argument("--render-only", action="store_true",
                        help="no runs: rebuild the table from bench/results/*.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    ran = {} if args.render_only else run(args.only or BENCHES)
    section = render(ran)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "performance.md").write_text(section + "\n")
    update_readme(section)
    print(f"\nbench: {time.perf_counter() - started:.0f} s; table in bench/results/"
          "performance.md and README.md")
    return 0 if all(r["ok"] for r in ran.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
