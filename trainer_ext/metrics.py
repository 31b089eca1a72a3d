"""Classification metrics for a sequence classifier, with scikit-learn as the reference.

Pure functions over arrays: integer ``labels`` (the true class of each example), integer
``predictions`` and, optionally, ``probabilities`` (one row per example, one column per
class, each row summing to 1). This module imports numpy and scikit-learn only, never
torch or transformers, so it can be used and tested without a model.

Every value equals the scikit-learn function named below, called with ``labels=range(C)``
(so a class absent from the data still gets its keys) and ``zero_division=0.0``; the tests
check it. The values are computed in numpy, with the same operations as scikit-learn, for
speed: scikit-learn's input checks cost several times the computation on a million rows, and
count-based keys computed from confusion counts (:func:`count_metric_values`) are about 280x
faster than nine scikit-learn calls on 100k rows. Counts are also what makes the bootstrap and
threshold tuning cheap: one batched implementation serves a single checkpoint (a batch of
one), thousands of bootstrap resamples and every cut of a threshold scan.

The key registry
----------------
:data:`KEY_RULES` is the single source of truth for every built-in key: its name (or its
per-class prefix), its direction (higher / lower / none) and its kind (``"count"``: computed
from sufficient statistics such as the confusion matrix, so it can be summed across processes
and resampled by counts; ``"score"``: needs per-example scores). :func:`metric_direction` and
:func:`metric_kind` read it, and every other module asks them (``objectives.known_direction``
and ``objectives.is_score_based`` are these functions). A new task adds its rows.

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

``expected_cost`` (lower is better): the mean cost per example under the objective's cost matrix
(:func:`expected_cost`); a count-based key, produced by :func:`count_metric_values` when a cost
matrix is given.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "pick_keys",
    "KEY_RULES",
    "KeyRule",
    "ZERO_DIVISION",
    "batched_count_metric",
    "class_slugs",
    "compute_metrics",
    "confusion_matrix",
    "count_metric_values",
    "count_metrics",
    "expected_cost",
    "metric_direction",
    "metric_keys",
    "metric_kind",
    "score_based",
    "score_metrics",
    "slugify",
]

ZERO_DIVISION: float = 0.0
"""Value of every 0/0 (see the module docstring); scikit-learn's ``zero_division=0.0``."""


@dataclass(frozen=True)
class KeyRule:
    """One row of the key registry.

    ``name``: the key (``"accuracy"``), or with ``per_class=True`` the prefix of ``<name>_<c>``
    (``"recall"`` -> ``recall_negative``). ``greater_is_better``: True (higher is better), False
    (lower is better) or None (a count such as ``support_<c>``: no direction). ``kind``: ``"count"``
    (from sufficient statistics) or ``"score"`` (needs per-example scores).
    """

    name: str
    greater_is_better: bool | None
    kind: str
    per_class: bool = False


KEY_RULES: tuple[KeyRule, ...] = (
    KeyRule("accuracy", True, "count"),
    KeyRule("balanced_accuracy", True, "count"),
    KeyRule("mcc", True, "count"),
    KeyRule("precision_macro", True, "count"),
    KeyRule("recall_macro", True, "count"),
    KeyRule("f1_macro", True, "count"),
    KeyRule("f1_weighted", True, "count"),
    KeyRule("precision", True, "count", per_class=True),
    KeyRule("recall", True, "count", per_class=True),
    KeyRule("f1", True, "count", per_class=True),
    KeyRule("support", None, "count", per_class=True),
    KeyRule("log_loss", False, "score"),
    KeyRule("roc_auc", True, "score", per_class=True),
    KeyRule("average_precision", True, "score", per_class=True),
    # Needs the objective's cost matrix, so metric_keys() does not list it; a count-based key all the same.
    KeyRule("expected_cost", False, "count"),
    # Averages over labels (multi-label) or entity types (token): from the per-label / per-type counts.
    KeyRule("precision_micro", True, "count"),
    KeyRule("recall_micro", True, "count"),
    KeyRule("f1_micro", True, "count"),
    KeyRule("hamming_loss", False, "count"),
    # Token classification: correct labelled tokens / labelled tokens.
    KeyRule("token_accuracy", True, "count"),
    # Multi-label keys that need each example's whole label vector: resampled by rows.
    KeyRule("f1_samples", True, "score"),
    KeyRule("subset_accuracy", True, "score"),
    # Regression: need the rows (no sufficient statistics).
    KeyRule("mae", False, "score"),
    KeyRule("mse", False, "score"),
    KeyRule("rmse", False, "score"),
    KeyRule("median_absolute_error", False, "score"),
    KeyRule("r2", True, "score"),
    KeyRule("pearson", True, "score"),
    KeyRule("spearman", True, "score"),
)
"""Every built-in key: the one source of directions and kinds (see :func:`metric_direction`)."""

_SINGLE_LABEL_OVERALL = ("accuracy", "balanced_accuracy", "mcc", "precision_macro", "recall_macro", "f1_macro", "f1_weighted")
_SINGLE_LABEL_PER_CLASS = ("precision", "recall", "f1", "support")
_SINGLE_LABEL_SCORE_OVERALL = ("log_loss",)
_SINGLE_LABEL_SCORE_PER_CLASS = ("roc_auc", "average_precision")
# A class slugged "macro" would make f1_<c> collide with f1_macro.
_RESERVED_SLUGS = frozenset({"macro", "weighted"})
# Rows of `probabilities` must sum to 1 within this absolute tolerance.
_ROW_SUM_TOLERANCE = 1e-4
_NON_ALPHANUMERIC_RUN = re.compile(r"[\W_]+")
_SLUG = r"[^\W_]+(?:_[^\W_]+)*"


def _rule_pattern(rule: KeyRule) -> re.Pattern[str]:
    """The key's shape, optionally behind a held-out set's name (``reviews_2025_recall_negative``)."""
    body = f"{re.escape(rule.name)}_{_SLUG}" if rule.per_class else re.escape(rule.name)
    return re.compile(rf"(?:^|_){body}$")


_RULE_PATTERNS = tuple((rule, _rule_pattern(rule)) for rule in KEY_RULES)


def _matching_rules(key: str, slugs: Sequence[str] | None) -> list[KeyRule]:
    """Rules that ``key`` matches: exactly for these ``slugs``, or by shape (any slug, any set prefix)."""
    if slugs is None:
        return [rule for rule, pattern in _RULE_PATTERNS if pattern.search(key)]
    known = set(_check_slugs(slugs))
    return [
        rule
        for rule in KEY_RULES
        if (not rule.per_class and key == rule.name)
        or (rule.per_class and key.startswith(f"{rule.name}_") and key[len(rule.name) + 1 :] in known)
    ]


def metric_direction(key: str, slugs: Sequence[str] | None = None) -> bool | None:
    """Whether a larger value of ``key`` is better: THE answer the package uses for a key's direction.

    Returns ``True`` (higher is better), ``False`` (lower is better: ``log_loss``, ``expected_cost``)
    or ``None``: ``support_<c>`` (a count has no direction) and any key the registry does not know
    (a custom metric must state its direction; nothing is guessed from a ``"loss"`` suffix).

    With ``slugs`` the key must be exactly a key of these classes (``f1_neutral`` is None for classes
    ``["negative", "positive"]``). Without, it is decided by the key's shape alone, so that it works
    before the model's classes are known, and a held-out set's name may come first
    (``reviews_2025_recall_negative``: higher).
    """
    directions = {rule.greater_is_better for rule in _matching_rules(key, slugs)}
    if False in directions:
        return False
    if True in directions:
        return True
    return None


def metric_kind(key: str, slugs: Sequence[str] | None = None) -> str | None:
    """``"score"`` when ``key`` needs per-example scores, ``"count"`` when it is computed from
    sufficient statistics, None when the registry does not know it (same matching as
    :func:`metric_direction`)."""
    kinds = {rule.kind for rule in _matching_rules(key, slugs)}
    if "score" in kinds:
        return "score"
    return "count" if kinds else None


def score_based(key: str) -> bool:
    """Whether ``key`` needs probabilities: ``log_loss``, ``roc_auc_<c>``, ``average_precision_<c>``.

    Decided by the key's form alone (a held-out set's name may come first), without checking that
    ``<c>`` is a known class.
    """
    return metric_kind(key) == "score"


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
    keys = list(_SINGLE_LABEL_OVERALL)
    keys += [f"{prefix}_{slug}" for slug in slugs for prefix in _SINGLE_LABEL_PER_CLASS]
    if with_scores:
        keys += list(_SINGLE_LABEL_SCORE_OVERALL)
        keys += [f"{prefix}_{slug}" for slug in slugs for prefix in _SINGLE_LABEL_SCORE_PER_CLASS]
    return keys


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
    numerator, denominator = np.broadcast_arrays(numerator, denominator)
    result = np.full(numerator.shape, ZERO_DIVISION, dtype=np.float64)
    np.divide(numerator, denominator, out=result, where=denominator != 0)
    return result


def expected_cost(cms: np.ndarray, cost_matrix: np.ndarray, class_prior: np.ndarray | None = None) -> np.ndarray:
    """Mean cost per example for confusion matrices ``cms`` ([..., C, C], rows true, columns predicted).

    Without ``class_prior``: ``sum(cm * cost) / N``. With it (the class mix expected in production):
    ``sum_i prior_i * sum_j cm[i, j] / support_i * cost[i, j]``, each true class re-weighted from its
    held-out share to its production share; a class with no held-out example contributes 0.
    Lower is better. Returns an array of the batch shape (``[]`` for one matrix).
    """
    cms = np.asarray(cms, dtype=np.float64)
    cost = np.asarray(cost_matrix, dtype=np.float64)
    if class_prior is None:
        return (cms * cost).sum(axis=(-2, -1)) / cms.sum(axis=(-2, -1))
    rates = _divide(cms, cms.sum(axis=-1, keepdims=True))
    return (np.asarray(class_prior, dtype=np.float64)[:, None] * rates * cost).sum(axis=(-2, -1))


def count_metric_values(
    cms: np.ndarray,
    slugs: Sequence[str],
    keys: Iterable[str] | None = None,
    *,
    cost_matrix: np.ndarray | None = None,
    class_prior: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Count-based keys for a batch of confusion matrices ``cms`` ``[B, C, C]``: ``{key: values [B]}``.

    THE implementation of the count formulas: a single checkpoint is the batch of one
    (:func:`count_metrics`), bootstrap resamples are a batch of thousands, a threshold scan a batch of
    every cut. ``keys``: which keys (default: every count key of :func:`metric_keys`, plus
    ``expected_cost`` when ``cost_matrix`` is given), in the order asked. Computed from counts for
    speed (see the module docstring), with the operations of scikit-learn, so values agree with it.

    Edge cases (see the module docstring): 0/0 is ``ZERO_DIVISION``; ``balanced_accuracy`` averages
    recall over the classes with non-zero support only (as ``balanced_accuracy_score``, without its
    warning); ``mcc`` is 0.0 when its denominator is 0 (as ``matthews_corrcoef``); ``accuracy`` of an
    empty matrix is 0.0. Inputs are not validated here (see :func:`count_metrics`).

    Raises ``ValueError`` for a key that is not a count-based key of these classes, and for
    ``expected_cost`` without ``cost_matrix``.
    """
    slugs = list(slugs)
    counts = np.asarray(cms, dtype=np.float64)
    if counts.ndim == 2:
        counts = counts[None]
    wanted = list(keys) if keys is not None else (
        metric_keys(slugs, with_scores=False) + (["expected_cost"] if cost_matrix is not None else [])
    )
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    support = counts.sum(axis=-1)
    predicted = counts.sum(axis=-2)
    total = support.sum(axis=-1)
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    # The F1 formula from counts, as scikit-learn: 2 TP / (support + predicted); 0 when both are 0.
    f1 = _divide(2.0 * tp, support + predicted)
    n_correct = tp.sum(axis=-1)
    overall = {
        "accuracy": lambda: _divide(n_correct, total),
        "balanced_accuracy": lambda: _divide((recall * (support > 0)).sum(axis=-1), (support > 0).sum(axis=-1)),
        "mcc": lambda: _mcc(n_correct, total, support, predicted),
        "precision_macro": lambda: precision.mean(axis=-1),
        "recall_macro": lambda: recall.mean(axis=-1),
        "f1_macro": lambda: f1.mean(axis=-1),
        "f1_weighted": lambda: _divide((f1 * support).sum(axis=-1), total),
        "expected_cost": lambda: _expected_cost_of(counts, cost_matrix, class_prior),
    }
    per_class = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return pick_keys(wanted, overall, per_class, slugs, f"a count-based metric key for classes {list(slugs)}")


def pick_keys(
    keys: Sequence[str],
    overall: dict[str, Callable[[], np.ndarray]],
    per_item: dict[str, np.ndarray],
    slugs: Sequence[str],
    what: str,
) -> dict[str, np.ndarray]:
    """The values of ``keys`` from a batch of statistics: an overall key from ``overall`` (a function,
    computed only when asked), ``<prefix>_<slug>`` from ``per_item[prefix][..., i]`` where ``slugs[i]`` is
    the slug. Any other key is a ValueError saying it is not ``what``. Every task's count formulas end
    here."""
    index = {slug: i for i, slug in enumerate(slugs)}
    values: dict[str, np.ndarray] = {}
    for key in keys:
        prefix, _, slug = key.partition("_")
        if key in overall:
            values[key] = overall[key]()
        elif prefix in per_item and slug in index:
            values[key] = per_item[prefix][..., index[slug]]
        else:
            raise ValueError(f"key: {key!r} is not {what}")
    return values


def _mcc(n_correct: np.ndarray, n: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Matthews correlation, multiclass form: the operations of sklearn's ``matthews_corrcoef``."""
    cov_ytyp = n_correct * n - (support * predicted).sum(axis=-1)
    cov_ypyp = n * n - (predicted * predicted).sum(axis=-1)
    cov_ytyt = n * n - (support * support).sum(axis=-1)
    return _divide(cov_ytyp, np.sqrt(cov_ypyp * cov_ytyt))


def _expected_cost_of(counts: np.ndarray, cost_matrix, class_prior) -> np.ndarray:
    if cost_matrix is None:
        raise ValueError("key: 'expected_cost' needs a cost_matrix")
    return expected_cost(counts, cost_matrix, class_prior)


def batched_count_metric(
    cms: np.ndarray,
    key: str,
    slugs: Sequence[str],
    *,
    cost_matrix: np.ndarray | None = None,
    class_prior: np.ndarray | None = None,
) -> np.ndarray:
    """One count-based key for a stack of confusion matrices ``[R, C, C]`` (or one ``[C, C]``) -> ``[R]``.

    :func:`count_metric_values` for one key.
    """
    return count_metric_values(cms, slugs, [key], cost_matrix=cost_matrix, class_prior=class_prior)[key]


def _check_counts(cm: np.ndarray, num_classes: int, slugs: Sequence[str]) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.shape != (num_classes, num_classes):
        raise ValueError(
            f"cm must have shape ({num_classes}, {num_classes}) for the {num_classes} classes "
            f"{list(slugs)}; got shape {cm.shape}."
        )
    if cm.dtype.kind not in "iuf":
        raise ValueError(f"cm must hold counts; got dtype {cm.dtype}.")
    if cm.dtype.kind == "f" and not (np.isfinite(cm).all() and (cm == np.round(cm)).all()):
        raise ValueError("cm must hold whole, finite counts; got a fractional, NaN or infinite entry.")
    if (cm < 0).any():
        raise ValueError(f"cm must hold non-negative counts; got {int((cm < 0).sum())} negative entries.")
    if cm.sum() == 0:
        raise ValueError("cm sums to 0: metrics need at least one example.")
    return cm


def count_metrics(cm: np.ndarray, slugs: Sequence[str]) -> dict[str, float]:
    """Every count-based key of one confusion matrix, as Python floats (``support_<c>`` included).

    The confusion matrix is a sufficient statistic: matrices of disjoint shards add up, so
    several processes can sum theirs and call this once, and a bootstrap only needs to
    resample counts. ``cm[i, j]`` is the number of examples of class i predicted j (see
    :func:`confusion_matrix`); ``slugs[i]`` names class i. Key order is that of
    :func:`metric_keys`. The batch of one of :func:`count_metric_values`.

    Raises ``ValueError`` if ``cm`` is not a square matrix of size ``len(slugs)``, holds a
    negative, non-integer or non-finite count, or sums to 0 (no example).
    """
    slugs = _check_slugs(slugs)
    cm = _check_counts(cm, len(slugs), slugs)
    return {key: float(values[0]) for key, values in count_metric_values(cm[None], slugs).items()}


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
