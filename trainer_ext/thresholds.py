"""Tune a binary decision threshold per checkpoint, and apply it at inference. Pure: numpy only.

A binary classifier predicts class id 1 when ``probability[:, 1] >= threshold`` (0.5 by default with
argmax). :func:`tune_threshold` scans every distinct score of the held-out set as a cut, computes the
confusion matrix at every cut in one cumulative pass (O(N log N)), and keeps the cut that wins under
the same rules as checkpoint selection: feasible first (every constraint met), then the objective
value, then the tie-breakers; remaining ties go to the cut closest to 0.5. The threshold returned is
the midpoint between the chosen cut and the next lower distinct score, so held-out predictions are
exactly those of the cut, and it does not sit on a training score.

At inference: :func:`apply_threshold` on probabilities or logits, or :func:`predict_with_threshold`
on a model whose ``config.decision_threshold`` was written by trainer_ext.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .objectives import Objective, known_direction, total_violation
from .tasks import SingleLabel, Task, as_task

__all__ = ["ThresholdChoice", "tune_threshold", "apply_threshold", "predict_with_threshold", "CONFIG_KEY"]

CONFIG_KEY = "decision_threshold"  # model.config.decision_threshold: the task's threshold_config(t)


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: Any  # a float for a binary single-label task
    predictions: np.ndarray  # held-out predictions at the threshold
    objective_value: float
    feasible: bool
    candidates: int  # how many cuts were compared


def tune_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    objective: Objective,
    slugs: Task | Sequence[str],
) -> ThresholdChoice:
    """Choose the threshold on ``scores`` that is best for ``objective`` (see the module docstring).

    ``slugs``: the task, or the class slugs of a binary single-label task; ``scores`` as the task's
    :meth:`~trainer_ext.tasks.Task.threshold_cuts` takes them (for a binary task, the probability of
    class id 1 ``[N]``, or the probabilities ``[N, 2]``).
    """
    task = as_task(slugs)
    per_label = getattr(task, "tune_thresholds", None)  # multi-label: one threshold per label
    if per_label is not None:
        chosen = per_label(labels, scores, objective)
        predictions = task.apply_threshold(scores, chosen)
        value = task.metrics(labels, predictions, None).get(objective.metric, float("nan"))
        return ThresholdChoice(chosen, predictions, float(value), True, len(chosen))
    cms, thresholds = task.threshold_cuts(labels, scores)
    costs = {"cost_matrix": objective.cost_matrix, "class_prior": objective.class_prior}
    keys = [objective.metric, *(c.metric for c in objective.constraints), *objective.tie_breakers]
    values = task.statistic_values(cms, list(dict.fromkeys(keys)), **costs)
    best, feasible = _best_cut(values, thresholds, objective)
    return ThresholdChoice(
        threshold=float(thresholds[best]),
        predictions=task.apply_threshold(scores, thresholds[best]),
        objective_value=float(values[objective.metric][best]),
        feasible=feasible,
        candidates=int(thresholds.size),
    )


def _best_cut(values: Mapping[str, np.ndarray], thresholds: np.ndarray, objective: Objective) -> tuple[int, bool]:
    """The cut that wins under the rules of checkpoint selection: feasible first (else the least
    violation), then the objective value, then the tie-breakers, then the threshold closest to 0.5."""
    violation = np.broadcast_to(total_violation(objective.constraints, values), thresholds.shape)
    feasible = violation == 0
    sign = 1.0 if objective.greater_is_better else -1.0
    order = [np.abs(thresholds - 0.5)]  # last resort: closest to 0.5
    for key in reversed(objective.tie_breakers):
        order.append(-np.nan_to_num(values[key] * (1.0 if known_direction(key) else -1.0), nan=-np.inf))
    order.append(-np.nan_to_num(sign * values[objective.metric], nan=-np.inf))
    order.append(~feasible if feasible.any() else violation)
    best = int(np.lexsort(order)[0])
    return best, bool(feasible[best])


def apply_threshold(scores: np.ndarray, threshold: float, *, from_logits: bool = False) -> np.ndarray:
    """Predicted class ids of a binary classifier at ``threshold`` on the probability of class id 1.

    ``scores``: probabilities ``[N, 2]`` (or logits with ``from_logits=True``), or ``[N]`` probabilities
    of class id 1.
    """
    task = SingleLabel(["0", "1"])
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2 and from_logits:
        scores = task.probabilities(scores)
    return task.apply_threshold(scores, threshold)


def predict_with_threshold(model, **inputs):
    """Run a binary sequence classifier and apply the threshold stored in its config (torch model).

    Falls back to argmax when the config holds no ``decision_threshold``.
    """
    import torch

    with torch.no_grad():
        logits = model(**inputs).logits.float()
    return SingleLabel(["0", "1"]).predict_tensor(logits, getattr(model.config, CONFIG_KEY, None))
