"""MultiLabel against scikit-learn on multilabel-indicator arrays (zero_division=0)."""

import numpy as np
import pytest
from sklearn import metrics as sk

from trainer_ext.errors import ConfigurationError
from trainer_ext.objectives import Objective
from trainer_ext.tasks import TASK_NAMES, task_for_model, task_from_record
from trainer_ext.tasks.multi_label import MultiLabel
from trainer_ext.thresholds import tune_threshold

NAMES = ["billing", "Bug Report", "urgent", "feature"]


def _data(seed, n=200, labels=4):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < rng.uniform(0.1, 0.6, labels)).astype(np.int64)
    scores = np.clip(0.55 * y + rng.random((n, labels)) * 0.6 - 0.1, 0, 1).astype(np.float32)
    return y, scores


@pytest.mark.parametrize("seed", range(6))
def test_every_key_equals_scikit_learn(seed):
    task = MultiLabel(NAMES)
    y, scores = _data(seed, n=30 + 40 * seed)
    if seed == 5:
        y[:, 2] = 0  # a label with no example: roc_auc NaN, average_precision 0, recall 0
    predictions = task.apply_threshold(scores, 0.5)
    got = task.metrics(y, predictions, scores)
    assert list(got) == task.metric_keys()
    p, r, f, s = sk.precision_recall_fscore_support(y, predictions, average=None, zero_division=0)
    for i, slug in enumerate(task.slugs):
        assert got[f"precision_{slug}"] == pytest.approx(p[i], abs=1e-12)
        assert got[f"recall_{slug}"] == pytest.approx(r[i], abs=1e-12)
        assert got[f"f1_{slug}"] == pytest.approx(f[i], abs=1e-12)
        assert got[f"support_{slug}"] == s[i]
        if 0 < y[:, i].sum() < len(y):
            assert got[f"roc_auc_{slug}"] == pytest.approx(sk.roc_auc_score(y[:, i], scores[:, i]), abs=1e-12)
        else:
            assert np.isnan(got[f"roc_auc_{slug}"])
        if y[:, i].sum():
            ap = sk.average_precision_score(y[:, i], scores[:, i])
            assert got[f"average_precision_{slug}"] == pytest.approx(ap, abs=1e-12)
        else:
            assert got[f"average_precision_{slug}"] == 0.0
    for average in ("micro", "macro", "weighted"):
        ap, ar, af, _ = sk.precision_recall_fscore_support(y, predictions, average=average, zero_division=0)
        if average != "weighted":
            assert got[f"precision_{average}"] == pytest.approx(ap, abs=1e-12)
            assert got[f"recall_{average}"] == pytest.approx(ar, abs=1e-12)
        assert got[f"f1_{average}"] == pytest.approx(af, abs=1e-12)
    assert got["f1_samples"] == pytest.approx(sk.f1_score(y, predictions, average="samples", zero_division=0), abs=1e-12)
    assert got["subset_accuracy"] == pytest.approx(sk.accuracy_score(y, predictions), abs=1e-12)
    assert got["hamming_loss"] == pytest.approx(sk.hamming_loss(y, predictions), abs=1e-12)
    assert task.statistics(y, predictions).tolist() == sk.multilabel_confusion_matrix(y, predictions).tolist()


def test_statistics_add_over_shards_and_batches():
    task = MultiLabel(NAMES)
    y, scores = _data(1)
    pred = task.apply_threshold(scores, 0.5)
    whole = task.statistics(y, pred)
    assert (task.statistics(y[:70], pred[:70]) + task.statistics(y[70:], pred[70:])).tolist() == whole.tolist()
    batch = task.statistic_values(np.stack([whole, whole]), ["f1_micro", "hamming_loss"])
    assert batch["f1_micro"].shape == (2,)
    assert batch["f1_micro"][0] == pytest.approx(sk.f1_score(y, pred, average="micro"))


def test_read_labels_multi_hot_and_names():
    task = MultiLabel(NAMES)
    got = task.read_labels([[1, 0, 0, 1], [0.0, 1.0, 1.0, 0.0], ["billing", "urgent"], ["bug_report"], []], argument="eval_dataset")
    assert got.tolist() == [[1, 0, 0, 1], [0, 1, 1, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("bad", [3, [1, 0, 1], [0, 2, 0, 0], ["nope"], "billing", [0.5, 0, 0, 1]])
def test_bad_labels_name_the_model_and_the_row(bad):
    with pytest.raises(ConfigurationError, match=r"eval_dataset: the model is multi-label with 4 labels .* labels\[1\] is"):
        MultiLabel(NAMES).read_labels([[0, 0, 0, 0], bad], argument="eval_dataset")


def test_reserved_label_slug_refused():
    with pytest.raises(ConfigurationError, match="micro"):
        MultiLabel(["Micro", "b"])


def test_per_label_thresholds_maximise_each_label_f1_and_round_trip():
    task = MultiLabel(NAMES)
    y, scores = _data(3, n=300)
    choice = tune_threshold(y, scores, Objective("f1_macro"), task)
    assert set(choice.threshold) == set(NAMES)
    for i, name in enumerate(NAMES):
        best = max(sk.f1_score(y[:, i], scores[:, i] >= t, zero_division=0) for t in np.unique(scores[:, i]))
        got = sk.f1_score(y[:, i], scores[:, i] >= choice.threshold[name], zero_division=0)
        assert got == pytest.approx(best)
    config = task.threshold_config(choice.threshold)
    assert set(config) == {"thresholds"}
    assert task.apply_threshold(scores, config).tolist() == task.apply_threshold(scores, choice.threshold).tolist()
    assert task.threshold_from_config(config) == choice.threshold


def test_objective_of_one_label_with_a_constraint_on_it():
    task = MultiLabel(NAMES)
    y, scores = _data(4, n=300)
    choice = tune_threshold(y, scores, Objective("recall_urgent", constraints=["precision_urgent >= 0.7"]), task)
    t = choice.threshold["urgent"]
    feasible = [u for u in np.unique(scores[:, 2]) if sk.precision_score(y[:, 2], scores[:, 2] >= u, zero_division=0) >= 0.7]
    best = max(sk.recall_score(y[:, 2], scores[:, 2] >= u) for u in feasible)
    assert sk.precision_score(y[:, 2], scores[:, 2] >= t) >= 0.7
    assert sk.recall_score(y[:, 2], scores[:, 2] >= t) == pytest.approx(best)


def test_paired_resample_keeps_examples_together():
    task = MultiLabel(NAMES)
    y, scores = _data(5)
    pred = task.apply_threshold(scores, 0.5)
    first, second, (obs_first, _) = task.resample_paired(y, pred, pred, resamples=50, rng=np.random.default_rng(0))
    assert first.shape == (50, 4, 2, 2) and np.array_equal(first, second)
    assert obs_first.tolist() == task.statistics(y, pred).tolist()
    assert (first.sum(axis=(2, 3)) == len(y)).all()


def test_cost_matrix_refused():
    with pytest.raises(ConfigurationError, match="single-label only"):
        MultiLabel(NAMES).check_objective(Objective("f1_micro", cost_matrix=[[0, 1], [1, 0]]))


class _Config:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Model:  # a stand-in for the config of a model only: detection reads config and class name
    def __init__(self, **kw):
        self.config = _Config(**kw)


def test_detection_and_override():
    id2label = dict(enumerate(NAMES))
    assert isinstance(task_for_model(_Model(problem_type="multi_label_classification", num_labels=4, id2label=id2label)), MultiLabel)
    single = task_for_model(_Model(problem_type="multi_label_classification", num_labels=4, id2label=id2label), task="single_label")
    assert single.name == "single_label"
    assert {"single_label", "multi_label", "token", "regression"} <= set(TASK_NAMES)
    assert isinstance(task_from_record("multi_label", NAMES), MultiLabel)
    with pytest.raises(ConfigurationError, match="task: expected one of"):
        task_for_model(_Model(num_labels=4, id2label=id2label), task="multilabel")
