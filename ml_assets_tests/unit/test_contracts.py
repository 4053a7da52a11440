"""The source files' data contracts: each kind of bad data fails its blocking check with the
problem named, and nothing downstream runs (no join, no training, no MLflow run)."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_assets import names, use_case
from ml_assets.data import churn_data, contracts, spend_data
from ml_assets.definitions import defs
from ml_assets.defs.features.contracts import check_name
from ml_assets.resources import build_resources
from ml_assets.schema import ENTITY, LABEL, LABEL_TIMESTAMP, TIMESTAMP
from ml_assets.settings import load_settings

SPEC = churn_data.ChurnDataSpec(customers=100)
CHURN, SPEND = use_case.load("churn"), use_case.load("spend")
ACTIVITY = contracts.for_source(CHURN, "customer_activity")
LABELS = contracts.for_source(CHURN, "churn_labels")


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
    paths = churn_data.write(tenant, SPEC, tmp_path)
    activity_path, labels_path = paths["customer_activity"], paths["churn_labels"]
    path = activity_path if which == "activity" else labels_path
    if breaks is None:
        path.write_bytes(b"")
    elif breaks == "garbage":
        path.write_bytes(b"PAR1 not really")
    else:
        breaks(pd.read_parquet(path)).to_parquet(path, index=False)
    return activity_path, labels_path


def test_generated_data_holds_both_contracts(tmp_path):
    paths = churn_data.write("acme", SPEC, tmp_path)
    assert contracts.violations(paths["customer_activity"], ACTIVITY) == []
    assert contracts.violations(paths["churn_labels"], LABELS) == []
    assert contracts.violations(_write(tmp_path, _repeated), ACTIVITY) == []


def _write(tmp_path, breaks):
    activity = churn_data.write("acme", SPEC, tmp_path)["customer_activity"]
    breaks(pd.read_parquet(activity)).to_parquet(activity, index=False)
    return activity


@pytest.mark.parametrize("kind", BAD)
def test_each_kind_of_bad_data_is_named(tmp_path, kind):
    which, breaks, rule, named = BAD[kind]
    paths = write(tmp_path, "acme", which, breaks)
    path, contract = (paths[0], ACTIVITY) if which == "activity" else (paths[1], LABELS)
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
        result = defs().resolve_job_def(names.model_job("churn")).execute_in_process(
            instance=instance, partition_key="acme", resources=build_resources(settings),
            raise_on_error=False)
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        materialized = [e.asset_key.to_user_string()
                        for e in result.get_asset_materialization_events()]
    broken = checks[check_name("customer_activity" if which == "activity" else "churn_labels")]
    assert not result.success and not broken.passed
    assert broken.severity == dg.AssetCheckSeverity.ERROR
    assert named in broken.description and rule in broken.metadata["rules_broken"].value
    assert materialized == []  # no join, no training, no registration
    assert not (tmp_path / "mlflow").exists() or not list((tmp_path / "mlflow").rglob("meta*"))


def test_contracts_follow_the_declaration():
    assert (ACTIVITY.key, ACTIVITY.key_type, ACTIVITY.timestamp) == (
        "customer_id", "int", "event_timestamp")
    assert ACTIVITY.numeric == tuple(CHURN.view("customer_activity").fields)
    assert (LABELS.timestamp, LABELS.binary, LABELS.real) == ("label_timestamp", ("churned",), ())
    billing = contracts.for_source(SPEND, "account_billing")
    assert (billing.key, billing.key_type, billing.timestamp) == (
        "account_id", "string", "invoice_timestamp")
    assert (billing.numeric, billing.integer) == (("mrr", "discount_pct"),
                                                  ("overdue_invoices", "plan_tier"))
    labels = contracts.for_source(SPEND, "spend_labels")
    assert (labels.binary, labels.real) == ((), ("spend_90d",))
    with pytest.raises(KeyError, match="no source 'nope'.*'account_usage'"):
        contracts.for_source(SPEND, "nope")


SPEND_SPEC = spend_data.SpendDataSpec(accounts=50)


def test_generated_spend_data_holds_its_contracts(tmp_path):
    paths = spend_data.write("acme", SPEND_SPEC, tmp_path)
    assert list(paths) == ["account_usage", "account_billing", "spend_labels"]
    for name, path in paths.items():
        assert contracts.violations(path, contracts.for_source(SPEND, name)) == [], name


def _int_keys(frame):
    frame["account_id"] = range(len(frame))
    return frame


def _fractional_seats(frame):
    frame["active_seats"] = frame["active_seats"].astype("float64")
    frame.loc[:3, "active_seats"] = 2.5
    return frame


def _missing_seats(frame):  # a null int field is a missing value: allowed
    frame["active_seats"] = frame["active_seats"].astype("float64")
    frame.loc[:3, "active_seats"] = np.nan
    return frame


def _spend(value):
    def breaks(frame):
        frame["spend_90d"] = frame["spend_90d"].astype(object)
        frame.loc[:1, "spend_90d"] = value
        if isinstance(value, str):
            frame["spend_90d"] = frame["spend_90d"].astype(str)
        return frame
    return breaks


SPEND_BAD = {  # (source, how to break it, the rule broken, what the message names)
    "integer keys for a string key": ("account_usage", _int_keys, "column_types",
                                      "not string keys"),
    "2.5 seats": ("account_usage", _fractional_seats, "column_types",
                  "4 values are not integers"),
    "naive invoice times": ("account_billing", lambda f: f.assign(
        invoice_timestamp=f["invoice_timestamp"].dt.tz_localize(None)), "timezone",
        "invoice_timestamp"),
    "conflicting invoices": ("account_billing", lambda f: pd.concat(
        [f, f.iloc[[0]].assign(mrr=f["mrr"].iloc[0] + 1)], ignore_index=True),
        "conflicting_duplicates", "(account_id, invoice_timestamp)"),
    "null spend": ("spend_labels", _spend(None), "label_domain",
                   "2 labels are not finite numbers"),
    "infinite spend": ("spend_labels", _spend(np.inf), "label_domain", "spend_90d"),
    "spend as text": ("spend_labels", _spend("lots"), "label_domain", "spend_90d"),
    "missing label column": ("spend_labels", lambda f: f.drop(columns="spend_90d"),
                             "required_columns", "spend_90d"),
}


@pytest.mark.parametrize("kind", SPEND_BAD)
def test_each_kind_of_bad_spend_data_is_named(tmp_path, kind):
    source, breaks, rule, named = SPEND_BAD[kind]
    path = spend_data.write("acme", SPEND_SPEC, tmp_path)[source]
    breaks(pd.read_parquet(path)).to_parquet(path, index=False)
    found = contracts.violations(path, contracts.for_source(SPEND, source))
    broken = [v for v in found if v.rule == rule]
    assert broken and named in str(broken[0]), found
    assert [v.rule for v in found] == [rule], found  # nothing else flagged


def test_a_missing_int_feature_is_allowed(tmp_path):
    path = spend_data.write("acme", SPEND_SPEC, tmp_path)["account_usage"]
    _missing_seats(pd.read_parquet(path)).to_parquet(path, index=False)
    assert contracts.violations(path, contracts.for_source(SPEND, "account_usage")) == []
