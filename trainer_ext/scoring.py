"""From one checkpoint's gathered predictions to its flat metric dict. Pure: numpy only.

Used by the callback at each save and by ``trainer-ext evaluate``; the same inputs give the same
record everywhere (every rank computes it, from identical gathered arrays).

* one held-out set: keys as in :mod:`trainer_ext.metrics` (``recall_negative``);
* several sets (``{"reviews_2024": a, "reviews_2025": b}``): ``<set>_<key>`` for each set, and the
  unprefixed key combining the sets (``across_sets="mean"``, weighted by ``set_weights``, or
  ``"worst"``: the lowest value of a higher-is-better key, the highest of a lower-is-better one;
  ``support_<c>`` adds up);
* ``expected_cost`` when the objective has a ``cost_matrix``;
* custom metrics (:class:`Metric`) and ``evaluate`` modules, computed on the gathered predictions;
* ``tune_threshold``: count-based keys are computed at the tuned threshold (binary only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigurationError
from .metrics import compute_metrics, confusion_matrix, metric_keys
from .objectives import Objective, is_score_based, known_direction
from .thresholds import tune_threshold
from .uncertainty import Interval, bootstrap_interval, expected_cost

__all__ = ["Metric", "SetResult", "CheckpointScores", "score_checkpoint", "objective_set"]


@dataclass(frozen=True)
class Metric:
    """A metric the library does not compute, with its direction.

    ``fn(metrics) -> float`` when ``inputs="metrics"`` (the built-in metric dict of one held-out set),
    or ``fn(labels, probabilities, predictions) -> float`` when ``inputs="predictions"`` (numpy arrays;
    ``probabilities`` is None when the model gives no scores).
    """

    name: str
    fn: Callable[..., float]
    greater_is_better: bool
    inputs: str = "metrics"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not self.name.replace("_", "").isalnum():
            raise ConfigurationError(f"Metric.name: expected letters, digits and '_'; got {self.name!r}.")
        if not callable(self.fn):
            raise ConfigurationError(f"Metric.fn: expected a callable; got {type(self.fn).__name__}.")
        if not isinstance(self.greater_is_better, bool):
            raise ConfigurationError(
                f"Metric.greater_is_better: expected True or False for {self.name!r}; got {self.greater_is_better!r}."
            )
        if self.inputs not in ("metrics", "predictions"):
            raise ConfigurationError(f"Metric.inputs: expected 'metrics' or 'predictions'; got {self.inputs!r}.")


@dataclass
class SetResult:
    """One held-out set's gathered outputs, in held-out order."""

    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None


@dataclass
class CheckpointScores:
    metrics: dict[str, float]
    predictions: dict[str | None, np.ndarray]  # per set, after the threshold if one was tuned
    confusion_matrices: dict[str | None, np.ndarray]
    threshold: float | None = None
    interval: Interval | None = None
    notes: list[str] = field(default_factory=list)


def objective_set(objective: Objective, set_names: Sequence[str | None]) -> str | None:
    """Which held-out set the objective's metric reads: the only one, the one its key names, or
    None when it combines several."""
    if len(set_names) == 1:
        return set_names[0]
    for name in set_names:
        if name is not None and objective.metric.startswith(f"{name}_"):
            return name
    return None


def _set_metrics(
    result: SetResult,
    slugs: Sequence[str],
    objective: Objective,
    custom: Sequence[Metric],
    modules: Sequence[Any],
    predictions: np.ndarray,
) -> dict[str, float]:
    metrics = compute_metrics(result.labels, predictions, result.probabilities, label_names=slugs)
    cm = confusion_matrix(result.labels, predictions, len(slugs))
    if objective.cost_matrix is not None:
        prior = None if objective.class_prior is None else np.asarray(objective.class_prior)
        metrics["expected_cost"] = float(expected_cost(cm, np.asarray(objective.cost_matrix), prior))
    for metric in custom:
        if metric.inputs == "metrics":
            value = metric.fn(dict(metrics))
        else:
            value = metric.fn(result.labels, result.probabilities, predictions)
        metrics[metric.name] = float(value)
    for module in modules:
        outputs = module.compute(predictions=predictions.tolist(), references=result.labels.tolist())
        for key, value in (outputs or {}).items():
            if isinstance(value, (int, float, np.integer, np.floating)):
                if key in metrics:
                    raise ConfigurationError(
                        f"evaluate_modules: {getattr(module, 'name', module)!r} returns {key!r}, which is already a "
                        f"metric key; wrap the module in a Metric with another name."
                    )
                metrics[key] = float(value)
    return metrics


def _combine(values: list[float], weights: list[float], key: str, how: str, greater: bool | None = None) -> float:
    """``greater``: the key's direction when it is not built in (a custom metric, an evaluate module's output)."""
    if key.startswith("support_"):
        return float(sum(values))
    if any(math.isnan(v) for v in values):
        return math.nan
    if how == "worst":
        direction = known_direction(key) if greater is None else greater
        return float(min(values) if direction is not False else max(values))
    return float(np.average(values, weights=weights))


def score_checkpoint(
    results: Mapping[str | None, SetResult],
    slugs: Sequence[str],
    objective: Objective,
    *,
    custom: Sequence[Metric] = (),
    modules: Sequence[Any] = (),
    custom_directions: Mapping[str, bool] | None = None,
) -> CheckpointScores:
    """Every metric of one checkpoint, the tuned threshold, and the objective's bootstrap interval."""
    names = list(results)
    target = objective_set(objective, names)
    threshold = None
    predictions: dict[str | None, np.ndarray] = {}
    for name, result in results.items():
        predictions[name] = result.predictions
    if objective.tune_threshold:
        result = results[target]
        if result.probabilities is None:
            raise ConfigurationError("tune_threshold: the model gives no scores to put a threshold on.")
        base = objective.replace(metric=_unprefixed(objective.metric, target), tie_breakers=[
            _unprefixed(k, target) for k in objective.tie_breakers
        ], constraints=[f"{_unprefixed(c.metric, target)} {c.op} {c.bound!r}" for c in objective.constraints])
        choice = tune_threshold(result.labels, result.probabilities[:, 1], base, slugs)
        threshold = choice.threshold
        for name, res in results.items():  # the same threshold applies to every set
            if res.probabilities is not None:
                predictions[name] = (res.probabilities[:, 1] >= threshold).astype(np.int64)

    per_set = {
        name: _set_metrics(res, slugs, objective, custom, modules, predictions[name]) for name, res in results.items()
    }
    if names == [None]:
        metrics = per_set[None]
    else:
        metrics = {}
        for name in names:
            metrics.update({f"{name}_{k}": v for k, v in per_set[name].items()})
        weights_by_set = dict(objective.set_weights or ())
        weights = [weights_by_set.get(str(n), 1.0 if not weights_by_set else 0.0) for n in names]
        directions = dict(custom_directions or {})
        own_key = _unprefixed(objective.metric, target)
        if known_direction(own_key) is None:  # e.g. an evaluate module's key: only the objective knows its direction
            directions.setdefault(own_key, objective.greater_is_better)
        for key in per_set[names[0]]:
            values = [per_set[n][key] for n in names]
            metrics[key] = _combine(values, weights, key, objective.across_sets, directions.get(key))

    cms = {name: confusion_matrix(results[name].labels, predictions[name], len(slugs)) for name in names}
    interval, notes = None, []
    if objective.bootstrap_resamples > 0:
        key = _unprefixed(objective.metric, target)
        if target is None and len(names) > 1:
            notes.append("no interval: the objective combines several held-out sets")
        elif is_score_based(key):
            interval = _row_bootstrap(results[target], key, slugs, objective)
        elif key in metric_keys(slugs, with_scores=False) or key == "expected_cost":
            interval = bootstrap_interval(
                cms[target], key, slugs, resamples=objective.bootstrap_resamples,
                confidence=objective.confidence, seed=objective.seed,
                cost_matrix=None if objective.cost_matrix is None else np.asarray(objective.cost_matrix),
                class_prior=None if objective.class_prior is None else np.asarray(objective.class_prior),
            )
        else:
            notes.append(f"no interval: {key!r} is a custom metric")
    return CheckpointScores(metrics, predictions, cms, threshold, interval, notes)


def _unprefixed(key: str, set_name: str | None) -> str:
    if set_name and key.startswith(f"{set_name}_"):
        return key[len(set_name) + 1 :]
    return key


def _row_bootstrap(result: SetResult, key: str, slugs: Sequence[str], objective: Objective) -> Interval:
    """Score-based keys need the rows: resample examples (slow: resamples x N; documented)."""
    from .metrics import score_metrics

    rng = np.random.default_rng(objective.seed)
    n = result.labels.size
    values = np.empty(objective.bootstrap_resamples)
    for i in range(objective.bootstrap_resamples):
        rows = rng.integers(0, n, n)
        values[i] = score_metrics(result.labels[rows], result.probabilities[rows], slugs)[key]
    point = score_metrics(result.labels, result.probabilities, slugs)[key]
    finite = values[~np.isnan(values)]
    tail = (1 - objective.confidence) / 2 * 100
    low, high = (np.percentile(finite, [tail, 100 - tail]) if finite.size else (math.nan, math.nan))
    return Interval(float(point), float(low), float(high), objective.confidence, objective.bootstrap_resamples, objective.seed)
