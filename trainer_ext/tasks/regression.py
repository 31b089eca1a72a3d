"""Regression: one real value per example (``num_labels == 1`` or ``problem_type="regression"``).

Keys, each equal to its reference on the held-out labels ``y`` and the model's outputs ``p``:

==========================  ===============================================  =========
key                         reference                                        direction
==========================  ===============================================  =========
``mae``                     ``sklearn.metrics.mean_absolute_error``          lower
``mse``                     ``sklearn.metrics.mean_squared_error``           lower
``rmse``                    ``sklearn.metrics.root_mean_squared_error``      lower
``median_absolute_error``   ``sklearn.metrics.median_absolute_error``        lower
``r2``                      ``sklearn.metrics.r2_score`` (constant ``y``:    higher
                            1.0 when ``p == y`` exactly, else 0.0, as
                            scikit-learn's ``force_finite``)
``pearson``                 ``scipy.stats.pearsonr`` (NaN when ``y`` or      higher
                            ``p`` is constant)
``spearman``                ``scipy.stats.spearmanr`` (ties: average ranks;  higher
                            NaN when constant)
==========================  ===============================================  =========

There are no sufficient statistics: :meth:`Regression.statistics` is an empty array (the record's
``confusion_matrix`` is ``[]``), :meth:`Regression.count_keys` is empty, and every interval is a
row bootstrap. Keys that need classes (``accuracy``, ``recall_<c>``, ...), cost matrices and
threshold tuning are refused with a message listing the regression keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigurationError
from . import Task, model_logits

__all__ = ["Regression", "REGRESSION_KEYS"]

REGRESSION_KEYS = ("mae", "mse", "rmse", "r2", "pearson", "spearman", "median_absolute_error")


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their ranks), as ``scipy.stats.rankdata``."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.concatenate(([True], sorted_values[1:] != sorted_values[:-1]))
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate((first[1:], [values.size])) - 1
    ranks = np.empty(values.size)
    ranks[order] = ((first + last) / 2.0 + 1.0)[group]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xm, ym = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((xm * xm).sum()) * float((ym * ym).sum()))
    if denominator == 0.0 or x.size < 2:
        return math.nan
    return float(max(-1.0, min(1.0, float((xm * ym).sum()) / denominator)))


class Regression(Task):
    """One real output per example; see the module docstring. Rows: ``[index, value]``; predictions
    and scores: the outputs float64 ``[N]``."""

    name: ClassVar[str] = "regression"

    def __init__(self, label_names: Sequence[str] = ("value",)) -> None:  # noqa: D107 - one output, any name
        names = [str(n) for n in label_names] or ["value"]
        if len(names) != 1:
            raise ConfigurationError(
                f"task: a regression model has one output (num_labels=1); got {len(names)} labels {names}."
            )
        self.label_names = names
        self.slugs = []  # no classes: no per-class keys

    @property
    def row_width(self) -> int:  # type: ignore[override]
        return 1

    # ---- 1. held-out labels ------------------------------------------------------------------

    def read_labels(self, raw: Sequence[Any], *, argument: str) -> np.ndarray:
        """Finite real numbers (int, float, 0-d or 1-element arrays) -> float64 ``[N]``."""
        out = np.empty(len(raw), dtype=np.float64)
        for row, value in enumerate(raw):
            number = self._number(value)
            if number is None:
                raise ConfigurationError(
                    f"{argument}: the model is a regression model (one output) but labels[{row}] is {value!r}. "
                    f"Expected one finite number per example."
                )
            out[row] = number
        return out

    @staticmethod
    def _number(value: Any) -> float | None:
        if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
            value = value.tolist()
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    # ---- 2. model outputs to rows (torch) ------------------------------------------------------

    def forward(self, model: Any, inputs: Mapping[str, Any]) -> Any:
        return model_logits(model, inputs, "a regression model must return logits [batch, 1]")

    def rows(self, index: np.ndarray, scores: Any, batch: Mapping[str, Any] | None = None) -> np.ndarray:
        scores = scores.detach()
        if scores.dim() == 2 and scores.shape[-1] == 1:
            scores = scores[:, 0]
        if scores.dim() != 1 or scores.shape[0] != len(index):
            raise ConfigurationError(
                f"model: outputs have shape {tuple(scores.shape)}, expected [batch, 1] for a regression model "
                f"(num_labels=1)."
            )
        out = np.empty((len(index), 2), dtype=np.float64)
        out[:, 0] = index
        out[:, 1] = scores.float().cpu().numpy()
        return out

    # ---- 3. rows to predictions and scores ---------------------------------------------------

    def outputs(self, rows: np.ndarray, num_examples: int) -> tuple[np.ndarray, np.ndarray | None]:
        if rows.shape[0] != num_examples or not np.array_equal(rows[:, 0], np.arange(num_examples)):
            raise RuntimeError(f"internal error: gathered {rows.shape[0]} rows for {num_examples} held-out examples")
        values = rows[:, 1].copy()
        return values, values

    # ---- 4. keys and metrics ---------------------------------------------------------------

    def sample_outputs(self) -> tuple[list[Any], list[Any]]:
        return [0.0, 1.0], [0.0, 1.0]

    def metric_keys(self, *, with_scores: bool = True, with_cost: bool = False) -> list[str]:
        return list(REGRESSION_KEYS)

    def count_keys(self, *, with_cost: bool = False) -> list[str]:
        return []

    def metrics(
        self, labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray | None, *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, float]:
        return self.score_values(labels, predictions)

    # ---- 5. sufficient statistics (none) ---------------------------------------------------

    def statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """No sufficient statistics: an empty array (so records and sums need no special case)."""
        return np.zeros((0,), dtype=np.int64)

    def statistic_values(
        self, stats: np.ndarray, keys: Sequence[str], *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, np.ndarray]:
        if keys:
            raise ValueError(f"key: regression keys need the rows, not counts; got {list(keys)}.")
        return {}

    def score_values(self, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        """Every regression key of ``labels`` and outputs ``scores`` (both ``[N]``, N >= 1)."""
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        p = np.asarray(scores, dtype=np.float64).reshape(-1)
        if y.size == 0 or y.shape != p.shape:
            raise ValueError(f"labels and scores must be non-empty and of one length; got {y.shape} and {p.shape}.")
        error = p - y
        mse = float(np.average(error**2))
        residual = float(((y - p) ** 2).sum())
        total = float(((y - np.average(y)) ** 2).sum())
        if total != 0.0:
            r2 = 1.0 - residual / total
        else:
            r2 = 1.0 if residual == 0.0 else 0.0
        return {
            "mae": float(np.average(np.abs(error))),
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "r2": float(r2),
            "pearson": _pearson(y, p),
            "spearman": _pearson(_ranks(y), _ranks(p)),
            "median_absolute_error": float(np.median(np.abs(error))),
        }

    def resample(self, stats: np.ndarray, *, resamples: int, rng: np.random.Generator) -> np.ndarray:
        raise ConfigurationError("require_significance: regression keys are resampled by rows; no count bootstrap.")

    def resample_paired(
        self, labels: np.ndarray, first: np.ndarray, second: np.ndarray, *, resamples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        raise ConfigurationError("require_significance: regression keys are resampled by rows; no paired count bootstrap.")

    # ---- 6. decision thresholds (none) -------------------------------------------------------

    def threshold_cuts(self, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise ConfigurationError("tune_threshold: a regression model has no decision threshold.")

    def apply_threshold(self, scores: np.ndarray, threshold: Any) -> np.ndarray:
        raise ConfigurationError("tune_threshold: a regression model has no decision threshold.")

    def threshold_config(self, threshold: Any) -> dict[str, Any]:
        raise ConfigurationError("tune_threshold: a regression model has no decision threshold.")

    def threshold_from_config(self, setting: Mapping[str, Any]) -> Any:
        raise ConfigurationError("tune_threshold: a regression model has no decision threshold.")

    # ---- 7. the task's checks of an objective ------------------------------------------------

    def check_objective(self, objective: Any) -> None:
        """Refuse class keys, cost matrices and threshold tuning, listing the regression keys."""
        from ..metrics import metric_kind

        # Built-in keys of other tasks only: a custom Metric's name is the callback's to check.
        wrong = [k for k in objective.keys if k not in REGRESSION_KEYS and metric_kind(k) is not None]
        if wrong:
            raise ConfigurationError(
                f"objective: {wrong} need classes, but this model is a regression model (num_labels=1 or "
                f"problem_type='regression'). Regression keys: {list(REGRESSION_KEYS)}."
            )
        if objective.cost_matrix is not None or objective.class_prior is not None:
            raise ConfigurationError("cost_matrix: a regression model has no classes to cost; use 'mae' or 'mse'.")
        if objective.tune_threshold or objective.require_significance:
            what = "tune_threshold" if objective.tune_threshold else "require_significance"
            raise ConfigurationError(
                f"{what}: not available for a regression model (no classes, no counts). Regression keys: "
                f"{list(REGRESSION_KEYS)}."
            )
