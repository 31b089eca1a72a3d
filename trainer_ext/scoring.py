"""From one checkpoint's gathered predictions to its flat metric dict, through the task. Pure: numpy only.

Used by the callback at each save and by ``trainer-ext evaluate``; the same inputs give the same
record everywhere (every rank computes it, from identical gathered arrays). What the keys mean is the
task's (:mod:`trainer_ext.tasks`); this module combines them:

* one held-out set: the task's keys (``recall_negative``);
* several sets (``{"reviews_2024": a, "reviews_2025": b}``): ``<set>_<key>`` for each set, and the
  unprefixed key combining the sets (``across_sets="mean"``, weighted by ``set_weights``, or
  ``"worst"``: the lowest value of a higher-is-better key, the highest of a lower-is-better one;
  ``support_<c>`` adds up);
* ``expected_cost`` when the objective has a ``cost_matrix``;
* custom metrics (:class:`Metric`) and ``evaluate`` modules, computed on the gathered predictions;
* ``tune_threshold``: count-based keys are computed at the tuned threshold (the task says where one
  can be tuned);
* a model that gave NaN scores (diverged training): every key is NaN (the checkpoint is never best),
  the note ``"NaN scores from the model"``, the predictions as given, and a
  :class:`~trainer_ext.errors.TrainerExtWarning` (:func:`score_checkpoint` emits it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigurationError, TrainerExtWarning
from .objectives import Objective, is_score_based, known_direction
from .tasks import Task, as_task
from .thresholds import tune_threshold
from .uncertainty import Interval, bootstrap_interval, row_bootstrap

__all__ = [
    "Metric",
    "SetResult",
    "CheckpointScores",
    "available_keys",
    "check_objective",
    "objective_set",
    "score_checkpoint",
]

NAN_NOTE = "NaN scores from the model"


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
    """One held-out set's gathered outputs, in held-out order (``probabilities``: the task's scores,
    None when the model gives predictions only)."""

    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None


@dataclass
class CheckpointScores:
    metrics: dict[str, float]
    predictions: dict[str | None, np.ndarray]  # per set, after the threshold if one was tuned
    confusion_matrices: dict[str | None, np.ndarray]  # per set: the task's sufficient statistics
    threshold: Any = None  # the task's tuned threshold (a float for a binary single-label task)
    interval: Interval | None = None
    notes: list[str] = field(default_factory=list)
    nan_examples: int = 0  # examples with NaN scores; > 0: every metric is NaN


def objective_set(objective: Objective, set_names: Sequence[str | None]) -> str | None:
    """Which held-out set the objective's metric reads: the only one, the one its key names, or
    None when it combines several."""
    if len(set_names) == 1:
        return set_names[0]
    for name in set_names:
        if name is not None and objective.metric.startswith(f"{name}_"):
            return name
    return None


def _unprefixed(key: str, set_name: str | None) -> str:
    if set_name and key.startswith(f"{set_name}_"):
        return key[len(set_name) + 1 :]
    return key


def available_keys(
    task: Task,
    objective: Objective,
    set_names: Sequence[str | None],
    *,
    custom: Sequence[Metric] = (),
    modules: Sequence[Any] = (),
) -> list[str]:
    """Every key a checkpoint's record holds: the task's keys (``expected_cost`` with a cost matrix),
    custom metrics, the numeric outputs of ``evaluate`` modules (learnt on a dry run with the task's
    :meth:`~trainer_ext.tasks.Task.sample_outputs`), and with several sets each key also as
    ``<set>_<key>``."""
    base = task.metric_keys(with_scores=True, with_cost=objective.cost_matrix is not None)
    base += [m.name for m in custom]
    references, predictions = task.sample_outputs()
    for module in modules:
        outputs = module.compute(predictions=predictions, references=references) or {}
        base += [k for k, v in outputs.items() if isinstance(v, (int, float, np.integer, np.floating))]
    if list(set_names) == [None]:
        return base
    return base + [f"{s}_{k}" for s in set_names for k in base]


def check_objective(
    task: Task, objective: Objective, set_names: Sequence[str | None], *, available: Collection[str], with_scores: bool
) -> None:
    """Every check of the objective against this model, before the first step (ConfigurationError):
    the task's own (:meth:`~trainer_ext.tasks.Task.check_objective`), unknown keys,
    ``require_significance`` on a key that cannot be resampled by counts, and keys or threshold
    tuning that need scores from a model that gives predictions only."""
    task.check_objective(objective)
    objective.check_keys(available)
    if objective.require_significance:
        key = _unprefixed(objective.metric, objective_set(objective, set_names))
        if key not in task.count_keys(with_cost=True):
            raise ConfigurationError(
                f"require_significance: the paired bootstrap resamples confusion-matrix counts, so it needs a "
                f"built-in count-based key such as 'recall_negative' or 'expected_cost'; got {objective.metric!r}."
            )
    if not with_scores:
        needs = [k for k in objective.keys if is_score_based(k)] + (["tune_threshold"] if objective.tune_threshold else [])
        if needs:
            raise ConfigurationError(
                f"objective: {needs} need the model's scores, but this model returns class ids only. "
                f"Use count-based keys: {task.count_keys(with_cost=False)}."
            )


def _set_metrics(
    result: SetResult,
    task: Task,
    objective: Objective,
    custom: Sequence[Metric],
    modules: Sequence[Any],
    predictions: np.ndarray,
) -> dict[str, float]:
    metrics = task.metrics(
        result.labels, predictions, result.probabilities, cost_matrix=objective.cost_matrix, class_prior=objective.class_prior
    )
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
    task: Task | Sequence[str],
    objective: Objective,
    *,
    custom: Sequence[Metric] = (),
    modules: Sequence[Any] = (),
    custom_directions: Mapping[str, bool] | None = None,
    keys: Sequence[str] | None = None,
    checkpoint: str | None = None,
) -> CheckpointScores:
    """Every metric of one checkpoint, the tuned threshold, and the objective's bootstrap interval.

    ``task``: the :class:`~trainer_ext.tasks.Task` (or a single-label task's class slugs, as in the
    first version). When the model gave NaN scores for any example: every key of ``keys`` (default
    :func:`available_keys`) is NaN, ``notes`` says so, ``nan_examples`` counts them, and a
    :class:`~trainer_ext.errors.TrainerExtWarning` names ``checkpoint``.
    """
    task = as_task(task)
    broken = sum(task.broken_examples(r.probabilities) for r in results.values())
    if broken:
        return _nan_scores(results, task, broken, checkpoint, keys or available_keys(task, objective, list(results), custom=custom, modules=modules))
    names = list(results)
    target = objective_set(objective, names)
    predictions = {name: result.predictions for name, result in results.items()}
    threshold = _tuned_threshold(results, task, objective, target) if objective.tune_threshold else None
    if threshold is not None:
        for name, res in results.items():  # the same threshold applies to every set
            if res.probabilities is not None:
                predictions[name] = task.apply_threshold(res.probabilities, threshold)
    per_set = {name: _set_metrics(res, task, objective, custom, modules, predictions[name]) for name, res in results.items()}
    metrics = per_set[None] if names == [None] else _across_sets(per_set, objective, target, custom_directions)
    stats = {name: task.statistics(results[name].labels, predictions[name]) for name in names}
    interval, notes = _interval(results, stats, task, objective, target, predictions)
    return CheckpointScores(metrics, predictions, stats, threshold, interval, notes)


def _tuned_threshold(results: Mapping[str | None, SetResult], task: Task, objective: Objective, target: str | None) -> Any:
    result = results[target]
    if result.probabilities is None:
        raise ConfigurationError("tune_threshold: the model gives no scores to put a threshold on.")
    base = objective.replace(
        metric=_unprefixed(objective.metric, target),
        tie_breakers=[_unprefixed(k, target) for k in objective.tie_breakers],
        constraints=[f"{_unprefixed(c.metric, target)} {c.op} {c.bound!r}" for c in objective.constraints],
    )
    return tune_threshold(result.labels, result.probabilities, base, task).threshold


def _across_sets(
    per_set: Mapping[str | None, dict[str, float]],
    objective: Objective,
    target: str | None,
    custom_directions: Mapping[str, bool] | None,
) -> dict[str, float]:
    names = list(per_set)
    metrics: dict[str, float] = {}
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
    return metrics


def _interval(
    results: Mapping[str | None, SetResult],
    stats: Mapping[str | None, Any],
    task: Task,
    objective: Objective,
    target: str | None,
    predictions: Mapping[str | None, np.ndarray],
) -> tuple[Interval | None, list[str]]:
    """The objective's bootstrap interval: resampled statistics for a count-based key, resampled rows
    for a score-based one (slow: resamples x N); none for several sets combined or a custom key."""
    if objective.bootstrap_resamples == 0:
        return None, []
    key = _unprefixed(objective.metric, target)
    settings = {"resamples": objective.bootstrap_resamples, "confidence": objective.confidence, "seed": objective.seed}
    if target is None and len(results) > 1:
        return None, ["no interval: the objective combines several held-out sets"]
    if is_score_based(key):
        result = results[target]
        return row_bootstrap(result.labels, result.probabilities, key, task, objective), []
    if key in task.count_keys(with_cost=objective.cost_matrix is not None):
        costs = {"cost_matrix": objective.cost_matrix, "class_prior": objective.class_prior}
        # The task's resampling statistics (token classification: per sentence), not the record's totals.
        drawn = task.resampling_statistics(results[target].labels, predictions[target])
        return bootstrap_interval(drawn, key, task, **settings, **costs), []
    return None, [f"no interval: {key!r} is a custom metric"]


def _nan_scores(
    results: Mapping[str | None, SetResult], task: Task, broken: int, checkpoint: str | None, keys: Sequence[str]
) -> CheckpointScores:
    """A checkpoint whose model gave NaN scores: every metric NaN (never best), predictions as given."""
    warnings.warn(
        f"BestCheckpointCallback: at {checkpoint or 'this checkpoint'} the model gave NaN scores for {broken} held-out "
        f"example(s) (diverged training?); every metric of this checkpoint is NaN and it cannot be best.",
        TrainerExtWarning,
        stacklevel=3,
    )
    predictions = {k: np.nan_to_num(r.predictions).astype(np.int64) for k, r in results.items()}
    stats = {k: task.statistics(results[k].labels, p) for k, p in predictions.items()}
    return CheckpointScores({k: math.nan for k in keys}, predictions, stats, notes=[NAN_NOTE], nan_examples=broken)
