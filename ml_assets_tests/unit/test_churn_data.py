"""The generator: deterministic, tunable class balance and drift, labels as of label time."""

import numpy as np
import pandas as pd
import pytest

from ml_assets.data.churn_data import ChurnDataSpec, generate, write
from ml_assets.schema import ENTITY, FEATURES, LABEL, LABEL_TIMESTAMP, TIMESTAMP

SMALL = ChurnDataSpec(customers=500)


def test_same_tenant_and_spec_give_identical_frames():
    a1, l1 = generate("acme", SMALL)
    a2, l2 = generate("acme", SMALL)
    pd.testing.assert_frame_equal(a1, a2)
    pd.testing.assert_frame_equal(l1, l2)


def test_tenants_and_seeds_differ():
    acme, _ = generate("acme", SMALL)
    globex, _ = generate("globex", SMALL)
    reseeded, _ = generate("acme", ChurnDataSpec(customers=500, seed=8))
    assert not np.allclose(acme[FEATURES], globex[FEATURES])
    assert not np.allclose(acme[FEATURES], reseeded[FEATURES])


def test_shapes_and_columns():
    activity, labels = generate("acme", SMALL)
    assert len(activity) == 500 * SMALL.snapshots_per_customer
    assert len(labels) == 500 * SMALL.labels_per_customer
    assert list(activity.columns) == [ENTITY, *FEATURES, TIMESTAMP]
    assert list(labels.columns) == [ENTITY, LABEL_TIMESTAMP, LABEL]
    assert str(activity[TIMESTAMP].dt.tz) == "UTC"


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5])
def test_class_balance_follows_the_knob(rate):
    _, labels = generate("acme", ChurnDataSpec(customers=3000, churn_rate=rate))
    assert abs(labels[LABEL].mean() - rate) < 0.03


def test_drift_shifts_every_feature():
    base, _ = generate("acme", SMALL)
    drifted, _ = generate("acme", ChurnDataSpec(customers=500, drift=2.0))
    for feature in ("monthly_spend", "nps_score", "avg_session_minutes"):
        assert drifted[feature].mean() - base[feature].mean() > 1.5 * base[feature].std() / 2


@pytest.mark.parametrize("bad", [dict(customers=5), dict(churn_rate=0.0),
                                 dict(snapshots_per_customer=0)])
def test_bad_specs_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ChurnDataSpec(**bad)


def test_write_puts_the_declared_files_under_the_tenants_churn_folder(tmp_path):
    paths = write("acme", SMALL, tmp_path)
    folder = tmp_path / "acme" / "churn"
    assert paths == {"customer_activity": folder / "customer_activity.parquet",
                     "churn_labels": folder / "churn_labels.parquet"}
    assert len(pd.read_parquet(paths["churn_labels"])) == 1000
    assert len(pd.read_parquet(paths["customer_activity"])) == 500 * SMALL.snapshots_per_customer
