"""trainer_ext.metrics against scikit-learn, the reference for every value."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from trainer_ext.metrics import (
    ZERO_DIVISION,
    class_slugs,
    compute_metrics,
    confusion_matrix,
    count_metrics,
    metric_direction,
    metric_keys,
    score_based,
    score_metrics,
    slugify,
)

# Our functions must never warn (scikit-learn warns in several undefined cases; the
# reference below silences its own warnings locally).
pytestmark = pytest.mark.filterwarnings("error")

TOLERANCE = dict(rel=1e-12, abs=1e-12, nan_ok=True)


def sklearn_reference(labels, predictions, probabilities, slugs) -> dict[str, float]:
    """Every key, computed with scikit-learn only."""
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    classes = list(range(len(slugs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            labels, predictions, labels=classes, zero_division=0.0
        )
        averaged = dict(labels=classes, zero_division=0.0)
        expected = {
            "accuracy": skm.accuracy_score(labels, predictions),
            "balanced_accuracy": skm.balanced_accuracy_score(labels, predictions),
            "mcc": skm.matthews_corrcoef(labels, predictions),
            "precision_macro": skm.precision_score(labels, predictions, average="macro", **averaged),
            "recall_macro": skm.recall_score(labels, predictions, average="macro", **averaged),
            "f1_macro": skm.f1_score(labels, predictions, average="macro", **averaged),
            "f1_weighted": skm.f1_score(labels, predictions, average="weighted", **averaged),
        }
        for c, slug in enumerate(slugs):
            expected[f"precision_{slug}"] = precision[c]
            expected[f"recall_{slug}"] = recall[c]
            expected[f"f1_{slug}"] = f1[c]
            expected[f"support_{slug}"] = support[c]
        if probabilities is not None:
            expected["log_loss"] = skm.log_loss(labels, probabilities, labels=classes)
            for c, slug in enumerate(slugs):
                expected[f"roc_auc_{slug}"] = skm.roc_auc_score(labels == c, probabilities[:, c])
                expected[f"average_precision_{slug}"] = skm.average_precision_score(
                    labels == c, probabilities[:, c]
                )
    return {key: float(value) for key, value in expected.items()}


def assert_matches_sklearn(labels, predictions=None, probabilities=None, *, label_names):
    result = compute_metrics(labels, predictions, probabilities, label_names=label_names)
    slugs = class_slugs(label_names)
    if predictions is None:
        predictions = np.argmax(probabilities, axis=1)
    expected = sklearn_reference(labels, predictions, probabilities, slugs)
    assert list(result) == metric_keys(slugs, with_scores=probabilities is not None)
    assert all(type(value) is float for value in result.values())
    assert result == pytest.approx(expected, **TOLERANCE)
    return result


def softmax_rows(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    logits = rng.normal(size=(n, c)) * 2
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


# --- fixed cases -------------------------------------------------------------------------


def test_binary_hand_checked_and_sklearn():
    labels = np.array([0, 0, 0, 1, 1])
    predictions = np.array([0, 1, 0, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    result = assert_matches_sklearn(labels, predictions, probabilities, label_names=["NEGATIVE", "POSITIVE"])
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["precision_positive"] == pytest.approx(1 / 2)
    assert result["recall_positive"] == pytest.approx(1 / 2)
    assert result["support_negative"] == 3.0
    # Positive scores 0.8, 0.4 vs negative 0.1, 0.6, 0.3: 5 of 6 pairs ordered correctly.
    assert result["roc_auc_positive"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("num_classes", [3, 5])
def test_multiclass_matches_sklearn(num_classes):
    rng = np.random.default_rng(num_classes)
    labels = rng.integers(0, num_classes, size=300)
    probabilities = softmax_rows(rng, 300, num_classes)
    names = [f"Class {i}" for i in range(num_classes)]
    assert_matches_sklearn(labels, probabilities=probabilities, label_names=names)
    predictions = rng.integers(0, num_classes, size=300)
    assert_matches_sklearn(labels, predictions, probabilities, label_names=names)
    assert_matches_sklearn(labels, predictions, label_names=names)


def test_class_with_zero_support():
    labels = np.array([0, 0, 1, 1, 1])
    predictions = np.array([0, 2, 1, 1, 2])  # class 2 predicted, never true
    probabilities = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.2, 0.5], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]
    )
    result = assert_matches_sklearn(labels, predictions, probabilities, label_names=["a", "b", "c"])
    assert result["support_c"] == 0.0
    assert result["recall_c"] == ZERO_DIVISION  # 0/0
    assert result["precision_c"] == 0.0  # 0/2
    assert result["f1_c"] == 0.0
    # balanced accuracy averages over the classes present in labels only: (1/2 + 2/3) / 2.
    assert result["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert math.isnan(result["roc_auc_c"])
    assert result["average_precision_c"] == 0.0  # scikit-learn's value with no positive


def test_class_absent_from_labels_and_predictions():
    labels = np.array([0, 1, 1, 0])
    predictions = np.array([0, 1, 0, 0])
    result = assert_matches_sklearn(labels, predictions, label_names=["a", "b", "c"])
    assert (result["precision_c"], result["recall_c"], result["f1_c"]) == (0.0, 0.0, 0.0)
    assert result["f1_macro"] == pytest.approx((result["f1_a"] + result["f1_b"]) / 3)


def test_class_never_predicted():
    labels = np.array([0, 1, 2, 2, 1])
    predictions = np.array([0, 1, 1, 0, 1])
    result = assert_matches_sklearn(labels, predictions, label_names=["a", "b", "c"])
    assert result["precision_c"] == ZERO_DIVISION
    assert result["recall_c"] == 0.0
    assert result["f1_c"] == 0.0


def test_all_predictions_one_class():
    labels = np.array([0, 1, 2, 1, 0, 2])
    predictions = np.ones(6, dtype=np.int64)
    result = assert_matches_sklearn(labels, predictions, label_names=["a", "b", "c"])
    assert result["mcc"] == 0.0  # denominator 0, scikit-learn's convention
    assert result["recall_b"] == 1.0


def test_single_example():
    result = assert_matches_sklearn([1], probabilities=np.array([[0.25, 0.75]]), label_names=["a", "b"])
    assert result["accuracy"] == 1.0
    assert result["mcc"] == 0.0
    assert math.isnan(result["roc_auc_a"]) and math.isnan(result["roc_auc_b"])
    assert result["average_precision_a"] == 0.0
    assert result["average_precision_b"] == 1.0  # every example is b


def test_perfect_predictions():
    labels = np.array([0, 1, 2, 2, 1, 0, 1])
    probabilities = np.eye(3)[labels]
    result = assert_matches_sklearn(labels, probabilities=probabilities, label_names=["a", "b", "c"])
    for key in metric_keys(["a", "b", "c"], with_scores=True):
        if key.startswith("support_"):
            continue
        if key == "log_loss":
            assert result[key] < 1e-12
        else:
            assert result[key] == 1.0, key


def test_float32_probabilities_match_sklearn():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, size=500)
    probabilities = softmax_rows(rng, 500, 4).astype(np.float32)
    probabilities[:20] = np.float32(0.25)  # ties
    probabilities[20:25] = np.eye(4, dtype=np.float32)[labels[20:25]]  # exact 0 and 1, clipped
    assert_matches_sklearn(labels, probabilities=probabilities, label_names=["a", "b", "c", "d"])


def test_many_rows_match_sklearn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=200_000)
    probabilities = softmax_rows(rng, 200_000, 2)
    probabilities[::7] = np.round(probabilities[::7], 2)  # many tied scores
    probabilities[::7, 1] = 1 - probabilities[::7, 0]
    assert_matches_sklearn(labels, probabilities=probabilities, label_names=["neg", "pos"])


def test_argmax_ties_go_to_lowest_index():
    probabilities = np.array([[0.5, 0.5], [0.2, 0.8]])
    result = compute_metrics([0, 0], probabilities=probabilities, label_names=["a", "b"])
    # Predictions are [0, 1]: the tie in row 0 goes to class 0.
    assert result["accuracy"] == 0.5
    assert result["support_a"] == 2.0


def test_predictions_take_precedence_over_probabilities():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    result = compute_metrics([1, 1], [1, 1], probabilities, label_names=["a", "b"])
    assert result["accuracy"] == 1.0


# --- property test ------------------------------------------------------------------------


@st.composite
def classification_data(draw):
    num_classes = draw(st.integers(2, 6))
    n = draw(st.integers(1, 40))
    present = draw(st.integers(1, num_classes))  # how many classes occur in labels
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.choice(rng.choice(num_classes, size=present, replace=False), size=n)

    kind = draw(st.sampled_from(["continuous", "coarse", "one_hot", "uniform"]))
    if kind == "continuous":
        weights = rng.random((n, num_classes)) ** 3
    elif kind == "coarse":  # many ties and exact zeros
        weights = rng.integers(0, 3, size=(n, num_classes)).astype(np.float64)
        weights[weights.sum(axis=1) == 0, 0] = 1.0
    elif kind == "one_hot":
        weights = np.eye(num_classes)[rng.integers(0, num_classes, size=n)]
    else:
        weights = np.ones((n, num_classes))
    probabilities = weights / weights.sum(axis=1, keepdims=True)
    if draw(st.booleans()):
        probabilities = probabilities.astype(np.float32)

    predictions_kind = draw(st.sampled_from(["argmax", "random", "constant", "labels"]))
    predictions = {
        "argmax": None,
        "random": rng.integers(0, num_classes, size=n),
        "constant": np.full(n, draw(st.integers(0, num_classes - 1))),
        "labels": labels,
    }[predictions_kind]
    with_scores = predictions is None or draw(st.booleans())
    return labels, predictions, probabilities if with_scores else None, num_classes


@settings(max_examples=150, deadline=None)
@given(classification_data())
def test_every_key_matches_sklearn(data):
    labels, predictions, probabilities, num_classes = data
    assert_matches_sklearn(
        labels, predictions, probabilities, label_names=[f"Label {i}" for i in range(num_classes)]
    )


@settings(max_examples=100, deadline=None)
@given(classification_data(), st.data())
def test_summed_shard_matrices_give_the_same_metrics(data, draw):
    labels, predictions, probabilities, num_classes = data
    if predictions is None:
        predictions = np.argmax(probabilities, axis=1)
    cut = draw.draw(st.integers(0, labels.shape[0]))  # one shard may be empty
    whole = confusion_matrix(labels, predictions, num_classes)
    shards = confusion_matrix(labels[:cut], predictions[:cut], num_classes) + confusion_matrix(
        labels[cut:], predictions[cut:], num_classes
    )
    np.testing.assert_array_equal(shards, whole)
    slugs = [f"c{i}" for i in range(num_classes)]
    assert count_metrics(shards, slugs) == count_metrics(whole, slugs)


# --- keys, slugs and directions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NEGATIVE", "negative"),
        ("Very Negative!", "very_negative"),
        ("LABEL_0", "label_0"),
        ("  --a--b  ", "a_b"),
        ("x__y", "x_y"),
        ("0", "0"),
        ("Négatif", "négatif"),
    ],
)
def test_slugify(name, slug):
    assert slugify(name) == slug


@pytest.mark.parametrize("name", ["", "!!!", "___", "  "])
def test_slugify_empty_result_names_the_input(name):
    with pytest.raises(ValueError, match="no letter or digit") as error:
        slugify(name)
    assert repr(name) in str(error.value)


def test_slugify_rejects_non_string():
    with pytest.raises(ValueError, match="must be a string"):
        slugify(3)


def test_class_slugs():
    assert class_slugs(["NEGATIVE", "Very Negative!", "LABEL_0"]) == ["negative", "very_negative", "label_0"]


def test_class_slugs_collision_lists_names_and_slugs():
    with pytest.raises(ValueError, match="distinct slugs") as error:
        class_slugs(["Pos", "neg", "pos!"])
    message = str(error.value)
    assert "'Pos' -> 'pos'" in message and "'pos!' -> 'pos'" in message


@pytest.mark.parametrize("names", [[], ["only"], "ab"])
def test_class_slugs_needs_two_classes(names):
    with pytest.raises(ValueError, match="label_names"):
        class_slugs(names)


def test_class_slugs_rejects_reserved_slugs():
    with pytest.raises(ValueError, match="macro"):
        class_slugs(["Macro", "other"])


def test_metric_keys_order():
    assert metric_keys(["a", "b"], with_scores=False) == [
        "accuracy", "balanced_accuracy", "mcc", "precision_macro", "recall_macro", "f1_macro",
        "f1_weighted",
        "precision_a", "recall_a", "f1_a", "support_a",
        "precision_b", "recall_b", "f1_b", "support_b",
    ]  # fmt: skip
    assert metric_keys(["a", "b"], with_scores=True)[15:] == [
        "log_loss", "roc_auc_a", "average_precision_a", "roc_auc_b", "average_precision_b",
    ]  # fmt: skip


def test_metric_keys_rejects_non_slugs():
    with pytest.raises(ValueError, match="slugs must be slugs"):
        metric_keys(["Neg", "pos"], with_scores=False)


def test_metric_direction_of_every_key():
    slugs = ["very_negative", "positive"]
    expected = {key: True for key in metric_keys(slugs, with_scores=True)}
    expected["log_loss"] = False
    expected["support_very_negative"] = None
    expected["support_positive"] = None
    assert {key: metric_direction(key, slugs) for key in expected} == expected
    assert metric_direction("expected_cost", slugs) is False
    assert metric_direction("f1_neutral", slugs) is None  # unknown class
    assert metric_direction("eval_loss", slugs) is None  # no guessing from a "loss" suffix
    assert metric_direction("accuracy_very", slugs) is None


def test_score_based():
    for key in metric_keys(["a", "b"], with_scores=True):
        assert score_based(key) == (
            key == "log_loss" or key.startswith(("roc_auc_", "average_precision_"))
        ), key


# --- validation ---------------------------------------------------------------------------


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 4, size=(2, 1000))
    np.testing.assert_array_equal(
        confusion_matrix(labels, predictions, 5),
        skm.confusion_matrix(labels, predictions, labels=range(5)),
    )
    assert confusion_matrix(labels, predictions, 5).dtype == np.int64


def test_confusion_matrix_of_empty_shard_is_zero():
    np.testing.assert_array_equal(confusion_matrix([], [], 3), np.zeros((3, 3), dtype=np.int64))


def test_out_of_range_label_names_values_and_range():
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\)") as error:
        confusion_matrix([0, 3, -1, 3], [0, 1, 2, 0], 3)
    assert "-1, 3" in str(error.value) and "3 value(s)" in str(error.value)
    with pytest.raises(ValueError, match=r"predictions .* 5, 6, 7, 8, 9, \.\.\."):
        confusion_matrix(np.zeros(8, dtype=int), np.arange(3, 11), 5)
    with pytest.raises(ValueError, match="labels must be class indices"):
        compute_metrics([0, 2], [0, 1], label_names=["a", "b"])


def test_confusion_matrix_input_errors():
    with pytest.raises(ValueError, match="same length.*3 labels and 2 predictions"):
        confusion_matrix([0, 1, 1], [0, 1], 2)
    with pytest.raises(ValueError, match="integer class indices; got dtype float64"):
        confusion_matrix([0.0, 1.0], [0, 1], 2)
    with pytest.raises(ValueError, match="must be 1-D"):
        confusion_matrix([[0, 1]], [[0, 1]], 2)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2; got 1"):
        confusion_matrix([0], [0], 1)


def test_count_metrics_errors():
    with pytest.raises(ValueError, match="at least one example"):
        count_metrics(np.zeros((2, 2), dtype=np.int64), ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(3, 3\).*got shape \(2, 2\)"):
        count_metrics(np.ones((2, 2), dtype=np.int64), ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-negative"):
        count_metrics(np.array([[1, -1], [0, 1]]), ["a", "b"])
    with pytest.raises(ValueError, match="whole, finite"):
        count_metrics(np.array([[1.5, 0], [0, 1]]), ["a", "b"])


def test_compute_metrics_input_errors():
    with pytest.raises(ValueError, match="needs predictions or probabilities"):
        compute_metrics([0, 1], label_names=["a", "b"])
    with pytest.raises(ValueError, match="labels is empty"):
        compute_metrics([], [], label_names=["a", "b"])


@pytest.mark.parametrize(
    ("probabilities", "match"),
    [
        (np.full((3, 3), 1 / 3), r"shape \(3, 2\).*got shape \(3, 3\)"),
        (np.full(3, 0.5), r"shape \(3, 2\).*got shape \(3,\)"),
        (np.array([[0.5, np.nan], [0.5, 0.5], [np.inf, 0.0]]), "finite; got 2 of 3 rows"),
        (np.array([[0.5, 0.5], [1.2, -0.2], [0.5, 0.5]]), r"\[0, 1\]; got 1 of 3 rows"),
        (np.array([[0.5, 0.4], [0.5, 0.5], [0.6, 0.3]]), "sum to 1 within 0.0001; got 2 of 3 rows"),
        (np.array([["a", "b"]] * 3), "must be numeric"),
    ],
)
def test_bad_probabilities(probabilities, match):
    with pytest.raises(ValueError, match=match):
        score_metrics([0, 1, 1], probabilities, ["a", "b"])
    with pytest.raises(ValueError, match=match):
        compute_metrics([0, 1, 1], probabilities=probabilities, label_names=["a", "b"])


def test_rows_within_tolerance_are_accepted_as_given():
    probabilities = np.array([[0.7, 0.30005], [0.2, 0.8]])
    result = score_metrics([0, 1], probabilities, ["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns that rows do not sum to one
        expected = skm.log_loss([0, 1], probabilities, labels=[0, 1])
    assert result["log_loss"] == pytest.approx(expected, rel=1e-12)
