"""Classification metrics for a sequence classifier, with scikit-learn as the reference.

Pure functions over arrays: integer ``labels`` (the true class of each example), integer
``predictions`` and, optionally, ``probabilities`` (one row per example, one column per
class, each row summing to 1). This module imports numpy and scikit-learn only, never
torch or transformers, so it can be used and tested without a model.

Every value equals the scikit-learn function named below, called with ``labels=range(C)``
(so a class absent from the data still gets its keys) and ``zero_division=0.0``; the tests
check it. The values are computed in numpy, with the same operations as scikit-learn, because
its input checks cost several times the computation on a million rows.

Keys
----
``<c>`` is the slug of a class name (see :func:`slugify`), e.g. ``"Very Negative!"`` ->
``very_negative``. "Higher" / "lower" is the direction reported by :func:`metric_direction`.

Count-based keys, computed from the confusion matrix alone (:func:`count_metrics`):

==========================  ==========================================================  =========
key                         definition                                                  direction
==========================  ==========================================================  =========
``accuracy``                fraction of examples whose prediction equals the label      higher
                            (``accuracy_score``)
``balanced_accuracy``       mean recall over the classes present in ``labels``          higher
                            (``balanced_accuracy_score``); classes with zero support
                            are left out of the mean, not counted as 0
``mcc``                     Matthews correlation coefficient, multiclass form, in       higher
                            [-1, 1] (``matthews_corrcoef``); 0.0 when undefined
``precision_macro``         unweighted mean of ``precision_<c>`` over all C classes     higher
``recall_macro``            unweighted mean of ``recall_<c>`` over all C classes        higher
``f1_macro``                unweighted mean of ``f1_<c>`` over all C classes            higher
``f1_weighted``             mean of ``f1_<c>`` weighted by ``support_<c>``              higher
``precision_<c>``           TP / (TP + FP): of the examples predicted c, the fraction   higher
                            that are c
``recall_<c>``              TP / (TP + FN): of the examples that are c, the fraction    higher
                            predicted c
``f1_<c>``                  2 TP / (2 TP + FP + FN), the harmonic mean of the two       higher
``support_<c>``             number of examples whose label is c (a count, as float)     none
==========================  ==========================================================  =========

Score-based keys, computed from ``probabilities`` (:func:`score_metrics`):

==============================  ======================================================  =========
key                             definition                                              direction
==============================  ======================================================  =========
``log_loss``                    mean negative log-probability of the true class, in     lower
                                nats (``log_loss``; probabilities clipped to
                                [eps, 1 - eps] for their dtype, as scikit-learn)
``roc_auc_<c>``                 area under the ROC curve of class c against the rest,   higher
                                ranking by ``probabilities[:, c]`` (``roc_auc_score``)
``average_precision_<c>``       average precision of class c against the rest           higher
                                (``average_precision_score``)
==============================  ======================================================  =========

``expected_cost`` is not produced here (it needs a cost matrix) but is a known key of
:func:`metric_direction` (lower is better), so that directions have one source.

Zero-division policy
--------------------
Any 0/0 is :data:`ZERO_DIVISION` (0.0), exactly scikit-learn's ``zero_division=0.0``:
``precision_<c>`` of a class never predicted, ``recall_<c>`` of a class with zero
support, and ``f1_<c>`` when TP + FP + FN = 0 (class neither present nor predicted)
are 0.0, and they still count in the macro means. ``mcc`` is 0.0 when every label or
every prediction is the same class (scikit-learn's convention).

NaN policy
----------
NaN means "undefined for this data", never "bad". Only ``roc_auc_<c>`` can be NaN: when
the one-vs-rest problem of class c has a single class (no example of c, or every example
is c), ranking is meaningless and the value is ``float('nan')``, without the warning
scikit-learn emits. ``average_precision_<c>`` is always a number, as in scikit-learn:
1.0 when every example is c (precision is 1 at every threshold), and 0.0 when no example
is c (scikit-learn's value: recall is 0/0, and 0/0 is 0.0 by the policy above).
Count-based keys are never NaN. Inputs containing NaN or infinity are rejected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "ZERO_DIVISION",
    "class_slugs",
    "compute_metrics",
    "confusion_matrix",
    "count_metrics",
    "metric_direction",
    "metric_keys",
    "score_based",
    "score_metrics",
    "slugify",
]

ZERO_DIVISION: float = 0.0
"""Value of every 0/0 (see the module docstring); scikit-learn's ``zero_division=0.0``."""

_OVERALL_COUNT_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "mcc",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_weighted",
)
_OVERALL_SCORE_KEYS = ("log_loss",)
_PER_CLASS_COUNT_PREFIXES = ("precision", "recall", "f1", "support")
_PER_CLASS_SCORE_PREFIXES = ("roc_auc", "average_precision")
# Keys whose smaller value is better. expected_cost is computed elsewhere (it needs a cost
# matrix) but its direction lives here so that every built-in key has one answer.
_LOWER_IS_BETTER = frozenset({"log_loss", "expected_cost"})
# A class slugged "macro" would make f1_<c> collide with f1_macro.
_RESERVED_SLUGS = frozenset({"macro", "weighted"})
# Rows of `probabilities` must sum to 1 within this absolute tolerance.
_ROW_SUM_TOLERANCE = 1e-4
_NON_ALPHANUMERIC_RUN = re.compile(r"[\W_]+")


def slugify(name: str) -> str:
    """Turn a class name into the ``<c>`` part of a metric key.

    Lower case, every run of characters that are not letters or digits becomes a single
    ``"_"``, and leading and trailing ``"_"`` are removed. Letters and digits are those of
    Unicode (``str.isalnum``), so ``"Négatif"`` -> ``"négatif"``.

    >>> slugify("NEGATIVE"), slugify("Very Negative!"), slugify("LABEL_0")
    ('negative', 'very_negative', 'label_0')

    Raises ``ValueError`` if ``name`` is not a string or has no letter or digit.
    """
    if not isinstance(name, str):
        raise ValueError(
            f"A class name must be a string; got {name!r} of type {type(name).__name__}."
        )
    slug = _NON_ALPHANUMERIC_RUN.sub("_", name.lower()).strip("_")
    if not slug:
        raise ValueError(
            f"The class name {name!r} has no letter or digit, so it gives an empty slug. "
            "Class names must contain at least one letter or digit."
        )
    return slug


def class_slugs(label_names: Sequence[str]) -> list[str]:
    """Slug of every class name, in class-index order.

    ``label_names[i]`` is the name of class ``i``. Raises ``ValueError`` if there are fewer
    than 2 classes, if two names give the same slug (e.g. ``"Pos"`` and ``"pos!"``), or if
    a slug is ``"macro"`` or ``"weighted"`` (its keys would collide with ``f1_macro`` and
    ``f1_weighted``).
    """
    if isinstance(label_names, str) or not isinstance(label_names, Sequence):
        raise ValueError(
            "label_names must be a sequence of class names, one per class index; "
            f"got {label_names!r}."
        )
    if len(label_names) < 2:
        raise ValueError(
            f"label_names must name at least 2 classes; got {len(label_names)}: "
            f"{list(label_names)!r}."
        )
    slugs = [slugify(name) for name in label_names]
    pairs = ", ".join(f"{name!r} -> {slug!r}" for name, slug in zip(label_names, slugs))
    if len(set(slugs)) != len(slugs):
        raise ValueError(
            "label_names must give distinct slugs (metric keys are built from them); "
            f"got {pairs}. Rename the classes so that their slugs differ."
        )
    reserved = sorted(set(slugs) & _RESERVED_SLUGS)
    if reserved:
        raise ValueError(
            f"label_names must not give the slugs {sorted(_RESERVED_SLUGS)} (their keys would "
            f"collide with the averaged keys such as 'f1_macro'); got {pairs}."
        )
    return slugs


def _check_slugs(slugs: Sequence[str]) -> list[str]:
    """Check that ``slugs`` is what :func:`class_slugs` returns, and return it as a list."""
    if isinstance(slugs, str) or not isinstance(slugs, Sequence):
        raise ValueError(f"slugs must be a sequence of class slugs; got {slugs!r}.")
    slugs = list(slugs)
    not_slugs = [s for s in slugs if not isinstance(s, str) or not s or slugify(s) != s]
    if not_slugs:
        raise ValueError(
            f"slugs must be slugs (see slugify); got {not_slugs!r} in {slugs!r}. "
            "Build them with class_slugs(label_names)."
        )
    return class_slugs(slugs)


def metric_keys(slugs: Sequence[str], *, with_scores: bool) -> list[str]:
    """Every key this module can produce for these classes, in canonical order.

    Overall count keys, then for each class in index order its count keys, then (when
    ``with_scores``) ``log_loss`` followed by each class's score keys:

    >>> metric_keys(["neg", "pos"], with_scores=False)[7:]
    ['precision_neg', 'recall_neg', 'f1_neg', 'support_neg', 'precision_pos', 'recall_pos', 'f1_pos', 'support_pos']
    """
    slugs = _check_slugs(slugs)
    keys = list(_OVERALL_COUNT_KEYS)
    keys += [f"{prefix}_{slug}" for slug in slugs for prefix in _PER_CLASS_COUNT_PREFIXES]
    if with_scores:
        keys += list(_OVERALL_SCORE_KEYS)
        keys += [f"{prefix}_{slug}" for slug in slugs for prefix in _PER_CLASS_SCORE_PREFIXES]
    return keys


def metric_direction(key: str, slugs: Sequence[str]) -> bool | None:
    """Whether a larger value of ``key`` is better.

    Returns ``True`` (higher is better) for every key of :func:`metric_keys` except
    ``log_loss`` and ``support_<c>``; ``False`` (lower is better) for ``log_loss`` and
    ``expected_cost``; ``None`` for ``support_<c>`` (a count has no direction) and for any
    key that is not known for these ``slugs`` (a custom metric must state its direction).
    """
    if key in _LOWER_IS_BETTER:
        return False
    if key not in metric_keys(slugs, with_scores=True):
        return None
    if key.startswith("support_"):
        return None
    return True


def score_based(key: str) -> bool:
    """Whether ``key`` needs probabilities: ``log_loss``, ``roc_auc_<c>``, ``average_precision_<c>``.

    Decided by the key's form alone, without checking that ``<c>`` is a known class.
    """
    return key in _OVERALL_SCORE_KEYS or any(
        key.startswith(f"{prefix}_") for prefix in _PER_CLASS_SCORE_PREFIXES
    )


def _as_class_indices(values, name: str, num_classes: int) -> np.ndarray:
    """``values`` as a 1-D int64 array of class indices in ``[0, num_classes)``."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class index per example); got shape {array.shape}.")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold integer class indices; got dtype {array.dtype}. "
            "Take the argmax of scores to get indices."
        )
    outside = (array < 0) | (array >= num_classes)
    if outside.any():
        offending = np.unique(array[outside])
        shown = ", ".join(str(v) for v in offending[:5]) + (", ..." if offending.size > 5 else "")
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes}) for {num_classes} classes; "
            f"got {int(outside.sum())} value(s) outside it: {shown}."
        )
    return array.astype(np.int64, copy=False)


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}.")
    return int(num_classes)


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Confusion matrix: ``cm[i, j]`` is the number of examples of class i predicted j.

    Returns an int64 array of shape ``[num_classes, num_classes]``, rows = true class,
    columns = predicted class, equal to ``sklearn.metrics.confusion_matrix(labels,
    predictions, labels=range(num_classes))``. Empty inputs give a matrix of zeros, so that
    matrices of several shards (one of them possibly empty) can be summed.

    Raises ``ValueError`` if the lengths differ, if either is not 1-D integer, or if a value
    is outside ``[0, num_classes)``.
    """
    num_classes = _check_num_classes(num_classes)
    labels = _as_class_indices(labels, "labels", num_classes)
    predictions = _as_class_indices(predictions, "predictions", num_classes)
    if labels.shape != predictions.shape:
        raise ValueError(
            "labels and predictions must have the same length (one per example); "
            f"got {labels.shape[0]} labels and {predictions.shape[0]} predictions."
        )
    # One bincount over the flattened (true, predicted) pair is O(N) and much faster than
    # sklearn's sparse-matrix construction for millions of rows.
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator`` with 0/0 (and x/0) set to ``ZERO_DIVISION``."""
    result = np.full(numerator.shape, ZERO_DIVISION, dtype=np.float64)
    np.divide(numerator, denominator, out=result, where=denominator != 0)
    return result


def count_metrics(cm: np.ndarray, slugs: Sequence[str]) -> dict[str, float]:
    """Every count-based key, from the confusion matrix alone.

    The confusion matrix is a sufficient statistic: matrices of disjoint shards add up, so
    several processes can sum theirs and call this once, and a bootstrap only needs to
    resample counts. ``cm[i, j]`` is the number of examples of class i predicted j (see
    :func:`confusion_matrix`); ``slugs[i]`` names class i. Values are Python floats,
    ``support_<c>`` included. Key order is that of :func:`metric_keys`.

    Edge cases (see the module docstring): 0/0 is ``ZERO_DIVISION``; ``balanced_accuracy``
    averages recall over the classes with non-zero support only (as
    ``balanced_accuracy_score``, without its warning); ``mcc`` is 0.0 when its denominator
    is 0 (as ``matthews_corrcoef``).

    Raises ``ValueError`` if ``cm`` is not a square matrix of size ``len(slugs)``, holds a
    negative, non-integer or non-finite count, or sums to 0 (no example).
    """
    slugs = _check_slugs(slugs)
    num_classes = len(slugs)
    cm = np.asarray(cm)
    if cm.shape != (num_classes, num_classes):
        raise ValueError(
            f"cm must have shape ({num_classes}, {num_classes}) for the {num_classes} classes "
            f"{slugs}; got shape {cm.shape}."
        )
    if cm.dtype.kind not in "iuf":
        raise ValueError(f"cm must hold counts; got dtype {cm.dtype}.")
    if cm.dtype.kind == "f" and not (np.isfinite(cm).all() and (cm == np.round(cm)).all()):
        raise ValueError("cm must hold whole, finite counts; got a fractional, NaN or infinite entry.")
    if (cm < 0).any():
        raise ValueError(f"cm must hold non-negative counts; got {int((cm < 0).sum())} negative entries.")
    counts = cm.astype(np.float64)
    n = counts.sum()
    if n == 0:
        raise ValueError("cm sums to 0: metrics need at least one example.")

    tp = np.diag(counts)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    # The F1 formula from counts, as scikit-learn: 2 TP / (support + predicted); 0 when
    # both are 0 (equivalently, when P + R = 0 the numerator is 0 and so is F1).
    f1 = _divide(2.0 * tp, support + predicted)

    # Same operations, in the same order, as sklearn's matthews_corrcoef.
    n_correct = np.trace(counts)
    cov_ytyp = n_correct * n - np.dot(support, predicted)
    cov_ypyp = n**2 - np.dot(predicted, predicted)
    cov_ytyt = n**2 - np.dot(support, support)
    cov_ypyp_ytyt = cov_ypyp * cov_ytyt
    mcc = ZERO_DIVISION if cov_ypyp_ytyt == 0 else cov_ytyp / np.sqrt(cov_ypyp_ytyt)

    present = support > 0
    result = {
        "accuracy": n_correct / n,
        "balanced_accuracy": np.mean(tp[present] / support[present]),
        "mcc": mcc,
        "precision_macro": np.mean(precision),
        "recall_macro": np.mean(recall),
        "f1_macro": np.mean(f1),
        "f1_weighted": np.average(f1, weights=support),
    }
    for i, slug in enumerate(slugs):
        result[f"precision_{slug}"] = precision[i]
        result[f"recall_{slug}"] = recall[i]
        result[f"f1_{slug}"] = f1[i]
        result[f"support_{slug}"] = support[i]
    return {key: float(value) for key, value in result.items()}


def _check_probabilities(probabilities, num_examples: int, num_classes: int) -> np.ndarray:
    """``probabilities`` as a float32/float64 array ``[num_examples, num_classes]`` of valid rows."""
    array = np.asarray(probabilities)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"probabilities must be numeric; got dtype {array.dtype}.")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.shape != (num_examples, num_classes):
        raise ValueError(
            f"probabilities must have shape ({num_examples}, {num_classes}) "
            f"(one row per example, one column per class); got shape {array.shape}."
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"probabilities must be finite; got {int((~finite).sum())} of {num_examples} rows "
            f"with NaN or infinity (first at row {int(np.argmin(finite))})."
        )
    outside = ((array < 0) | (array > 1)).any(axis=1)
    if outside.any():
        raise ValueError(
            f"probabilities must lie in [0, 1]; got {int(outside.sum())} of {num_examples} rows "
            f"with a value outside it (first at row {int(np.argmax(outside))}). "
            "Apply a softmax to logits first."
        )
    off = np.abs(array.sum(axis=1, dtype=np.float64) - 1.0) > _ROW_SUM_TOLERANCE
    if off.any():
        raise ValueError(
            f"probabilities rows must sum to 1 within {_ROW_SUM_TOLERANCE}; got "
            f"{int(off.sum())} of {num_examples} rows that do not (first at row "
            f"{int(np.argmax(off))}, sum {float(array[np.argmax(off)].sum())}). "
            "Apply a softmax to logits first."
        )
    return array


def _log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """``sklearn.metrics.log_loss(labels, probabilities, labels=range(C))``, in numpy.

    The same operations in the same order and dtype as scikit-learn (clip to
    [eps, 1 - eps] of the dtype, negative log of the true class's probability, mean), but
    without its input checks, which cost ~10 times the computation on 10^6 rows.
    """
    eps = np.finfo(probabilities.dtype).eps
    true_class = probabilities[np.arange(labels.shape[0]), labels]
    return float(np.mean(-np.log(np.clip(true_class, eps, 1 - eps))))


def _one_vs_rest_curve(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True- and false-positive counts at each distinct score, from the highest down.

    ``tps[k]`` and ``fps[k]`` count the positives and negatives whose score is at least the
    k-th largest distinct score; as scikit-learn's ``confusion_matrix_at_thresholds``.
    Ties need no stable sort: all examples of one score enter at the same threshold.
    """
    order = np.argsort(scores)[::-1]
    sorted_scores = scores[order]
    threshold_idxs = np.append(np.flatnonzero(np.diff(sorted_scores)), scores.shape[0] - 1)
    tps = np.cumsum(is_positive[order], dtype=np.int64)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    return tps, fps


def _roc_auc(tps: np.ndarray, fps: np.ndarray) -> float:
    """Trapezoidal area under the ROC curve through (0, 0) and every (fps, tps) point.

    Twice the area in count units is an integer, computed exactly in int64 (exact up to
    ~4 * 10^9 examples), then divided once: equal to scikit-learn's ``roc_auc_score`` up to
    its own rounding.
    """
    fps = np.concatenate(([0], fps))
    tps = np.concatenate(([0], tps))
    twice_area = int(np.sum(np.diff(fps) * (tps[1:] + tps[:-1])))
    return twice_area / (2 * int(tps[-1]) * int(fps[-1]))


def _average_precision(tps: np.ndarray, fps: np.ndarray) -> float:
    """Average precision, with the operations of scikit-learn's ``average_precision_score``.

    ``sum over thresholds of (recall_k - recall_{k-1}) * precision_k``, written as scikit-
    learn writes it (reversed curve, ``-sum(diff(recall) * precision)``, clipped at 0 to
    remove a ``-0.0``) so that values agree to the last bits. Needs ``tps[-1] > 0``.
    """
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    reversed_recall = np.concatenate((recall[::-1], [0.0]))
    return float(max(0.0, -np.sum(np.diff(reversed_recall) * precision[::-1])))


def _score_metrics(labels: np.ndarray, probabilities: np.ndarray, slugs: list[str]) -> dict[str, float]:
    """:func:`score_metrics` on inputs that are already validated."""
    num_classes = len(slugs)
    result = {"log_loss": _log_loss(labels, probabilities)}
    num_examples = labels.shape[0]
    positives = np.bincount(labels, minlength=num_classes)
    for c, slug in enumerate(slugs):
        if positives[c] == 0:
            # One-vs-rest with no positive: ROC AUC is undefined; scikit-learn's average
            # precision is 0.0 (with a warning), which is also our 0/0 policy.
            roc_auc, average_precision = float("nan"), ZERO_DIVISION
        else:
            tps, fps = _one_vs_rest_curve(labels == c, probabilities[:, c])
            # With only positives, ROC AUC is undefined (no false-positive axis), while
            # average precision is 1.0: precision is 1 at every threshold.
            roc_auc = float("nan") if positives[c] == num_examples else _roc_auc(tps, fps)
            average_precision = _average_precision(tps, fps)
        result[f"roc_auc_{slug}"] = roc_auc
        result[f"average_precision_{slug}"] = average_precision
    return result


def score_metrics(labels, probabilities, slugs: Sequence[str]) -> dict[str, float]:
    """``log_loss``, and ``roc_auc_<c>`` and ``average_precision_<c>`` of every class.

    ``labels``: 1-D integer class indices, length N. ``probabilities``: array ``[N, C]``
    with ``C = len(slugs)``, values in [0, 1], rows summing to 1 within 1e-4 (used as
    given, not renormalised; scikit-learn would warn, not fail, on such rows).
    float32 and float64 are kept as given (``log_loss`` clips to the dtype's eps); other
    numeric dtypes are converted to float64.

    Definitions (values of these scikit-learn calls): ``log_loss(labels, probabilities,
    labels=range(C))``; ``roc_auc_score(labels == c, probabilities[:, c])``;
    ``average_precision_score(labels == c, probabilities[:, c])``. Cost: one sort per class.

    Undefined cases (no scikit-learn warning is emitted): when class c has no example or
    every example is c, ``roc_auc_<c>`` is NaN; ``average_precision_<c>`` is then 0.0 (no
    example of c: scikit-learn's value, recall being 0/0) or 1.0 (all examples are c).

    Raises ``ValueError`` if ``labels`` is empty, not integer or out of ``[0, C)``, or if
    ``probabilities`` has the wrong shape, contains NaN or infinity, has a value outside
    [0, 1], or has a row that does not sum to 1 within 1e-4 (the message counts the rows).
    """
    slugs = _check_slugs(slugs)
    labels = _as_class_indices(labels, "labels", len(slugs))
    if labels.size == 0:
        raise ValueError("labels is empty: metrics need at least one example.")
    probabilities = _check_probabilities(probabilities, labels.shape[0], len(slugs))
    return _score_metrics(labels, probabilities, slugs)


def compute_metrics(
    labels,
    predictions=None,
    probabilities=None,
    *,
    label_names: Sequence[str],
) -> dict[str, float]:
    """All metrics for one evaluation: the entry point of this module.

    ``labels``: 1-D integer class indices, one per example. ``predictions``: the predicted
    class indices; when omitted, the argmax of ``probabilities`` (a tie goes to the lowest
    class index, as ``np.argmax``). ``probabilities``: ``[N, C]`` class probabilities;
    when given, the score-based keys are added. At least one of ``predictions`` and
    ``probabilities`` is required; when both are given, ``predictions`` is used as is (it
    may come from a threshold other than the argmax). ``label_names[i]`` names class i.

    Returns :func:`count_metrics` followed by :func:`score_metrics` (when probabilities are
    given), with keys in :func:`metric_keys` order and Python float values.

    >>> compute_metrics([0, 1, 1], [0, 1, 0], label_names=["neg", "pos"])["accuracy"]
    0.6666666666666666

    Raises ``ValueError`` on empty ``labels``, when neither ``predictions`` nor
    ``probabilities`` is given, and as the functions above.
    """
    slugs = class_slugs(label_names)
    num_classes = len(slugs)
    labels = _as_class_indices(labels, "labels", num_classes)
    if labels.size == 0:
        raise ValueError("labels is empty: metrics need at least one example.")
    if predictions is None and probabilities is None:
        raise ValueError(
            "compute_metrics needs predictions or probabilities (or both); got neither."
        )
    if probabilities is not None:
        probabilities = _check_probabilities(probabilities, labels.shape[0], num_classes)
    if predictions is None:
        predictions = np.argmax(probabilities, axis=1)
    result = count_metrics(confusion_matrix(labels, predictions, num_classes), slugs)
    if probabilities is not None:
        result.update(_score_metrics(labels, probabilities, slugs))
    return result
