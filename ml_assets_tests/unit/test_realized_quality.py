"""Quality from labels that arrive after scoring, and the CBPE estimate before they do."""

import numpy as np
import pandas as pd
import pytest

from ml_assets.monitoring import realized
from ml_assets.schema import ENTITY, LABEL, LABEL_TIMESTAMP

NOW = pd.Timestamp("2026-11-30 02:00", tz="UTC")


def scored_and_labels(rows: int, seed: int, agree: bool):
    """rows scored customers and a label for each an hour after scoring: labels drawn from
    the predicted probabilities (agree) or from their complement."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, rows)
    scored = pd.DataFrame({ENTITY: np.arange(rows), "ts": NOW - pd.Timedelta(minutes=30),
                           "prediction": p})
    y = (rng.uniform(size=rows) < (p if agree else 1 - p)).astype(float)
    labels = pd.DataFrame({ENTITY: np.arange(rows), LABEL: y,
                           LABEL_TIMESTAMP: NOW + pd.Timedelta(minutes=30)})
    return scored, labels


def outcome(scored, labels, holdout=0.8, min_rows=100):
    joined = realized.labeled_after_scoring(scored, labels, ENTITY, "ts", LABEL, LABEL_TIMESTAMP)
    return realized.realized_quality(joined, LABEL, holdout, "roc_auc", 0.05, min_rows,
                                     scored["prediction"].to_numpy())


def test_labels_that_make_the_model_worse_fail_and_good_ones_pass():
    good = outcome(*scored_and_labels(2000, 1, agree=True), holdout=0.75)
    assert good.passed and good.enough_data and good.rows == 2000
    assert good.details["realized_value"] > 0.75
    bad = outcome(*scored_and_labels(2000, 2, agree=False))
    assert bad.breached
    assert bad.observed == pytest.approx(0.8 - bad.details["realized_value"])
    assert bad.details["realized_value"] < 0.3
    assert "drop" in bad.details["reason"]


def test_only_labels_that_arrived_after_scoring_count():
    scored, labels = scored_and_labels(500, 3, agree=False)
    earlier = labels.assign(**{LABEL_TIMESTAMP: NOW - pd.Timedelta(hours=2)})
    too_early = outcome(scored, earlier)
    assert not too_early.enough_data and too_early.rows == 0
    assert "too few labeled rows" in too_early.details["reason"]
    later_half = pd.concat([earlier.iloc[:250], labels.iloc[250:]])
    assert outcome(scored, later_half).rows == 250
    other_customers = labels.assign(**{ENTITY: labels[ENTITY] + 10_000})
    assert outcome(scored, other_customers).rows == 0


def test_no_holdout_value_or_one_class_only_warns():
    scored, labels = scored_and_labels(300, 4, agree=True)
    assert not outcome(scored, labels, holdout=None).enough_data
    one_class = outcome(scored, labels.assign(**{LABEL: 1.0}))
    assert not one_class.enough_data and "one class" in one_class.details["reason"]


def test_cbpe_estimates_the_auc_of_calibrated_probabilities():
    scored, labels = scored_and_labels(20_000, 5, agree=True)
    from sklearn.metrics import roc_auc_score

    actual = roc_auc_score(labels[LABEL], scored["prediction"])
    assert realized.expected_roc_auc(scored["prediction"].to_numpy()) == pytest.approx(
        actual, abs=0.02)
    assert realized.expected_roc_auc(np.array([0.5])) is None
    assert realized.expected_roc_auc(np.array([np.nan, 0.3])) is None
    assert realized.expected_roc_auc(np.full(10, 0.5)) == pytest.approx(0.5)
