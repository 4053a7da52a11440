"""Point-in-time join of the spend use case (string key, two feature views with their own
timestamps and ttls) through TenantFeatureStore, against a DuckDB ASOF floor on the same
parquet: one ASOF LEFT JOIN per view, each nulling what is older than its ttl. Each path runs in
its own process, so its peak RSS is its own; the Feast result must equal the floor's row for
row (same rows, same last-known values, same nulls).

    python -m bench.pit_join_two_views [--labels 10000000] [--labels-per-account 10]
"""

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from bench.common import in_child, report, timed_join
from ml_assets import use_case

TENANT = "bench"
PATHS = ("feast", "duckdb_asof")
SPEND = use_case.load("spend")
KEY, LABEL_TS, LABEL = SPEND.key, SPEND.label.timestamp_field, SPEND.label.column


def write_data(raw: Path, labels: int, labels_per_account: int) -> dict[str, Path]:
    from ml_assets.data.spend_data import SpendDataSpec, write

    spec = SpendDataSpec(accounts=max(10, labels // labels_per_account),
                         labels_per_account=labels_per_account)
    return write(TENANT, spec, raw)


def source(raw: Path, name: str) -> Path:
    from ml_assets.data import sources
    from ml_assets.tenants import Tenant

    return sources.source_path(raw, Tenant(TENANT), SPEND, name)


def feast_join(raw: Path, workdir: Path) -> pd.DataFrame:
    """What the use case's training features do: read the labels, join them through Feast."""
    from ml_assets.resources.feast import FeastStore
    from ml_assets.tenants import Tenant

    feast = FeastStore(root_dir=str(workdir / "feast"), raw_data_dir=str(raw))
    labels = pd.read_parquet(source(raw, SPEND.label.name))
    return feast.historical_features(Tenant(TENANT), SPEND, labels)


def duckdb_join(raw: Path, workdir: Path) -> pd.DataFrame:
    import duckdb

    query = (f"SELECT {KEY}, {LABEL_TS}, {LABEL} "
             f"FROM read_parquet('{source(raw, SPEND.label.name)}')")
    columns = [KEY, LABEL_TS, LABEL]
    for view in SPEND.feature_views:
        ts = view.timestamp_field
        fresh = ", ".join(
            f"CASE WHEN f.{ts} >= l.{LABEL_TS} - INTERVAL {view.ttl_days} DAY "
            f"THEN f.{name} END AS {name}" for name in view.fields)
        query = f"""
            SELECT {', '.join(f'l.{c}' for c in columns)}, {fresh}
            FROM ({query}) l
            ASOF LEFT JOIN read_parquet('{source(raw, view.name)}') f
              ON l.{KEY} = f.{KEY} AND l.{LABEL_TS} >= f.{ts}"""
        columns += list(view.fields)
    return duckdb.connect().sql(query).df()


JOINS = {"feast": feast_join, "duckdb_asof": duckdb_join}


def run_one(path: str, raw: Path, out: Path, repeats: int) -> dict:
    """In a child process: one untimed join (imports, lazy backends, page cache), then
    `repeats` timed ones, each on a fresh Feast repo."""
    join = JOINS[path]
    if path == "feast":
        import ml_assets.data.feature_repo.offline_store  # noqa: F401
        import ml_assets.resources.feast  # noqa: F401
    else:
        import duckdb  # noqa: F401
    return timed_join(join, raw, out, [KEY, LABEL_TS, LABEL, *SPEND.features], repeats)


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[[KEY, LABEL_TS, LABEL, *SPEND.features]].copy()
    frame[KEY] = frame[KEY].astype("string[pyarrow]")
    frame[LABEL_TS] = pd.to_datetime(frame[LABEL_TS], utc=True).astype("datetime64[ns, UTC]")
    frame[[LABEL, *SPEND.features]] = frame[[LABEL, *SPEND.features]].astype("float64")
    return frame.sort_values([KEY, LABEL_TS, LABEL], kind="stable").reset_index(drop=True)


def mismatch(got: pd.DataFrame, floor: pd.DataFrame) -> str | None:
    """None when every row of got equals the floor's (values and nulls), else what differs."""
    if len(got) != len(floor):
        return f"{len(got):,} rows, floor {len(floor):,}"
    got, floor = canonical(got), canonical(floor)
    keys = [KEY, LABEL_TS, LABEL]
    if not got[keys].equals(floor[keys]):
        return "different label rows"
    features = SPEND.features
    nulls = got[features].isna() != floor[features].isna()
    values = (got[features] - floor[features]).abs() > 1e-9
    bad = int((nulls | values).any(axis=1).sum())
    return f"{bad:,} rows differ" if bad else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, nargs="+", default=[10_000_000])
    parser.add_argument("--labels-per-account", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.raw, args.out, args.repeats)))
        return
    rows = []
    for n in args.labels:
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_data(Path(tmp) / "raw", n, args.labels_per_account)
            sizes = {name: len(pd.read_parquet(p, columns=[KEY])) for name, p in paths.items()}
            results = {p: in_child("bench.pit_join_two_views", p, Path(tmp) / "raw",
                                   Path(tmp) / f"{p}.parquet", args.repeats) for p in PATHS}
            floor = pd.read_parquet(Path(tmp) / "duckdb_asof.parquet")
            for path in PATHS:
                result = results[path]
                wrong = mismatch(pd.read_parquet(Path(tmp) / f"{path}.parquet"), floor)
                rows.append({
                    "label_rows": n, "usage_rows": sizes["account_usage"],
                    "billing_rows": sizes["account_billing"], "path": path,
                    "seconds": result["seconds"], "median_s": result["median_s"],
                    "vs_floor": result["seconds"] / results["duckdb_asof"]["seconds"],
                    "peak_rss_gb": result["peak_rss_gb"],
                    "rss_growth_gb": result["rss_growth_gb"], "rows": result["rows"],
                    "equals_floor": "yes" if wrong is None else f"NO: {wrong}",
                })
    report("pit_join_two_views",
           ["label_rows", "usage_rows", "billing_rows", "path", "seconds", "median_s",
            "vs_floor", "peak_rss_gb", "rss_growth_gb", "rows", "equals_floor"], rows,
           {"use case": "spend: string key, account_usage (30-day ttl) and account_billing "
            "(62-day ttl), each with its own timestamp",
            "floor": "DuckDB: one ASOF LEFT JOIN per view on the same parquet, ttl applied",
            "seconds": f"best of {args.repeats} (median beside it), in one process per path "
            "after one untimed join; feast includes reading the label file into pandas",
            "rss_growth_gb": "peak RSS over the process's RSS after its imports",
            "features": len(SPEND.features),
            "goal": "feast: all rows, equal to the floor, within 1.5x of it"})


if __name__ == "__main__":
    main()
