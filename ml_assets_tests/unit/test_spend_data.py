"""The spend generator: deterministic, string keys, two views with their own cadences, a
regression label that depends on the features as of label time, drift."""

import numpy as np
import pandas as pd
import pytest

from ml_assets import use_case
from ml_assets.data.spend_data import SpendDataSpec, generate, spend_90d, write

SPEND = use_case.load("spend")
SMALL = SpendDataSpec(accounts=300)
USAGE, BILLING = SPEND.view("account_usage"), SPEND.view("account_billing")


def test_same_tenant_and_spec_give_identical_frames():
    for first, second in zip(generate("acme", SMALL), generate("acme", SMALL), strict=True):
        pd.testing.assert_frame_equal(first, second)


def test_tenants_and_seeds_differ():
    acme = generate("acme", SMALL)[0]
    globex = generate("globex", SMALL)[0]
    reseeded = generate("acme", SpendDataSpec(accounts=300, seed=8))[0]
    assert not np.allclose(acme["storage_gb"], globex["storage_gb"])
    assert not np.allclose(acme["storage_gb"], reseeded["storage_gb"])


def test_columns_types_and_cadences_follow_the_declaration():
    usage, billing, labels = generate("acme", SMALL)
    assert list(usage) == [SPEND.key, USAGE.timestamp_field, *USAGE.fields]
    assert list(billing) == [SPEND.key, BILLING.timestamp_field, *BILLING.fields]
    assert list(labels) == [SPEND.key, SPEND.label.timestamp_field, SPEND.label.column]
    assert len(usage) == 300 * SMALL.snapshots and len(labels) == 300 * SMALL.labels_per_account
    assert usage[SPEND.key].str.fullmatch(r"acct-\d{6}").all()
    for frame, view in ((usage, USAGE), (billing, BILLING)):
        assert str(frame[view.timestamp_field].dt.tz) == "UTC"
        for name, kind in view.fields.items():
            assert frame[name].dtype == ("int64" if kind == "int" else "float64"), name
    # billing is monthly per account, from a first invoice in month 0-2
    gaps = billing.groupby(SPEND.key)[BILLING.timestamp_field].diff().dropna()
    assert set(gaps) == {pd.Timedelta(days=30)}
    assert billing.groupby(SPEND.key).size().between(5, 7).all()
    assert 0 < usage["api_calls_7d"].isna().mean() < 0.05  # NaN-able floats occur
    assert (labels[SPEND.label.column] >= 0).all() and labels[SPEND.label.column].std() > 100


def test_the_label_is_a_function_of_the_features_as_of_label_time():
    usage, billing, labels = generate("acme", SMALL)
    labels = labels.sort_values(SPEND.label.timestamp_field)

    def joined(direction: str) -> pd.DataFrame:
        frame = labels
        for source, view in ((usage, USAGE), (billing, BILLING)):
            frame = pd.merge_asof(frame, source.sort_values(view.timestamp_field),
                                  left_on=SPEND.label.timestamp_field,
                                  right_on=view.timestamp_field, by=SPEND.key,
                                  direction=direction)
        return frame

    def error(frame: pd.DataFrame) -> float:
        return float(np.median(np.abs(np.log(frame[SPEND.label.column] + 1)
                                      - np.log(spend_90d(frame[SPEND.features]) + 1))))

    correct, leaky = error(joined("backward")), error(joined("forward"))
    assert correct < 0.1  # only the label's multiplicative noise
    assert leaky > 1.5 * correct


def test_drift_shifts_the_features():
    base = generate("acme", SMALL)
    drifted = generate("acme", SpendDataSpec(accounts=300, drift=2.0))
    for frame, column in ((0, "storage_gb"), (1, "mrr"), (0, "active_seats")):
        shift = drifted[frame][column].mean() - base[frame][column].mean()
        assert shift > 0.75 * base[frame][column].std(), column


@pytest.mark.parametrize("bad", [dict(accounts=5), dict(snapshots=0),
                                 dict(labels_per_account=0), dict(days=30)])
def test_bad_specs_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SpendDataSpec(**bad)


def test_write_puts_the_declared_files_under_the_tenants_spend_folder(tmp_path):
    paths = write("acme", SMALL, tmp_path)
    folder = tmp_path / "acme" / "spend"
    assert paths == {"account_usage": folder / "account_usage.parquet",
                     "account_billing": folder / "account_billing.parquet",
                     "spend_labels": folder / "spend_labels.parquet"}
    usage, _, labels = generate("acme", SMALL)
    back = pd.read_parquet(paths["spend_labels"])
    assert back[SPEND.key].tolist() == labels[SPEND.key].tolist()
    np.testing.assert_array_equal(back[SPEND.label.column], labels[SPEND.label.column])
    assert len(pd.read_parquet(paths["account_usage"])) == len(usage)
