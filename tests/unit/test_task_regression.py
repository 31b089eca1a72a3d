"""Regression against scikit-learn and scipy."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk

from trainer_ext.errors import ConfigurationError
from trainer_ext.objectives import Objective
from trainer_ext.scoring import SetResult, score_checkpoint
from trainer_ext.tasks import task_for_model, task_from_record
from trainer_ext.tasks.regression import REGRESSION_KEYS, Regression


@pytest.mark.parametrize("seed", range(5))
def test_every_key_equals_its_reference(seed):
    rng = np.random.default_rng(seed)
    n = 20 + 50 * seed
    y = rng.normal(size=n)
    if seed == 4:
        y = np.round(y)  # ties for spearman
    p = y + rng.normal(scale=0.5 + seed, size=n)
    got = Regression().metrics(y, p, p)
    assert list(got) == list(REGRESSION_KEYS)
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, p), rel=1e-12)
    assert got["mse"] == pytest.approx(sk.mean_squared_error(y, p), rel=1e-12)
    assert got["rmse"] == pytest.approx(sk.root_mean_squared_error(y, p), rel=1e-12)
    assert got["median_absolute_error"] == pytest.approx(sk.median_absolute_error(y, p), rel=1e-12)
    assert got["r2"] == pytest.approx(sk.r2_score(y, p), rel=1e-10)
    assert got["pearson"] == pytest.approx(stats.pearsonr(y, p)[0], rel=1e-10)
    assert got["spearman"] == pytest.approx(stats.spearmanr(y, p)[0], rel=1e-10)


def test_constant_cases():
    y = np.array([1.0, 1.0, 1.0])
    got = Regression().metrics(y, y, y)
    assert got["r2"] == sk.r2_score(y, y) == 1.0
    assert math.isnan(got["pearson"]) and math.isnan(got["spearman"])
    assert Regression().metrics(y, y + 1, y + 1)["r2"] == sk.r2_score(y, y + 1)


def test_row_bootstrap_interval_and_record_statistics():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    p = y + rng.normal(scale=0.3, size=200)
    scores = score_checkpoint({None: SetResult(y, p, p)}, Regression(), Objective("mae", bootstrap_resamples=200))
    assert scores.metrics["mae"] == pytest.approx(sk.mean_absolute_error(y, p))
    assert scores.interval.low <= scores.metrics["mae"] <= scores.interval.high
    assert np.asarray(sum(scores.confusion_matrices.values())).tolist() == []


@pytest.mark.parametrize("bad", ["3.0", [1.0, 2.0], float("nan"), None, True])
def test_bad_labels(bad):
    with pytest.raises(ConfigurationError, match=r"eval_dataset: the model is a regression model .* labels\[1\] is"):
        Regression().read_labels([0.5, bad], argument="eval_dataset")


@pytest.mark.parametrize(
    "objective", [Objective("accuracy"), Objective("mae", constraints=["recall_label_0 >= 0.5"])]
)
def test_class_keys_refused_listing_regression_keys(objective):
    with pytest.raises(ConfigurationError, match=r"need classes.*Regression keys: \['mae', 'mse'"):
        Regression().check_objective(objective)


def test_threshold_tuning_refused():
    with pytest.raises(ConfigurationError, match="tune_threshold"):
        Regression().check_objective(Objective("mae", tune_threshold=True))


class _Config:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Model:
    def __init__(self, **kw):
        self.config = _Config(**kw)


def test_detection():
    assert isinstance(task_for_model(_Model(num_labels=1, id2label={0: "LABEL_0"})), Regression)
    assert isinstance(task_for_model(_Model(problem_type="regression", num_labels=1, id2label={0: "LABEL_0"})), Regression)
    assert isinstance(task_from_record("regression", ["LABEL_0"]), Regression)
