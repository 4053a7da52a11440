"""trained_model logs the reference profile monitoring reads: from the train rows and the model's
own predictions on them (uses the session's graph run: no training of its own)."""

import numpy as np
import pytest

from ml_assets.monitoring import statistics as monitoring
from ml_assets.monitoring.window import load_profile
from ml_assets.schema import FEATURES
from ml_assets.tenants import Tenant


def test_each_registered_version_has_the_profile_of_its_train_rows(graph, resources):
    made = graph["acme"]
    train = made["training_features"].query("split == 'train'")
    version = made["registered_model"]["version"]
    profile = load_profile(resources["mlflow"], Tenant("acme"), version)
    assert profile["rows"] == len(train)
    for name in FEATURES:
        column = profile["features"][name]
        assert column["count"] == train[name].notna().sum()
        assert column["mean"] == pytest.approx(train[name].mean())
    prediction = profile["prediction"]
    assert prediction["count"] == len(train) and 0 < prediction["mean"] < 1
    assert np.all(np.diff(prediction["sample"]) >= 0)
    assert monitoring.validate_profile(profile, FEATURES) is profile
