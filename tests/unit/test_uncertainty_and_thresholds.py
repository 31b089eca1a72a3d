"""Bootstrap intervals, paired comparisons, expected cost and tuned thresholds, against references
computed independently (scikit-learn, brute force, a row-resampling bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, precision_recall_curve

from trainer_ext import Objective
from trainer_ext.metrics import confusion_matrix, count_metrics, metric_keys
from trainer_ext.selection import Candidate, select_best
from trainer_ext.thresholds import apply_threshold, tune_threshold
from trainer_ext.uncertainty import batched_count_metric, bootstrap_interval, expected_cost, paired_bootstrap

SLUGS2 = ["negative", "positive"]


@settings(max_examples=150, deadline=None)
@given(
    c=st.integers(2, 5),
    data=st.data(),
)
def test_batched_metrics_equal_count_metrics(c, data):
    n = data.draw(st.integers(1, 40))
    labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    preds = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    slugs = [f"c{i}" for i in range(c)]
    cm = confusion_matrix(labels, preds, c)
    reference = count_metrics(cm, slugs)
    for key in metric_keys(slugs, with_scores=False):
        assert batched_count_metric(cm, key, slugs)[0] == pytest.approx(reference[key], abs=1e-12), key


def test_expected_cost_against_sklearn_confusion_matrix():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.where(rng.random(500) < 0.8, y, 1 - y)
    cost = np.array([[0.0, 1.0], [50.0, 0.0]])
    cm = sk_confusion_matrix(y, p, labels=[0, 1])
    assert expected_cost(confusion_matrix(y, p, 2), cost)[()] == pytest.approx((cm * cost).sum() / 500)
    prior = np.array([0.995, 0.005])
    reweighted = sum(prior[i] * sum(cm[i, j] / cm[i].sum() * cost[i, j] for j in range(2)) for i in range(2))
    assert expected_cost(confusion_matrix(y, p, 2), cost, prior)[()] == pytest.approx(reweighted)


def test_bootstrap_interval_is_seeded_and_brackets_the_value():
    cm = np.array([[80, 20], [10, 90]])
    a = bootstrap_interval(cm, "recall_negative", SLUGS2, resamples=500, seed=7)
    b = bootstrap_interval(cm, "recall_negative", SLUGS2, resamples=500, seed=7)
    assert a == b
    assert a.value == pytest.approx(0.8)
    assert a.low <= a.value <= a.high
    assert a.high - a.low < 0.25


def test_count_resampling_matches_row_resampling_distribution():
    """Multinomial draws over the cells are the row bootstrap: compare quantiles with an explicit row bootstrap."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = np.where(rng.random(400) < 0.85, y, 1 - y)
    counts = bootstrap_interval(confusion_matrix(y, p, 2), "f1_positive", SLUGS2, resamples=4000, seed=2)
    idx = np.random.default_rng(3).integers(0, 400, (4000, 400))  # explicit row resamples
    ys, ps = y[idx], p[idx]
    tp = ((ys == 1) & (ps == 1)).sum(axis=1)
    values = 2 * tp / ((ys == 1).sum(axis=1) + (ps == 1).sum(axis=1))
    assert values[0] == pytest.approx(f1_score(ys[0], ps[0], zero_division=0.0))
    low, high = np.percentile(values, [2.5, 97.5])
    assert counts.low == pytest.approx(low, abs=0.01) and counts.high == pytest.approx(high, abs=0.01)


def test_paired_bootstrap_sign_and_win_share():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    good = np.where(rng.random(2000) < 0.95, y, 1 - y)
    bad = np.where(rng.random(2000) < 0.80, y, 1 - y)
    comparison = paired_bootstrap(y, good, bad, "accuracy", SLUGS2, greater_is_better=True, names=("good", "bad"))
    assert comparison.difference == pytest.approx((good == y).mean() - (bad == y).mean())
    assert comparison.low > 0 and comparison.win_share == 1.0
    reverse = paired_bootstrap(y, bad, good, "accuracy", SLUGS2, greater_is_better=True)
    assert reverse.win_share == 0.0 and reverse.high < 0
    same = paired_bootstrap(y, good, good, "accuracy", SLUGS2, greater_is_better=True)
    assert same.difference == 0.0 and same.win_share == 0.0
    # lower-is-better keys are signed so that positive still favours `first`
    cost = paired_bootstrap(y, good, bad, "expected_cost", SLUGS2, greater_is_better=False, cost_matrix=np.array([[0, 1], [5, 0]]))
    assert cost.difference > 0 and cost.win_share == 1.0


def test_bootstrap_speed_is_independent_of_rows():
    """1,000,000 examples: counts are resampled, not rows (the figure is printed by scripts/bench_bootstrap.py)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1_000_000)
    p = np.where(rng.random(y.size) < 0.9, y, 1 - y)
    interval = bootstrap_interval(confusion_matrix(y, p, 2), "recall_negative", SLUGS2, resamples=1000)
    assert interval.low < interval.value < interval.high


def test_significance_keeps_incumbent_when_difference_is_noise():
    y = np.array([0] * 10 + [1] * 10)
    first = y.copy()
    first[:3] = 1  # recall_negative 0.7
    second = y.copy()
    second[:2] = 1  # recall_negative 0.8: one example better
    predictions = {"checkpoint-1": first, "checkpoint-2": second}

    def p_value(challenger, incumbent):
        comparison = paired_bootstrap(y, predictions[challenger], predictions[incumbent], "recall_negative", SLUGS2, greater_is_better=True)
        return 1 - comparison.win_share

    candidates = [
        Candidate(name, int(name.split("-")[1]), count_metrics(confusion_matrix(y, p, 2), SLUGS2))
        for name, p in predictions.items()
    ]
    plain = select_best(candidates, Objective("recall_negative"))
    assert plain.best_checkpoint == "checkpoint-2"
    strict = select_best(candidates, Objective("recall_negative", require_significance=True), p_value=p_value)
    assert strict.best_checkpoint == "checkpoint-1"
    assert "not significantly" in strict.reason
    with pytest.raises(ValueError, match="p_value"):
        select_best(candidates, Objective("recall_negative", require_significance=True))


# ---- thresholds ------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_tuned_f1_equals_best_f1_over_sklearn_precision_recall_curve(data):
    n = data.draw(st.integers(2, 60))
    labels = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    if labels.min() == labels.max():
        labels[0] = 1 - labels[0]
    scores = np.array(data.draw(st.lists(st.sampled_from([0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 0.999]), min_size=n, max_size=n)))
    choice = tune_threshold(labels, scores, Objective("f1_positive"), SLUGS2)
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    assert choice.objective_value == pytest.approx(f1.max(), abs=1e-12)
    assert np.array_equal(choice.predictions, apply_threshold(scores, choice.threshold))
    assert f1_score(labels, choice.predictions, zero_division=0.0) == pytest.approx(choice.objective_value, abs=1e-12)


def test_threshold_under_constraint_and_brute_force():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1)
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"])
    choice = tune_threshold(labels, scores, objective, SLUGS2)
    # brute force over every distinct cut
    best = None
    for t in np.concatenate((np.unique(scores), [np.nextafter(scores.max(), 2)])):
        pred = (scores >= t).astype(int)
        m = count_metrics(confusion_matrix(labels, pred, 2), SLUGS2)
        if m["precision_negative"] >= 0.8 and (best is None or m["recall_negative"] > best):
            best = m["recall_negative"]
    assert choice.feasible and choice.objective_value == pytest.approx(best)
    final = count_metrics(confusion_matrix(labels, choice.predictions, 2), SLUGS2)
    assert final["precision_negative"] >= 0.8


def test_threshold_for_expected_cost_prefers_catching_costly_class():
    labels = np.array([0] * 90 + [1] * 10)
    scores = np.concatenate([np.linspace(0.0, 0.6, 90), np.linspace(0.3, 1.0, 10)])
    cheap_misses = Objective("expected_cost", cost_matrix=[[0, 1], [50, 0]])
    choice = tune_threshold(labels, scores, cheap_misses, SLUGS2)
    assert choice.predictions[labels == 1].all()  # a missed positive costs 50: every positive is caught
    assert choice.threshold <= 0.3


def test_apply_threshold_from_logits():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [0.1, 0.0]])
    assert apply_threshold(logits, 0.5, from_logits=True).tolist() == [0, 1, 0]
    assert apply_threshold(logits, 0.4, from_logits=True).tolist() == [0, 1, 1]
