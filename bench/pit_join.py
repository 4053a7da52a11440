"""Point-in-time join of a tenant's label rows to its activity features: the project's Feast
path against a raw DuckDB ASOF JOIN on the same parquet (the floor) and pandas merge_asof, in
the same run. Each path runs in its own process, so its peak RSS is its own; the Feast result
must equal the floor's row for row (same rows, same last-known values, same nulls).

    python -m bench.pit_join [--labels 100000 1000000] [--customers 50000]
"""

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from bench.common import in_child, report, timed_join
from ml_assets import use_case
from ml_assets.schema import ENTITY, FEATURES, LABEL, LABEL_TIMESTAMP, TIMESTAMP

TENANT = "bench"
PATHS = ("feast", "feast_stock_duckdb", "duckdb_asof", "pandas_merge_asof")
TTL_DAYS = 90  # the feature view's ttl (ml_assets/defs/churn/defs.yaml), applied by every path


def write_data(directory: Path, customers: int, labels: int) -> Path:
    """Activity (customers x 10 snapshots) and `labels` label rows, as the tenant's parquet."""
    from ml_assets.data.churn_data import ChurnDataSpec, write

    spec = ChurnDataSpec(customers=customers, snapshots_per_customer=10,
                         labels_per_customer=max(1, labels // customers))
    write(TENANT, spec, directory)
    return directory


def feast_join(raw: Path, workdir: Path, store_class: type | None = None) -> pd.DataFrame:
    """What training_features does: read the labels, join them through FeastStore."""
    from ml_assets.resources.feast import FeastStore
    from ml_assets.tenants import Tenant

    feast = (store_class or FeastStore)(root_dir=str(workdir / "feast"), raw_data_dir=str(raw))
    tenant, churn = Tenant(TENANT), use_case.load("churn")
    labels = pd.read_parquet(feast.source_path(tenant, churn, churn.label.name)).rename(
        columns={LABEL_TIMESTAMP: TIMESTAMP})
    return feast.historical_features(tenant, churn, labels)


def feast_stock_join(raw: Path, workdir: Path) -> pd.DataFrame:
    """The same, on Feast's stock duckdb store (ibis range join + window): the gap closed."""
    from feast import FeatureStore
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig

    from ml_assets.resources.feast import FeastStore
    from ml_assets.tenants import Tenant
    from ml_assets.use_case import UseCase

    class StockDuckDBFeast(FeastStore):
        def store(self, tenant: Tenant, use_case: UseCase) -> FeatureStore:
            config = super().store(tenant, use_case).config
            return FeatureStore(config=config.model_copy(
                update={"offline_config": DuckDBOfflineStoreConfig()}))

    return feast_join(raw, workdir, StockDuckDBFeast)


def duckdb_join(raw: Path, workdir: Path) -> pd.DataFrame:
    import duckdb

    features = ", ".join(
        f"CASE WHEN a.{TIMESTAMP} >= l.{LABEL_TIMESTAMP} - INTERVAL {TTL_DAYS} DAY "
        f"THEN a.{f} END AS {f}" for f in FEATURES)
    return duckdb.connect().sql(f"""
        SELECT l.{ENTITY}, l.{LABEL_TIMESTAMP} AS {TIMESTAMP}, l.{LABEL}, {features}
        FROM read_parquet('{raw / TENANT / "churn" / "churn_labels.parquet"}') l
        ASOF LEFT JOIN read_parquet('{raw / TENANT / "churn" / "customer_activity.parquet"}') a
          ON l.{ENTITY} = a.{ENTITY} AND l.{LABEL_TIMESTAMP} >= a.{TIMESTAMP}
    """).df()


def pandas_join(raw: Path, workdir: Path) -> pd.DataFrame:
    labels = pd.read_parquet(raw / TENANT / "churn" / "churn_labels.parquet").rename(
        columns={LABEL_TIMESTAMP: TIMESTAMP})
    activity = pd.read_parquet(raw / TENANT / "churn" / "customer_activity.parquet").rename(
        columns={TIMESTAMP: "feature_timestamp"})
    joined = pd.merge_asof(
        labels.sort_values(TIMESTAMP, kind="stable"),
        activity.sort_values("feature_timestamp", kind="stable"),
        left_on=TIMESTAMP, right_on="feature_timestamp", by=ENTITY, direction="backward",
        tolerance=pd.Timedelta(days=TTL_DAYS))
    return joined.drop(columns="feature_timestamp")


JOINS = {"feast": feast_join, "feast_stock_duckdb": feast_stock_join,
         "duckdb_asof": duckdb_join, "pandas_merge_asof": pandas_join}


def run_one(path: str, raw: Path, out: Path, repeats: int) -> dict:
    """In a child process: one untimed join (imports, lazy backends, page cache: feast's
    imports alone take 5-20 s), then `repeats` timed ones, each on a fresh Feast repo."""
    join = JOINS[path]
    if path.startswith("feast"):
        import ml_assets.data.feature_repo.offline_store  # noqa: F401
        import ml_assets.resources.feast  # noqa: F401
    else:
        import duckdb  # noqa: F401
    return timed_join(join, raw, out, [ENTITY, TIMESTAMP, LABEL, *FEATURES], repeats)


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[[ENTITY, TIMESTAMP, LABEL, *FEATURES]].copy()
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    frame[ENTITY] = frame[ENTITY].astype("int64")
    frame[LABEL] = frame[LABEL].astype("int64")
    frame[FEATURES] = frame[FEATURES].astype("float64")
    return frame.sort_values([ENTITY, TIMESTAMP, LABEL, *FEATURES], kind="stable",
                             na_position="first").reset_index(drop=True)


def mismatch(got: pd.DataFrame, floor: pd.DataFrame) -> str | None:
    """None when every row of got equals the floor's (values and nulls), else what differs."""
    if len(got) != len(floor):
        return f"{len(got):,} rows, floor {len(floor):,}"
    got, floor = canonical(got), canonical(floor)
    keys = [ENTITY, TIMESTAMP, LABEL]
    if not got[keys].equals(floor[keys]):
        return "different label rows"
    nulls = got[FEATURES].isna() != floor[FEATURES].isna()
    values = (got[FEATURES] - floor[FEATURES]).abs() > 1e-9
    bad = int((nulls | values).any(axis=1).sum())
    return f"{bad:,} rows differ" if bad else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--customers", type=int, default=50_000)
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
            raw = write_data(Path(tmp) / "raw", args.customers, n)
            activity = raw / TENANT / "churn" / "customer_activity.parquet"
            activity_rows = len(pd.read_parquet(activity, columns=[ENTITY]))
            results = {p: in_child("bench.pit_join", p, raw, Path(tmp) / f"{p}.parquet",
                                   args.repeats) for p in PATHS}
            floor = pd.read_parquet(Path(tmp) / "duckdb_asof.parquet")
            for path in PATHS:
                result = results[path]
                wrong = mismatch(pd.read_parquet(Path(tmp) / f"{path}.parquet"), floor)
                rows.append({
                    "label_rows": n, "activity_rows": activity_rows, "path": path,
                    "seconds": result["seconds"], "median_s": result["median_s"],
                    "vs_floor": result["seconds"] / results["duckdb_asof"]["seconds"],
                    "peak_rss_gb": result["peak_rss_gb"],
                    "rss_growth_gb": result["rss_growth_gb"], "rows": result["rows"],
                    "equals_floor": "yes" if wrong is None else f"NO: {wrong}",
                })
    report("pit_join", ["label_rows", "activity_rows", "path", "seconds", "median_s", "vs_floor",
                        "peak_rss_gb", "rss_growth_gb", "rows", "equals_floor"], rows,
           {"floor": "DuckDB ASOF LEFT JOIN on the same parquet, 90-day ttl",
            "seconds": f"best of {args.repeats} (median beside it), in one process per "
            "path after one untimed join", "rss_growth_gb": "peak RSS over the process's RSS "
            "after its imports", "features": len(FEATURES),
            "goal": "feast: all rows, equal to the floor, within 2x of it at 1M label rows"})


if __name__ == "__main__":
    main()
