"""The arguments of :class:`~trainer_ext.BestCheckpointCallback`, validated once, at construction.

:class:`CallbackConfig` is a frozen dataclass: every check that needs no model runs in
:meth:`CallbackConfig.from_arguments` and fails with a :class:`~trainer_ext.errors.ConfigurationError`
naming the argument, what was received and what is allowed. Checks that need the model (its classes,
whether it gives scores, which keys exist) run when training starts. Pure: no torch, no transformers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigurationError
from .objectives import Objective, as_objective

__all__ = ["CallbackConfig", "SAVE_MODES"]

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
SAVE_MODES = ("all", "improved", "top_k")
"""``save=``: ``"all"`` (the Trainer's schedule), ``"improved"`` (save exactly when a new business-best
appears), ``"top_k"`` (save when an evaluation enters the ``keep_top_k`` best)."""


@dataclass(frozen=True)
class CallbackConfig:
    """Every argument of the callback, checked. See :class:`~trainer_ext.BestCheckpointCallback`."""

    objective: Objective
    eval_datasets: Mapping[str | None, Any]  # one set under None, or several by name
    data_collator: Any = None
    batch_size: int | None = None
    name: str = "holdout"
    load_best_at_end: bool = True
    label_names: tuple[str, ...] | None = None
    save_scores: bool = True
    keep_top_k: int | None = None
    custom_metrics: tuple[Any, ...] = ()
    evaluate_modules: tuple[Any, ...] = ()
    text_column: str = "text"
    label_column: str | None = None
    eval_steps: int | None = None
    save: str = "all"
    early_stopping_patience: int | None = None
    early_stopping_threshold: float = 0.0
    task: Any = None  # None: read from the model; a name of tasks.TASK_NAMES or a tasks.Task

    @classmethod
    def from_arguments(cls, eval_dataset: Any, objective: Any, **options: Any) -> CallbackConfig:
        """Check every argument; raise :class:`ConfigurationError` on the first that does not fit."""
        from .evaluation import check_dataset_shape
        from .scoring import objective_set

        objective = as_objective(objective)
        label_column = options.get("label_column")
        for argument in ("text_column", "label_column"):
            value = options.get(argument, "text" if argument == "text_column" else None)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{argument}: expected a column name (str); got {value!r}.")
        eval_datasets = _as_sets(eval_dataset, check_dataset_shape, label_column)
        for argument in ("batch_size", "keep_top_k", "eval_steps", "early_stopping_patience"):
            _positive_int_or_none(argument, options.get(argument))
        name = options.get("name", "holdout")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(f"name: expected letters, digits and '_' (it prefixes logged keys); got {name!r}.")
        label_names = _label_names(options.get("label_names"))
        for argument in ("load_best_at_end", "save_scores"):
            value = options.get(argument, True)
            if not isinstance(value, bool):
                raise ConfigurationError(f"{argument}: expected True or False; got {value!r}.")
        collator = options.get("data_collator")
        if collator is not None and not callable(collator):
            raise ConfigurationError(f"data_collator: expected a callable; got {type(collator).__name__}.")
        custom, modules = _metric_arguments(objective, options)
        if len(eval_datasets) > 1 and (objective.tune_threshold or objective.require_significance):
            if objective_set(objective, list(eval_datasets)) is None:
                raise ConfigurationError(
                    "objective: tune_threshold and require_significance need one held-out set; with several sets, "
                    f"name one in the key (e.g. '{next(iter(eval_datasets))}_{objective.metric}')."
                )
        task = options.get("task")
        _check_task(task)
        save, keep_top_k = options.get("save", "all"), options.get("keep_top_k")
        _check_run_control(save, keep_top_k, options.get("early_stopping_threshold", 0.0))
        checked = {
            "objective": objective, "eval_datasets": eval_datasets, "name": name, "label_names": label_names,
            "custom_metrics": custom, "evaluate_modules": modules, "task": task, "save": save,
            "early_stopping_threshold": float(options.get("early_stopping_threshold", 0.0)),
        }
        # Every other field as given (each was checked above), else its default.
        return cls(**{f.name: checked.get(f.name, options.get(f.name, f.default)) for f in fields(cls)})

    @property
    def set_names(self) -> list[str | None]:
        return list(self.eval_datasets)


def _metric_arguments(objective: Objective, options: Mapping[str, Any]) -> tuple[tuple, tuple]:
    """``custom_metrics`` and ``evaluate_modules``, checked (and a custom objective's direction)."""
    from .scoring import Metric

    custom = _items("custom_metrics", options.get("custom_metrics", ()), "trainer_ext.Metric")
    bad = [m for m in custom if not isinstance(m, Metric)]
    if bad:
        raise ConfigurationError(
            f"custom_metrics: expected trainer_ext.Metric(name, fn, greater_is_better) items; "
            f"got {bad[0]!r} ({type(bad[0]).__name__})."
        )
    modules = _items("evaluate_modules", options.get("evaluate_modules", ()), "evaluate module")
    bad = [m for m in modules if not callable(getattr(m, "compute", None))]
    if bad:
        raise ConfigurationError(
            f"evaluate_modules: expected evaluate modules with .compute() (evaluate.load(...), "
            f"evaluate.combine([...])); got {bad[0]!r} ({type(bad[0]).__name__})."
        )
    for metric in custom:
        if metric.name == objective.metric and metric.greater_is_better != objective.greater_is_better:
            raise ConfigurationError(
                f"custom_metrics: {metric.name!r} says greater_is_better={metric.greater_is_better}, the objective "
                f"says {objective.greater_is_better}."
            )
    return custom, modules


def _positive_int_or_none(argument: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigurationError(f"{argument}: expected a positive int or None; got {value!r}.")


def _label_names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(isinstance(n, str) for n in value):
        raise ConfigurationError(
            f"label_names: expected the class names in id order, e.g. ['NEGATIVE', 'POSITIVE']; got {value!r}."
        )
    from .metrics import class_slugs

    class_slugs(list(value))  # raises on colliding slugs or fewer than 2 classes
    return tuple(value)


def _check_task(task: Any) -> None:
    from .tasks import TASK_NAMES, Task

    if task is not None and not isinstance(task, Task) and task not in TASK_NAMES:
        raise ConfigurationError(
            f"task: expected one of {list(TASK_NAMES)}, a trainer_ext task object (e.g. LabelWords(...)) or None "
            f"(read from the model); got {task!r}."
        )


def _check_run_control(save: Any, keep_top_k: int | None, threshold: Any) -> None:
    if save not in SAVE_MODES:
        raise ConfigurationError(f"save: expected one of {list(SAVE_MODES)}; got {save!r}.")
    if save == "top_k" and keep_top_k is None:
        raise ConfigurationError("save: 'top_k' saves the evaluations that enter the keep_top_k best; pass keep_top_k=3 (say).")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ConfigurationError(
            f"early_stopping_threshold: expected a number >= 0 (in the objective's units); got {threshold!r}."
        )


def _items(argument: str, value: Any, item: str) -> tuple:
    """A list or tuple argument as a tuple; anything else (one item, a number, a string) is refused."""
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError(
            f"{argument}: expected a list of {item}s; got {type(value).__name__}. Pass one as [{argument[:-1]}]."
        )
    return tuple(value)


def _as_sets(eval_dataset: Any, check_dataset_shape: Any, label_column: str | None) -> dict[str | None, Any]:
    """One held-out set (key None) or several by name; each checked for length and labels."""
    if isinstance(eval_dataset, Mapping):
        if not eval_dataset:
            raise ConfigurationError("eval_dataset: got an empty dict; pass a held-out set or {name: set, ...}.")
        sets: dict[str | None, Any] = {}
        for set_name, dataset in eval_dataset.items():
            if not isinstance(set_name, str) or not _NAME.match(set_name):
                raise ConfigurationError(
                    f"eval_dataset: set names prefix metric keys, so they must be letters, digits and '_'; got {set_name!r}."
                )
            _check_shape(check_dataset_shape, dataset, f"eval_dataset[{set_name!r}]", label_column)
            sets[set_name] = dataset
        return sets
    _check_shape(check_dataset_shape, eval_dataset, "eval_dataset", label_column)
    return {None: eval_dataset}


def _check_shape(check_dataset_shape: Any, dataset: Any, argument: str, label_column: str | None) -> None:
    if label_column is None:
        check_dataset_shape(dataset, argument=argument)
    else:
        check_dataset_shape(dataset, argument=argument, label_column=label_column)
