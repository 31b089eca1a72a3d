"""The rules layer: the key registry, the one batched count implementation, the vectorised constraint
violation, Objective's field round trip, the SingleLabel task and scoring through it. References:
scikit-learn, and the scalar rules by hand. Pure: no torch, no transformers."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from trainer_ext.errors import ConfigurationError, TrainerExtWarning
from trainer_ext.metrics import (
    KEY_RULES,
    confusion_matrix,
    count_metric_values,
    count_metrics,
    metric_direction,
    metric_keys,
    metric_kind,
    score_based,
)
from trainer_ext.objectives import Constraint, Objective, constraint_violation, is_score_based, known_direction
from trainer_ext.scoring import SetResult, available_keys, check_objective, score_checkpoint
from trainer_ext.tasks import SingleLabel, Task, task_for_model, task_from_record

REPO_ROOT = Path(__file__).resolve().parents[2]
SLUGS = ["negative", "neutral", "very_positive"]


# ---- the key registry ---------------------------------------------------------------------------


def test_every_rule_is_reached_by_the_keys_it_describes():
    for rule in KEY_RULES:
        key = f"{rule.name}_negative" if rule.per_class else rule.name
        assert metric_direction(key) is rule.greater_is_better, key
        assert metric_kind(key) == rule.kind, key


def test_objectives_ask_the_registry():
    keys = metric_keys(SLUGS, with_scores=True) + ["expected_cost", "eval_loss", "my_score", "support_x"]
    for key in keys + [f"reviews_2025_{k}" for k in keys]:
        assert known_direction(key) is metric_direction(key), key
        assert is_score_based(key) == score_based(key) == (metric_kind(key) == "score"), key
    assert known_direction("reviews_2025_recall_negative") is True
    assert metric_direction("reviews_2025_recall_negative", SLUGS) is None  # exact for these classes


def test_kinds_of_every_single_label_key():
    assert {metric_kind(k, SLUGS) for k in metric_keys(SLUGS, with_scores=False)} == {"count"}
    score_keys = set(metric_keys(SLUGS, with_scores=True)) - set(metric_keys(SLUGS, with_scores=False))
    assert {metric_kind(k, SLUGS) for k in score_keys} == {"score"}
    assert metric_kind("expected_cost") == "count" and metric_kind("eval_loss") is None


# ---- one batched count implementation -------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(c=st.integers(2, 5), batch=st.integers(1, 4), data=st.data())
def test_a_batch_of_matrices_equals_each_matrix_and_sklearn(c, batch, data):
    slugs = [f"c{i}" for i in range(c)]
    pairs = []
    for _ in range(batch):
        n = data.draw(st.integers(1, 30))
        labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
        predictions = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
        pairs.append((labels, predictions))
    cms = np.stack([confusion_matrix(y, p, c) for y, p in pairs])
    cost = np.arange(c * c, dtype=float).reshape(c, c)
    values = count_metric_values(cms, slugs, cost_matrix=cost)
    for b, (labels, predictions) in enumerate(pairs):
        single = count_metrics(cms[b], slugs)
        for key, value in single.items():
            assert values[key][b] == pytest.approx(value, abs=1e-12), key
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert values["mcc"][b] == pytest.approx(skm.matthews_corrcoef(labels, predictions), abs=1e-12)
            assert values["balanced_accuracy"][b] == pytest.approx(skm.balanced_accuracy_score(labels, predictions), abs=1e-12)
        sk_cm = skm.confusion_matrix(labels, predictions, labels=range(c))
        assert values["expected_cost"][b] == pytest.approx((sk_cm * cost).sum() / len(labels))


def test_unknown_count_key_names_the_classes():
    with pytest.raises(ValueError, match=r"'log_loss' is not a count-based metric key for classes \['a', 'b'\]"):
        count_metric_values(np.ones((1, 2, 2)), ["a", "b"], ["log_loss"])
    with pytest.raises(ValueError, match="needs a cost_matrix"):
        count_metric_values(np.ones((1, 2, 2)), ["a", "b"], ["expected_cost"])


# ---- one violation rule, scalar and vectorised -----------------------------------------------------


def _violation_by_hand(value, op, bound):
    if value is None or math.isnan(value):
        return math.inf
    scale = abs(bound) if bound != 0 else 1.0
    miss = bound - value if op in (">=", ">") else value - bound
    if miss > 0:
        return miss / scale
    return math.ulp(1.0) if miss == 0 and op in (">", "<") else 0.0


@pytest.mark.parametrize("op", [">=", ">", "<=", "<"])
@pytest.mark.parametrize("bound", [0.8, 0.0, -2.0])
def test_vectorised_violation_equals_the_scalar_rule(op, bound):
    values = np.array([bound, bound - 0.1, bound + 0.1, np.nan, -np.inf, np.inf, 0.0])
    expected = [_violation_by_hand(v, op, bound) for v in values]
    assert constraint_violation(values, op, bound).tolist() == expected
    constraint = Constraint("recall_negative", op, bound)
    assert [constraint.violation(float(v)) for v in values] == expected
    assert constraint.violation(None) == math.inf
    assert isinstance(constraint.violation(0.5), float)


# ---- Objective: fields declared once ----------------------------------------------------------------


def test_to_dict_holds_exactly_the_dataclass_fields_and_round_trips():
    objective = Objective(
        "expected_cost", cost_matrix=[[0, 1], [5, 0]], class_prior=[0.9, 0.1], set_weights={"b": 2, "a": 1},
        constraints=["recall_negative >= 0.5"], tie_breakers="f1_macro",
    )
    data = objective.to_dict()
    assert list(data) == [f.name for f in dataclasses.fields(Objective)]
    assert data["cost_matrix"] == [[0.0, 1.0], [5.0, 0.0]] and data["set_weights"] == {"a": 1.0, "b": 2.0}
    assert data["tie_breakers"] == ["f1_macro"] and data["constraints"] == ["recall_negative >= 0.5"]
    assert Objective.from_dict(data) == objective
    assert dataclasses.replace(objective, min_delta=0.1) == objective.replace(min_delta=0.1)


def test_options_after_the_direction_are_keyword_only():
    with pytest.raises(TypeError):
        Objective("recall_negative", True, ("precision_negative >= 0.5",))  # type: ignore[misc]


# ---- SingleLabel -----------------------------------------------------------------------------------


def test_read_labels_takes_ids_names_and_slugs():
    task = SingleLabel(["Very Negative", "POSITIVE"])
    raw = [0, 1, 1.0, np.int64(0), "POSITIVE", "very_negative", "Very Negative"]
    assert task.read_labels(raw, argument="eval_dataset").tolist() == [0, 1, 1, 0, 1, 0, 0]


def test_read_labels_refuses_what_is_not_a_class_naming_the_argument():
    task = SingleLabel(["neg", "pos"])
    with pytest.raises(ConfigurationError) as error:
        task.read_labels([0, 2, True, None, "maybe", 0.5, "!!"], argument="eval_dataset['a']")
    message = str(error.value)
    assert message.startswith("eval_dataset['a']: 6 label(s) are outside the model's classes, e.g. ")
    assert "Allowed: class ids 0..1 or names ['neg', 'pos']" in message


def test_threshold_cuts_equal_sklearn_confusion_matrices_at_each_threshold():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200), 2)
    task = SingleLabel(["neg", "pos"])
    cms, thresholds = task.threshold_cuts(labels, np.stack([1 - scores, scores], axis=1))
    assert len(thresholds) == np.unique(scores).size + 1
    for cm, threshold in zip(cms, thresholds):
        predictions = task.apply_threshold(scores, threshold)
        np.testing.assert_array_equal(cm, skm.confusion_matrix(labels, predictions, labels=[0, 1]))
    assert not np.isin(thresholds[:-1], scores).any()  # never on a held-out score (the last: half the lowest)


def test_resample_paired_keeps_the_observed_matrices_and_the_pairing():
    rng = np.random.default_rng(0)
    labels, first, second = rng.integers(0, 3, (3, 300))
    task = SingleLabel(SLUGS)
    draws_first, draws_second, (observed_first, observed_second) = task.resample_paired(
        labels, first, second, resamples=50, rng=np.random.default_rng(1)
    )
    np.testing.assert_array_equal(observed_first, skm.confusion_matrix(labels, first, labels=range(3)))
    np.testing.assert_array_equal(observed_second, skm.confusion_matrix(labels, second, labels=range(3)))
    # the same resampled examples: equal class supports in both, 300 examples each
    np.testing.assert_array_equal(draws_first.sum(axis=2), draws_second.sum(axis=2))
    assert (draws_first.sum(axis=(1, 2)) == 300).all()


def test_threshold_is_stored_and_read_back_from_config():
    task = SingleLabel(["neg", "pos"])
    assert task.threshold_config(0.25) == {"class_id": 1, "threshold": 0.25}
    assert task.threshold_from_config(task.threshold_config(0.25)) == 0.25


@pytest.mark.parametrize(
    "objective, match",
    [
        (Objective("expected_cost", cost_matrix=[[0, 1], [1, 0]]), r"^cost_matrix: expected 3x3 .*got 2x2"),
        (Objective("f1_macro", class_prior=[0.5, 0.5]), r"^class_prior: expected 3 shares .*got 2"),
        (Objective("f1_negative", tune_threshold=True), r"^tune_threshold: .*binary-only; the model has 3 classes"),
    ],
)
def test_the_task_checks_the_objective(objective, match):
    with pytest.raises(ConfigurationError, match=match):
        SingleLabel(SLUGS).check_objective(objective)
    with pytest.raises(ConfigurationError, match=match):
        objective.check_classes(3)  # the first version's entry point, same rule


def test_task_for_model_reads_id2label_and_warns_on_other_label_names():
    model = SimpleNamespace(config=SimpleNamespace(id2label={1: "POSITIVE", 0: "NEGATIVE"}))
    assert task_for_model(model) == SingleLabel(["NEGATIVE", "POSITIVE"])
    with pytest.warns(TrainerExtWarning, match="differ from the model's id2label"):
        assert task_for_model(model, label_names=["pos", "neg"]).label_names == ["pos", "neg"]
    generic = SimpleNamespace(config=SimpleNamespace(id2label={0: "LABEL_0", 1: "LABEL_1"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task_for_model(generic, label_names=["neg", "pos"])
    with pytest.raises(ConfigurationError, match=r"^task: expected one of \['single_label', 'multi_label', 'token', 'regression'\]"):
        task_for_model(model, task="multi_label_maybe")
    with pytest.raises(ConfigurationError, match=r"^label_names: the model has no config.id2label"):
        task_for_model(SimpleNamespace(config=SimpleNamespace(id2label=None)))
    assert task_from_record(None, ["a", "b"]).name == "single_label"


def test_a_task_that_misses_a_method_cannot_be_built():
    class Incomplete(Task):
        name = "incomplete"

    with pytest.raises(TypeError):
        Incomplete(["a", "b"])


# ---- scoring through the task ------------------------------------------------------------------------


def _binary_results(n=120, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    positive = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1)
    probabilities = np.stack([1 - positive, positive], axis=1).astype(np.float32)
    return SetResult(labels, probabilities.argmax(axis=1), probabilities)


def test_score_checkpoint_matches_sklearn_and_the_slugs_form():
    result = _binary_results()
    task = SingleLabel(["neg", "pos"])
    scores = score_checkpoint({None: result}, task, Objective("recall_neg", bootstrap_resamples=0))
    assert scores.metrics["recall_neg"] == pytest.approx(skm.recall_score(result.labels, result.predictions, pos_label=0))
    assert scores.metrics["roc_auc_pos"] == pytest.approx(skm.roc_auc_score(result.labels, result.probabilities[:, 1]))
    np.testing.assert_array_equal(scores.confusion_matrices[None], skm.confusion_matrix(result.labels, result.predictions))
    assert score_checkpoint({None: result}, ["neg", "pos"], Objective("recall_neg", bootstrap_resamples=0)).metrics == scores.metrics


def test_nan_scores_give_nan_metrics_a_note_and_the_warning():
    result = _binary_results()
    result.probabilities[[3, 7]] = np.nan
    task = SingleLabel(["neg", "pos"])
    objective = Objective("recall_neg")
    with pytest.warns(TrainerExtWarning, match=r"at checkpoint-40 the model gave NaN scores for 2 held-out example\(s\)"):
        scores = score_checkpoint({None: result}, task, objective, checkpoint="checkpoint-40")
    assert list(scores.metrics) == available_keys(task, objective, [None])
    assert all(math.isnan(v) for v in scores.metrics.values())
    assert scores.notes == ["NaN scores from the model"] and scores.nan_examples == 2
    np.testing.assert_array_equal(scores.predictions[None], result.predictions)


def test_check_objective_refuses_score_keys_without_scores_and_unresampleable_significance():
    task = SingleLabel(["neg", "pos"])
    available = available_keys(task, Objective("log_loss"), [None])
    with pytest.raises(ConfigurationError, match=r"^objective: \['log_loss'\] need the model's scores"):
        check_objective(task, Objective("log_loss"), [None], available=available, with_scores=False)
    custom = Objective("my_key", greater_is_better=True, require_significance=True)
    with pytest.raises(ConfigurationError, match=r"^require_significance: .*got 'my_key'"):
        check_objective(task, custom, [None], available=[*available, "my_key"], with_scores=True)
    with pytest.raises(ConfigurationError, match=r"^objective: unknown metric key\(s\) \['recall_nope'\]"):
        check_objective(task, Objective("recall_nope"), [None], available=available, with_scores=True)


# ---- layering ----------------------------------------------------------------------------------------


def test_rules_modules_import_neither_torch_nor_transformers():
    code = (
        "import sys, trainer_ext.metrics, trainer_ext.objectives, trainer_ext.tasks, trainer_ext.uncertainty, "
        "trainer_ext.thresholds, trainer_ext.scoring; "
        "loaded = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not loaded, loaded"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
