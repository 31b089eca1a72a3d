"""How sure is "best"? Bootstrap intervals and paired comparisons. Pure: numpy only.

Count-based metrics depend on the data only through the task's sufficient statistics (for a
single-label task the confusion matrix), so a bootstrap resample of N examples is a draw of the
statistics, not of rows (:meth:`trainer_ext.tasks.Task.resample`): for a confusion matrix a
multinomial draw of N over the C x C cells, O(resamples x C^2) whatever N is (1,000,000 examples,
1,000 resamples: well under a second). The paired comparison of two checkpoints on the same examples
draws both checkpoints' statistics from the same resampled examples
(:meth:`trainer_ext.tasks.Task.resample_paired`).

Score-based keys (``log_loss``, ``roc_auc_<c>``, ``average_precision_<c>``) need the rows; they are
bootstrapped by resampling rows (:func:`row_bootstrap`), which costs O(resamples x N) and is slow.

Every function takes a ``seed``: the same inputs and seed give the same interval. Wherever a task is
expected, the class slugs of a single-label task may be passed instead (the first version's calls).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .metrics import batched_count_metric, expected_cost  # noqa: F401 - their home was here; kept importable
from .tasks import Task, as_task

__all__ = [
    "Interval",
    "PairedComparison",
    "batched_count_metric",
    "bootstrap_interval",
    "expected_cost",
    "paired_bootstrap",
    "percentile_interval",
    "row_bootstrap",
]


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
        return asdict(self)


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
        return asdict(self)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile range of ``values``, NaN resamples left out
    (``(nan, nan)`` when every value is NaN). The one percentile rule of every interval."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_interval(
    cm: np.ndarray,
    key: str,
    slugs: Task | Sequence[str],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    cost_matrix: np.ndarray | None = None,
    class_prior: np.ndarray | None = None,
) -> Interval:
    """Percentile interval of a count-based ``key`` by resampling the statistics ``cm`` (a confusion
    matrix for a single-label task; ``slugs``: the task, or a single-label task's class slugs)."""
    task = as_task(slugs)
    costs = {"cost_matrix": cost_matrix, "class_prior": class_prior}
    draws = task.resample(cm, resamples=resamples, rng=np.random.default_rng(seed))
    low, high = percentile_interval(task.statistic_values(draws, [key], **costs)[key], confidence)
    point = float(task.statistic_values(np.asarray(cm)[None], [key], **costs)[key][0])
    return Interval(point, low, high, confidence, resamples, seed)


def paired_bootstrap(
    labels: np.ndarray,
    predictions_first: np.ndarray,
    predictions_second: np.ndarray,
    key: str,
    slugs: Task | Sequence[str],
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

    Both checkpoints see the same resampled examples. ``win_share`` is the share of resamples in which
    ``first`` is strictly better; ``1 - win_share`` is a one-sided bootstrap p-value for "first is
    better".
    """
    task = as_task(slugs)
    costs = {"cost_matrix": cost_matrix, "class_prior": class_prior}
    rng = np.random.default_rng(seed)
    first, second, (observed_first, observed_second) = task.resample_paired(
        labels, predictions_first, predictions_second, resamples=resamples, rng=rng
    )

    def value(stats: np.ndarray) -> np.ndarray:
        return task.statistic_values(stats, [key], **costs)[key]

    sign = 1.0 if greater_is_better else -1.0
    diff = sign * (value(first) - value(second))
    point = sign * float(value(observed_first[None])[0] - value(observed_second[None])[0])
    low, high = percentile_interval(diff, confidence)
    valid = diff[~np.isnan(diff)]
    win_share = float((valid > 0).mean()) if valid.size else math.nan
    return PairedComparison(names[0], names[1], point, low, high, win_share, confidence, resamples, seed)


def row_bootstrap(labels: np.ndarray, scores: np.ndarray, key: str, task: Task | Sequence[str], objective: Any) -> Interval:
    """Percentile interval of a score-based ``key`` by resampling examples (slow: resamples x N), with the
    objective's ``bootstrap_resamples``, ``confidence`` and ``seed``."""
    task = as_task(task)
    resamples, confidence, seed = objective.bootstrap_resamples, objective.confidence, objective.seed
    labels, scores = np.asarray(labels), np.asarray(scores)
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    values = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, n, n)
        values[i] = task.score_values(labels[rows], scores[rows])[key]
    point = task.score_values(labels, scores)[key]
    low, high = percentile_interval(values, confidence)
    return Interval(float(point), low, high, confidence, resamples, seed)
