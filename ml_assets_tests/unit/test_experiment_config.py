"""The experiment config refuses what would reach a path or a run name unchecked."""

import pytest
from pydantic import ValidationError

from ml_assets.training.config import ExperimentConfig


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "-lead", "a" * 101, "x y", "..",
                                  "a\\b", "é"])
def test_experiment_names_that_are_not_plain_words_are_refused(name):
    with pytest.raises(ValidationError, match="experiment_name"):
        ExperimentConfig(experiment_name=name)


@pytest.mark.parametrize("name", ["churn-mlp", "A_1", "x", "a" * 100])
def test_plain_experiment_names_pass(name):
    assert ExperimentConfig(experiment_name=name).experiment_name == name
