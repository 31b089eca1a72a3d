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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .objectives import Objective, known_direction
from .uncertainty import batched_count_metric

__all__ = ["ThresholdChoice", "tune_threshold", "apply_threshold", "CONFIG_KEY"]

CONFIG_KEY = "decision_threshold"  # model.config.decision_threshold = {"class_id": 1, "threshold": t}


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    predictions: np.ndarray  # held-out predictions at the threshold
    objective_value: float
    feasible: bool
    candidates: int  # how many cuts were compared


def _vector_violation(values: np.ndarray, op: str, bound: float) -> np.ndarray:
    scale = abs(bound) if bound != 0 else 1.0
    miss = (bound - values) if op in (">=", ">") else (values - bound)
    out = np.where(miss > 0, miss / scale, 0.0)
    if op in (">", "<"):
        out = np.where(miss == 0, math.ulp(1.0), out)
    return np.where(np.isnan(values), np.inf, out)


def tune_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    objective: Objective,
    slugs: Sequence[str],
) -> ThresholdChoice:
    """Choose the threshold on ``scores`` (probability of class id 1) that is best for ``objective``."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    is_positive = labels[order] == 1
    # cut k: predict 1 for the first k examples in descending score order; only cuts between distinct scores
    distinct_end = np.flatnonzero(np.diff(sorted_scores) != 0) + 1
    cut_sizes = np.concatenate(([0], distinct_end, [scores.size]))
    tp = np.concatenate(([0], np.cumsum(is_positive)))[cut_sizes]
    fp = cut_sizes - tp
    positives, negatives = int(is_positive.sum()), int(scores.size - is_positive.sum())
    cms = np.empty((cut_sizes.size, 2, 2), dtype=np.float64)
    cms[:, 0, 0] = negatives - fp
    cms[:, 0, 1] = fp
    cms[:, 1, 0] = positives - tp
    cms[:, 1, 1] = tp

    kwargs = {
        "cost_matrix": None if objective.cost_matrix is None else np.asarray(objective.cost_matrix),
        "class_prior": None if objective.class_prior is None else np.asarray(objective.class_prior),
    }
    values = batched_count_metric(cms, objective.metric, slugs, **kwargs)
    violation = np.zeros(cut_sizes.size)
    for c in objective.constraints:
        violation += _vector_violation(batched_count_metric(cms, c.metric, slugs, **kwargs), c.op, c.bound)
    feasible = violation == 0

    # thresholds: between the last score predicted 1 and the next one down
    upper = np.concatenate(([np.inf], sorted_scores[cut_sizes[1:] - 1]))
    lower = np.concatenate((sorted_scores[cut_sizes[:-1]], [-np.inf]))
    thresholds = np.where(
        np.isinf(upper), np.nextafter(sorted_scores[0], np.inf) if scores.size else 1.0,
        np.where(np.isinf(lower), upper / 2.0, (upper + lower) / 2.0),
    )

    sign = 1.0 if objective.greater_is_better else -1.0
    keys = [np.abs(thresholds - 0.5)]  # last resort: closest to 0.5
    for key in reversed(objective.tie_breakers):
        tb = batched_count_metric(cms, key, slugs, **kwargs) * (1.0 if known_direction(key) else -1.0)
        keys.append(-np.nan_to_num(tb, nan=-np.inf))
    keys.append(-np.nan_to_num(sign * values, nan=-np.inf))
    if feasible.any():
        keys.append(~feasible)
    else:
        keys.append(violation)
    best = int(np.lexsort(keys)[0])
    predictions = (scores >= thresholds[best]).astype(np.int64)
    return ThresholdChoice(
        threshold=float(thresholds[best]),
        predictions=predictions,
        objective_value=float(values[best]),
        feasible=bool(feasible[best]),
        candidates=int(cut_sizes.size),
    )


def apply_threshold(scores: np.ndarray, threshold: float, *, from_logits: bool = False) -> np.ndarray:
    """Predicted class ids of a binary classifier at ``threshold`` on the probability of class id 1.

    ``scores``: probabilities ``[N, 2]`` (or logits with ``from_logits=True``), or ``[N]`` probabilities
    of class id 1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2:
        if from_logits:
            shifted = scores - scores.max(axis=1, keepdims=True)
            scores = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        scores = scores[:, 1]
    return (scores >= threshold).astype(np.int64)


def predict_with_threshold(model, **inputs):
    """Run a binary sequence classifier and apply the threshold stored in its config (torch model).

    Falls back to argmax when the config holds no ``decision_threshold``.
    """
    import torch

    with torch.no_grad():
        logits = model(**inputs).logits.float()
    setting = getattr(model.config, CONFIG_KEY, None)
    if not setting:
        return logits.argmax(-1)
    probabilities = torch.softmax(logits, dim=-1)[:, int(setting.get("class_id", 1))]
    return (probabilities >= float(setting["threshold"])).long()
