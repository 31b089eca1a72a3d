"""How sure is "best"? Bootstrap intervals from confusion-matrix counts. Pure: numpy only.

Count-based metrics depend on the data only through the confusion matrix, so a bootstrap resample of
N examples is a multinomial draw of N over the C x C cells: resampling counts, not rows, costs
O(resamples x C^2) whatever N is (1,000,000 examples, 1,000 resamples: well under a second). For the
paired comparison of two checkpoints on the same examples, each example falls in one of C^3 joint
cells (true class, prediction of A, prediction of B); a multinomial draw over those cells gives both
resampled matrices at once, with the pairing kept.

Score-based keys (``log_loss``, ``roc_auc_<c>``, ``average_precision_<c>``) need the rows; they are
bootstrapped by resampling rows, which costs O(resamples x N) and is documented as slow.

Every function takes a ``seed``: the same inputs and seed give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "batched_count_metric",
    "expected_cost",
    "Interval",
    "PairedComparison",
    "bootstrap_interval",
    "paired_bootstrap",
]


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def expected_cost(
    cms: np.ndarray, cost_matrix: np.ndarray, class_prior: np.ndarray | None = None
) -> np.ndarray:
    """Mean cost per example for confusion matrices ``cms`` ([..., C, C], rows true, columns predicted).

    Without ``class_prior``: ``sum(cm * cost) / N``. With it (the class mix expected in production):
    ``sum_i prior_i * sum_j cm[i, j] / support_i * cost[i, j]``, each true class re-weighted from its
    held-out share to its production share; a class with no held-out example contributes 0.
    """
    cms = np.asarray(cms, dtype=np.float64)
    cost = np.asarray(cost_matrix, dtype=np.float64)
    if class_prior is None:
        return (cms * cost).sum(axis=(-2, -1)) / cms.sum(axis=(-2, -1))
    rates = _safe_divide(cms, cms.sum(axis=-1, keepdims=True))
    return (np.asarray(class_prior, dtype=np.float64)[:, None] * rates * cost).sum(axis=(-2, -1))


def batched_count_metric(
    cms: np.ndarray,
    key: str,
    slugs: Sequence[str],
    *,
    cost_matrix: np.ndarray | None = None,
    class_prior: np.ndarray | None = None,
) -> np.ndarray:
    """One count-based metric for a stack of confusion matrices ``[R, C, C]`` -> ``[R]``.

    The same definitions and zero-division policy as :func:`trainer_ext.metrics.count_metrics`
    (tests check equality); vectorised so that thousands of resamples cost one numpy call.
    """
    cms = np.asarray(cms, dtype=np.float64)
    if cms.ndim == 2:
        cms = cms[None]
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    support = cms.sum(axis=-1)
    predicted = cms.sum(axis=-2)
    total = cms.sum(axis=(-2, -1))
    if key == "expected_cost":
        if cost_matrix is None:
            raise ValueError("key: 'expected_cost' needs a cost_matrix")
        return expected_cost(cms, cost_matrix, class_prior)
    if key == "accuracy":
        return _safe_divide(tp.sum(axis=-1), total)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * tp, support + predicted)
    if key == "balanced_accuracy":
        present = support > 0
        return _safe_divide((recall * present).sum(axis=-1), present.sum(axis=-1))
    if key == "mcc":
        s = total
        c = tp.sum(axis=-1)
        cov_ytyp = c * s - (predicted * support).sum(axis=-1)
        cov_ypyp = s * s - (predicted * predicted).sum(axis=-1)
        cov_ytyt = s * s - (support * support).sum(axis=-1)
        return _safe_divide(cov_ytyp, np.sqrt(cov_ytyt * cov_ypyp))
    averages = {"precision_macro": precision, "recall_macro": recall, "f1_macro": f1}
    if key in averages:
        return averages[key].mean(axis=-1)
    if key == "f1_weighted":
        return _safe_divide((f1 * support).sum(axis=-1), total)
    for prefix, values in (("precision_", precision), ("recall_", recall), ("f1_", f1), ("support_", support)):
        if key.startswith(prefix) and key[len(prefix):] in slugs:
            return values[..., list(slugs).index(key[len(prefix):])]
    raise ValueError(f"key: {key!r} is not a count-based metric key for classes {list(slugs)}")


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval: ``low``/``high`` at ``confidence`` around ``value``."""

    value: float
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, float]:
        return {
            "value": self.value, "low": self.low, "high": self.high,
            "confidence": self.confidence, "resamples": self.resamples, "seed": self.seed,
        }


@dataclass(frozen=True)
class PairedComparison:
    """Best minus runner-up on the same examples, signed so that positive favours ``first``."""

    first: str
    second: str
    difference: float
    low: float
    high: float
    win_share: float  # share of resamples where first is strictly better
    confidence: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, float | str]:
        return dict(self.__dict__)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_interval(
    cm: np.ndarray,
    key: str,
    slugs: Sequence[str],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    cost_matrix: np.ndarray | None = None,
    class_prior: np.ndarray | None = None,
) -> Interval:
    """Percentile interval of a count-based ``key`` by resampling the confusion matrix's counts."""
    cm = np.asarray(cm, dtype=np.int64)
    n = int(cm.sum())
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cm.ravel() / n, size=resamples).reshape(resamples, *cm.shape)
    kwargs = {"cost_matrix": cost_matrix, "class_prior": class_prior}
    values = batched_count_metric(draws, key, slugs, **kwargs)
    low, high = _percentiles(values, confidence)
    point = float(batched_count_metric(cm, key, slugs, **kwargs)[0])
    return Interval(point, low, high, confidence, resamples, seed)


def paired_bootstrap(
    labels: np.ndarray,
    predictions_first: np.ndarray,
    predictions_second: np.ndarray,
    key: str,
    slugs: Sequence[str],
    *,
    greater_is_better: bool,
    names: tuple[str, str] = ("first", "second"),
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    cost_matrix: np.ndarray | None = None,
    class_prior: np.ndarray | None = None,
) -> PairedComparison:
    """Paired bootstrap of ``key(first) - key(second)`` on the same examples (signed by direction).

    Resamples the joint cells (true class, first's prediction, second's prediction) so that both
    checkpoints see the same resampled examples. ``win_share`` is the share of resamples in which
    ``first`` is strictly better; ``1 - win_share`` is a one-sided bootstrap p-value for "first is
    better".
    """
    c = len(slugs)
    labels = np.asarray(labels, dtype=np.int64)
    joint = (labels * c + np.asarray(predictions_first, dtype=np.int64)) * c + np.asarray(predictions_second, dtype=np.int64)
    counts = np.bincount(joint, minlength=c**3)
    n = int(counts.sum())
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=resamples).reshape(resamples, c, c, c)
    cm_first = draws.sum(axis=3)  # [R, true, first]
    cm_second = draws.sum(axis=2)  # [R, true, second]
    kwargs = {"cost_matrix": cost_matrix, "class_prior": class_prior}
    sign = 1.0 if greater_is_better else -1.0
    diff = sign * (batched_count_metric(cm_first, key, slugs, **kwargs) - batched_count_metric(cm_second, key, slugs, **kwargs))
    base = counts.reshape(c, c, c)
    point = sign * float(
        batched_count_metric(base.sum(axis=2), key, slugs, **kwargs)[0]
        - batched_count_metric(base.sum(axis=1), key, slugs, **kwargs)[0]
    )
    low, high = _percentiles(diff, confidence)
    valid = diff[~np.isnan(diff)]
    win_share = float((valid > 0).mean()) if valid.size else float("nan")
    return PairedComparison(names[0], names[1], point, low, high, win_share, confidence, resamples, seed)
