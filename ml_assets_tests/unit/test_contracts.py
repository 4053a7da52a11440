"""The source files' data contracts: each kind of bad data fails its blocking check with the
problem named, and nothing downstream runs (no join, no training, no MLflow run)."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_assets import names
from ml_assets.data import churn_data, contracts
from ml_assets.definitions import defs
from ml_assets.resources import build_resources
from ml_assets.schema import ENTITY, LABEL, LABEL_TIMESTAMP, TIMESTAMP
from ml_assets.settings import load_settings

SPEC = churn_data.ChurnDataSpec(customers=100)


def _labels_nan(labels):
    labels[LABEL] = labels[LABEL].astype(float)
    labels.loc[:2, LABEL] = np.nan
    return labels


def _labels_two(labels):
    labels.loc[:4, LABEL] = 2
    return labels


def _activity_abc(activity):
    activity["plan_tier"] = activity["plan_tier"].astype("string")  # numbers as text, and:
    activity.loc[:1, "plan_tier"] = "abc"
    return activity


def _naive(activity):
    activity[TIMESTAMP] = activity[TIMESTAMP].dt.tz_localize(None)
    return activity


def _conflicting(activity):
    clash = activity.iloc[[0]].copy()
    clash["monthly_spend"] = clash["monthly_spend"] + 100
    return pd.concat([activity, clash], ignore_index=True)


def _repeated(activity):  # the same row twice is the same fact: allowed
    return pd.concat([activity, activity.iloc[[0]]], ignore_index=True)


BAD = {  # (which file, how to break it, the rule broken, what the message names)
    "missing column": ("activity", lambda a: a.drop(columns=["nps_score"]),
                       "required_columns", "nps_score"),
    "NaN labels": ("labels", _labels_nan, "label_domain", LABEL),
    "label 2.0": ("labels", _labels_two, "label_domain", "5 labels are not 0 or 1"),
    "naive timestamps": ("activity", _naive, "timezone", TIMESTAMP),
    "conflicting duplicates": ("activity", _conflicting, "conflicting_duplicates",
                               f"{ENTITY}, {TIMESTAMP}"),
    "empty label file": ("labels", lambda labels: labels.iloc[:0], "non_empty", "no rows"),
    "0-byte file": ("labels", None, "readable", "0 bytes"),
    "not parquet": ("activity", "garbage", "readable", "not readable parquet"),
    "'abc' in a numeric column": ("activity", _activity_abc, "column_types", "plan_tier"),
    "string label times": ("labels", lambda frame: frame.assign(
        **{LABEL_TIMESTAMP: "yesterday"}),
                           "column_types", LABEL_TIMESTAMP),
}


def write(tmp_path, tenant: str, which: str, breaks) -> tuple:
    activity_path, labels_path = churn_data.write(tenant, SPEC, tmp_path)
    path = activity_path if which == "activity" else labels_path
    if breaks is None:
        path.write_bytes(b"")
    elif breaks == "garbage":
        path.write_bytes(b"PAR1 not really")
    else:
        breaks(pd.read_parquet(path)).to_parquet(path, index=False)
    return activity_path, labels_path


def test_generated_data_holds_both_contracts(tmp_path):
    activity, labels = churn_data.write("acme", SPEC, tmp_path)
    assert contracts.violations(activity, contracts.ACTIVITY) == []
    assert contracts.violations(labels, contracts.LABELS) == []
    assert contracts.violations(_write(tmp_path, _repeated), contracts.ACTIVITY) == []


def _write(tmp_path, breaks):
    activity, _ = churn_data.write("acme", SPEC, tmp_path)
    breaks(pd.read_parquet(activity)).to_parquet(activity, index=False)
    return activity


@pytest.mark.parametrize("kind", BAD)
def test_each_kind_of_bad_data_is_named(tmp_path, kind):
    which, breaks, rule, named = BAD[kind]
    paths = write(tmp_path, "acme", which, breaks)
    path, contract = (paths[0], contracts.ACTIVITY) if which == "activity" else (
        paths[1], contracts.LABELS)
    found = contracts.violations(path, contract)
    broken = [v for v in found if v.rule == rule]
    assert broken and named in str(broken[0]), found
    assert broken[0].rows > 0 or rule in ("readable", "non_empty")


@pytest.mark.parametrize("kind", ["NaN labels", "naive timestamps", "0-byte file",
                                  "'abc' in a numeric column"])
def test_a_broken_contract_stops_the_job_before_any_join_or_training(tmp_path, kind):
    which, breaks, rule, named = BAD[kind]
    settings = load_settings({"ML_ASSETS_STATE_DIR": str(tmp_path)})
    write(settings.raw_data_dir, "acme", which, breaks)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
        result = defs().resolve_job_def(names.CHURN_MODEL_JOB).execute_in_process(
            instance=instance, partition_key="acme", resources=build_resources(settings),
            raise_on_error=False)
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        materialized = [e.asset_key.to_user_string()
                        for e in result.get_asset_materialization_events()]
    broken = checks[names.ACTIVITY_CONTRACT if which == "activity" else names.LABELS_CONTRACT]
    assert not result.success and not broken.passed
    assert broken.severity == dg.AssetCheckSeverity.ERROR
    assert named in broken.description and rule in broken.metadata["rules_broken"].value
    assert materialized == []  # no join, no training, no registration
    assert not (tmp_path / "mlflow").exists() or not list((tmp_path / "mlflow").rglob("meta*"))
