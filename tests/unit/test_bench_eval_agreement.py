"""The benchmark's agreement check (``scripts/bench_eval.py``) catches every kind of disagreement between a
method and the callback, per task, and the token layout keeps exactly the real tokens. numpy only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_eval  # noqa: E402


def _report(probabilities, predictions, index=None):
    probabilities, predictions = np.asarray(probabilities), np.asarray(predictions)
    index = np.arange(len(predictions) if predictions.ndim else 0) if index is None else np.asarray(index)
    return {"probabilities": probabilities, "predictions": predictions, "index": index}


def _probabilities(n, c, seed=0):
    p = np.random.default_rng(seed).random((n, c)).astype(np.float32) + 0.01
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("task", ["label_words", "token"])
def test_classes_agree_within_tolerance_and_a_flipped_argmax_is_reported(task):
    p = _probabilities(6, 3)
    reference = _report(p, p.argmax(1))
    shifted = p.astype(np.float64) + 1e-7
    assert bench_eval.check_agreement(reference, _report(shifted, p.argmax(1)), task)[:3] == (True, 0, pytest.approx(1e-7))
    flipped = p.argmax(1).copy()
    flipped[4] = (flipped[4] + 1) % 3
    equal, differing, _, margin = bench_eval.check_agreement(reference, _report(p, flipped), task)
    top = np.sort(p[4])
    assert (equal, differing) == (False, 1) and margin == pytest.approx(top[-1] - top[-2])


def test_multi_label_compares_every_label_and_the_margin_is_the_distance_to_one_half():
    p = np.array([[0.2, 0.7], [0.55, 0.1], [0.9, 0.45]], dtype=np.float32)
    predictions = (p >= 0.5).astype(np.int64)
    reference = _report(p, predictions)
    assert bench_eval.check_agreement(reference, _report(p, predictions), "multi_label") == (True, 0, 0.0, pytest.approx(np.nan, nan_ok=True))
    other = predictions.copy()
    other[1, 0], other[2, 1] = 0, 1
    equal, differing, _, margin = bench_eval.check_agreement(reference, _report(p, other), "multi_label")
    assert (equal, differing) == (False, 2) and margin == pytest.approx(0.05, abs=1e-6)


def test_regression_compares_the_values_only():
    values = np.array([0.5, -1.25, 3.0])
    reference = _report(values, values)
    equal, differing, max_diff, _ = bench_eval.check_agreement(reference, _report(values + [0, 2e-3, 0], values + [0, 2e-3, 0]), "regression")
    assert (equal, differing) == (True, 0) and max_diff == pytest.approx(2e-3)


@pytest.mark.parametrize("task", ["multi_label", "token", "regression", "label_words"])
def test_outputs_of_another_shape_are_a_disagreement(task):
    p = _probabilities(5, 2)
    equal, differing, max_diff, _ = bench_eval.check_agreement(_report(p, p.argmax(1)), _report(p[:4], p[:4].argmax(1)), task)
    assert (equal, differing, max_diff) == (False, -1, float("inf"))


def test_token_layout_keeps_each_examples_real_tokens_in_order():
    lengths = np.array([3, 1, 2])
    predictions = np.array([[1, 2, 0], [4, -100, -100], [0, 3, -100]])
    scores = np.arange(3 * 3 * 2, dtype=np.float32).reshape(3, 3, 2)
    flat_scores, flat_predictions, index = bench_eval.comparable_output("token", scores, predictions, lengths)
    assert flat_predictions.tolist() == [1, 2, 0, 4, 0, 3]
    assert flat_scores.tolist() == [scores[0, 0].tolist(), scores[0, 1].tolist(), scores[0, 2].tolist(),
                                    scores[1, 0].tolist(), scores[2, 0].tolist(), scores[2, 1].tolist()]
    assert index.tolist() == [0, 1, 2]


def test_single_label_check_is_unchanged():
    p = _probabilities(4, 2)
    other = p.argmax(1).copy()
    other[0] = 1 - other[0]
    equal, differing, _, margin = bench_eval.check_agreement(_report(p, p.argmax(1)), _report(p, other))
    assert (equal, differing) == (False, 1) and margin == pytest.approx(abs(p[0, 0] - p[0, 1]))
