"""The callback's held-out sets: prepared once when training starts, evaluated at every checkpoint.

:meth:`HeldOutSets.prepare` reads the classes from the model (or ``label_names``), tokenizes raw text
with the Trainer's ``processing_class``, checks on every rank that the sets are the same, probes the
model once (does it give scores?) and learns which metric keys exist. :meth:`HeldOutSets.evaluate` runs
the in-memory model over every set (COLLECTIVE: every rank calls it) and scores the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import distributed, evaluation
from .config import CallbackConfig
from .scoring import CheckpointScores, SetResult, available_keys, check_objective, objective_set, score_checkpoint
from .selection import compare_predictions
from .tasks import Task, task_for_model

__all__ = ["HeldOutSets", "Evaluation"]


@dataclass(frozen=True)
class Evaluation:
    """One checkpoint evaluated on every held-out set."""

    scores: CheckpointScores
    outputs: Mapping[str | None, Any]  # per set: evaluation.EvalOutput (labels, probabilities, ...)
    info: dict[str, Any]  # the record's "evaluation": processes, precision, seconds, batch_size


@dataclass
class HeldOutSets:
    config: CallbackConfig
    task: Task
    sets: dict[str | None, Any]  # evaluation.HeldOutSet per set
    collate: Any
    with_scores: bool  # the model gives scores (not only class ids)
    available: list[str]  # every metric key computed for this model

    @property
    def target(self) -> str | None:
        """The held-out set the objective's metric reads (None when it combines several)."""
        return objective_set(self.config.objective, list(self.sets))

    @property
    def labels(self) -> list[str]:
        """Class names in id order."""
        return list(self.task.label_names)

    @property
    def fingerprints(self) -> dict[str | None, tuple[int, str]]:
        return {k: (len(h), h.fingerprint) for k, h in self.sets.items()}

    @classmethod
    def prepare(cls, config: CallbackConfig, model: Any, processing_class: Any) -> HeldOutSets:
        """COLLECTIVE: every rank prepares the same sets and probes the model."""
        task = task_for_model(model, label_names=config.label_names, task=config.task)
        sets = {
            set_name: evaluation.prepare_held_out(
                dataset,
                name=set_name or config.name,
                task=task,
                tokenizer=processing_class,
                text_column=config.text_column,
                label_column=config.label_column,
                model=model,
                argument="eval_dataset" if set_name is None else f"eval_dataset[{set_name!r}]",
            )
            for set_name, dataset in config.eval_datasets.items()
        }
        distributed.agree({str(k): (len(h), h.fingerprint) for k, h in sets.items()}, "the held-out set (size, fingerprint)")
        collate = config.data_collator or evaluation.default_collator(processing_class, task=task)
        with_scores = evaluation.probe_model(model, next(iter(sets.values())), task=task, collate=collate)
        available = available_keys(
            task, config.objective, list(sets), custom=config.custom_metrics, modules=config.evaluate_modules
        )
        check_objective(task, config.objective, list(sets), available=available, with_scores=with_scores)
        return cls(config, task, sets, collate, with_scores, available)

    def evaluate(self, model: Any, args: Any, checkpoint: str) -> Evaluation:
        """COLLECTIVE: the in-memory model on every held-out set, scored."""
        batch_size = self.config.batch_size or args.per_device_eval_batch_size
        outputs = {
            set_name: evaluation.evaluate_model(
                model, held_out, task=self.task, collate=self.collate, batch_size=batch_size, args=args
            )
            for set_name, held_out in self.sets.items()
        }
        custom = self.config.custom_metrics
        scores = score_checkpoint(
            {k: SetResult(o.labels, o.predictions, o.probabilities) for k, o in outputs.items()},
            self.task,
            self.config.objective,
            custom=custom,
            modules=self.config.evaluate_modules,
            custom_directions={m.name: m.greater_is_better for m in custom},
            keys=self.available,
            checkpoint=checkpoint,
        )
        first = next(iter(outputs.values()))
        info = {
            "processes": first.processes,
            "precision": first.precision,
            "seconds": round(sum(o.seconds for o in outputs.values()), 4),
            "batch_size": batch_size,
        }
        return Evaluation(scores, outputs, info)

    def compare(self, first: str, second: str, first_predictions: np.ndarray, second_predictions: np.ndarray):
        """Paired bootstrap of two checkpoints on the objective's held-out set (None when not possible)."""
        target = self.target
        return compare_predictions(
            self.config.objective, self.task, self.sets[target].labels, first_predictions, second_predictions,
            names=(first, second), target=target,
        )
