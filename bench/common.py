"""Table printing and JSON results shared by the benchmarks."""

import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def timed_join(join: Callable[[Path, Path], object], raw: Path, out: Path, columns: list[str],
               repeats: int) -> dict:
    """In a child process whose libraries are imported: one untimed join (lazy backends, page
    cache), then `repeats` timed ones, each in a fresh work folder; the last result's `columns`
    written to `out` for the parent to compare."""
    before = rss_bytes()  # the memory of the imported libraries: not the join's
    with tempfile.TemporaryDirectory() as workdir:
        join(raw, Path(workdir))
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            joined = join(raw, Path(workdir))
            times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    joined[columns].to_parquet(out, index=False)
    return {"seconds": min(times), "median_s": statistics.median(times),
            "peak_rss_gb": peak / 2**30, "rss_growth_gb": (peak - before) / 2**30,
            "rows": len(joined)}


def in_child(module: str, path: str, raw: Path, out: Path, repeats: int) -> dict:
    """`python -m module --one path ...` in its own process, so its peak RSS is its own."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--one", path, "--raw", str(raw), "--out", str(out),
         "--repeats", str(repeats)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{path} join failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def local_ray_and_tracking(workdir: Path):
    """A local Ray (4 logical CPUs on the 2 cores) and an MlflowClient on a throw-away sqlite
    store with the experiment `bench`: what the training benches run against."""
    import ray
    from mlflow import MlflowClient

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    client.create_experiment("bench", artifact_location=(workdir / "a").as_uri())
    return client
