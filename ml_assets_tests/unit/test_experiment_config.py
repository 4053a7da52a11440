"""The experiment config refuses what would reach a path or a run name unchecked."""

import pytest
from pydantic import ValidationError

from ml_assets.training.config import (
    ExperimentConfig,
    LightGBMConfig,
    XGBoostConfig,
    experiment_config_for,
)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "-lead", "a" * 101, "x y", "..",
                                  "a\\b", "é"])
def test_experiment_names_that_are_not_plain_words_are_refused(name):
    with pytest.raises(ValidationError, match="experiment_name"):
        ExperimentConfig(experiment_name=name)


@pytest.mark.parametrize("name", ["churn-mlp", "A_1", "x", "a" * 100])
def test_plain_experiment_names_pass(name):
    assert ExperimentConfig(experiment_name=name).experiment_name == name


@pytest.mark.parametrize("family, field, value", [
    ("xgboost", "hidden_sizes", [8]),       # a torch field
    ("xgboost", "num_leaves", 31),          # a LightGBM field
    ("lightgbm", "min_child_weight", 1.0),  # an XGBoost field
    ("torch_mlp", "num_boost_round", 10),   # a boosting field
])
def test_a_field_of_another_family_is_refused_naming_it(family, field, value):
    with pytest.raises(ValidationError, match=rf"{family}\.{field}\s+Extra inputs"):
        experiment_config_for(family, {field: value})


@pytest.mark.parametrize("family, field, value", [
    ("xgboost", "max_depth", 0), ("lightgbm", "num_leaves", 1),
    ("xgboost", "learning_rate", 0), ("lightgbm", "checkpoint_every_rounds", 0),
    ("xgboost", "subsample", 1.5), ("torch_mlp", "log_every_n_steps", 0),
])
def test_a_bad_value_is_refused_naming_the_field(family, field, value):
    with pytest.raises(ValidationError, match=rf"{family}\.{field}"):
        experiment_config_for(family, {field: value})


def test_the_family_picks_the_config_and_its_defaults():
    xgb = experiment_config_for("xgboost", {"num_boost_round": 5, "max_depth": 3})
    assert isinstance(xgb, XGBoostConfig)
    assert (xgb.family, xgb.num_boost_round, xgb.max_depth, xgb.checkpoint_every_rounds) == \
        ("xgboost", 5, 3, 10)
    assert isinstance(experiment_config_for("lightgbm"), LightGBMConfig)
    torch = experiment_config_for("torch_mlp", {"epochs": 2})
    assert isinstance(torch, ExperimentConfig) and torch.epochs == 2


def test_an_unknown_or_contradicting_family_is_refused():
    with pytest.raises(ValueError, match="unknown model family 'catboost'"):
        experiment_config_for("catboost", {})
    with pytest.raises(ValueError, match="family 'lightgbm' but 'xgboost'"):
        experiment_config_for("xgboost", {"family": "lightgbm"})


def test_the_torch_config_refuses_an_unknown_field():
    with pytest.raises(ValidationError, match="num_leaves"):
        ExperimentConfig(num_leaves=31)
