"""The state of one training run, in memory: the checkpoints evaluated so far, the evaluation waiting
for its save, the current selection, and what a resumed run reads back from disk.

Pure: no torch, no transformers, so it is tested without a Trainer (``tests/unit/test_tracker.py``).
The callback asks it questions ("is this a new best?", "which folders may rotation delete?") and tells
it what happened ("checkpoint-20 was evaluated", "it was saved"); every decision about files on disk is
made from facts the callback read on the main process and shared with every rank.

Life of one evaluation::

    ranked = tracker.propose(checkpoint, global_step, scores)   # ranked among every recorded one
    tracker.hold(PendingEvaluation(record, scores, outputs))    # waiting for the Trainer's save
    ...                                                         # the Trainer saves the folder
    pending = tracker.commit()                                  # now a record of the run

or, when no checkpoint is written for it (``eval_steps`` / ``save=`` of issue 13)::

    tracker.set_aside()                                         # an unsaved entry: leaderboard only

Unsaved evaluations (``tracker.unsaved``) are kept in memory and listed in the leaderboard with
``saved: false``; they are never candidates for the best (only a checkpoint on disk can be
``best_model_checkpoint``), and :func:`read_resumed_run` brings them back from the leaderboard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .objectives import Objective
from .records import RECORD_FILENAME, TRAINER_STATE_FILENAME, CheckpointRecord, leaderboard_payload
from .run_folder import read_predictions, read_records, read_unsaved
from .selection import Candidate, RankedCandidate, Selection, candidates_of, rank
from .tasks import Task

__all__ = ["PendingEvaluation", "ResumedRun", "RunTracker", "incomplete_checkpoint", "read_resumed_run"]


@dataclass(frozen=True)
class PendingEvaluation:
    """A checkpoint evaluated in memory, not yet written: its record, scores and per-set outputs."""

    record: CheckpointRecord
    scores: Any  # trainer_ext.scoring.CheckpointScores
    outputs: Mapping[str | None, Any]  # per held-out set: labels, probabilities (for the scores file)

    @property
    def checkpoint(self) -> str:
        return self.record.checkpoint

    @property
    def global_step(self) -> int:
        return self.record.global_step


@dataclass(frozen=True)
class ResumedRun:
    """What a resumed run reads back (on the main process, then shared with every rank)."""

    records: dict[str, CheckpointRecord]
    predictions: dict[str, dict[str | None, np.ndarray]]  # per checkpoint, per held-out set
    unrecorded: str | None  # the checkpoint resumed from, when its record or scores are incomplete
    unsaved: dict[str, CheckpointRecord] = field(default_factory=dict)  # evaluations without a checkpoint


class RunTracker:
    """Records, the pending evaluation and the selection of one run.

    Args:
        objective: the business objective.
        compare: ``compare(first, second, first_predictions, second_predictions)`` -> a paired
            comparison (:class:`~trainer_ext.uncertainty.PairedComparison`) of two checkpoints on the
            same examples, or None when the objective's key cannot be resampled from predictions.
        keep_top_k: how many of the best checkpoints rotation must keep (None: the Trainer rotates).
        labels: each held-out set's labels (``{None: labels}`` with one set), for the leaderboard's
            selection-corrected ``best_estimate``; ``task`` the task (:mod:`trainer_ext.tasks`);
            ``objective_set`` the set the objective reads (None when it combines several): its
            predictions go to ``compare``.

    ``predictions[checkpoint][set]`` are each checkpoint's per-example predictions (after a tuned
    threshold), kept for paired comparisons and the estimate (int16: 2 bytes an example).
    """

    def __init__(
        self,
        objective: Objective,
        *,
        compare: Any = None,
        keep_top_k: int | None = None,
        labels: Mapping[str | None, np.ndarray] | None = None,
        task: Task | None = None,
        objective_set: str | None = None,
    ) -> None:
        self.objective = objective
        self.keep_top_k = keep_top_k
        self._compare = compare
        self._labels = labels
        self._task = task
        self._objective_set = objective_set
        self.records: dict[str, CheckpointRecord] = {}
        self.exists: dict[str, bool] = {}
        self.predictions: dict[str, dict[str | None, np.ndarray]] = {}
        self._estimate: tuple[Any, tuple[dict | None, str | None]] | None = None  # (inputs, result) cache
        self.pending: PendingEvaluation | None = None
        self.selection: Selection | None = None
        self.comparison: dict[str, Any] | None = None
        self.unrecorded: str | None = None
        self.unsaved: dict[str, CheckpointRecord] = {}  # evaluated, never saved: leaderboard only
        self.stale = 0  # evaluations in a row without improving the business-best (early stopping)

    # ---- questions ----------------------------------------------------------------------------

    @property
    def best(self) -> RankedCandidate | None:
        return self.selection.best if self.selection is not None else None

    def is_pending(self, checkpoint: str) -> bool:
        return self.pending is not None and self.pending.checkpoint == checkpoint

    def value_for_trainer(self) -> float:
        """The objective value the Trainer's ``metric_for_best_model`` should see at this evaluation:
        the pending checkpoint's, else the best's; NaN when there is none."""
        if self.pending is not None:
            value = self.pending.record.objective_value
        else:
            value = self.best.objective_value if self.best is not None else None
        return math.nan if value is None else float(value)

    def protected(self) -> list[str]:
        """The ``keep_top_k`` best checkpoints (empty without keep_top_k)."""
        if self.keep_top_k is None or self.selection is None:
            return []
        return [r.checkpoint for r in self.selection.ranking[: self.keep_top_k]]

    def leaderboard(self) -> dict[str, Any] | None:
        """The content of checkpoint_leaderboard.json, or None before any checkpoint is recorded."""
        if self.selection is None:
            return None
        estimate, note = self._best_estimate()
        return leaderboard_payload(
            self.selection, self.records, self.exists, protected=self.protected(), comparison=self.comparison,
            best_estimate=estimate, estimate_note=note, unsaved=self.unsaved,
        )

    def evaluated(self, global_step: int) -> bool:
        """Whether an evaluation of ``global_step`` is already recorded, pending or set aside."""
        return any(r.global_step == global_step for r in (*self.records.values(), *self.unsaved.values())) or (
            self.pending is not None and self.pending.global_step == global_step
        )

    def deserves_save(self, checkpoint: str, save: str) -> bool:
        """``save="improved"``: ``checkpoint`` (just proposed) is the new business-best; ``save="top_k"``:
        it is among the ``keep_top_k`` best; ``save="all"``: always."""
        if save == "all":
            return True
        if self.selection is None:
            return False
        if save == "improved":
            return self.selection.best_checkpoint == checkpoint
        return checkpoint in [r.checkpoint for r in self.selection.ranking[: self.keep_top_k]]

    def improves(self, checkpoint: str, previous: RankedCandidate | None, threshold: float) -> bool:
        """Whether ``checkpoint`` became the business-best and beats ``previous`` (the best before it) by
        more than ``threshold`` in the objective's units. A feasible best after an infeasible one is an
        improvement; an infeasible evaluation never beats a feasible best (the ranking puts it below)."""
        return self._beats(self.best, checkpoint, previous, threshold)

    def _beats(self, best: RankedCandidate | None, checkpoint: str, previous: RankedCandidate | None, threshold: float) -> bool:
        if best is None or best.checkpoint != checkpoint:
            return False
        if previous is None or previous.checkpoint == checkpoint:
            return True
        if best.feasible and not previous.feasible:
            return True
        if previous.objective_value is None:
            return best.objective_value is not None
        if best.objective_value is None:
            return False
        delta = best.objective_value - previous.objective_value
        return (delta if self.objective.greater_is_better else -delta) > threshold

    def count_for_patience(self, improved: bool) -> int:
        """One more evaluation for early stopping: the count of evaluations in a row without improvement."""
        self.stale = 0 if improved else self.stale + 1
        return self.stale

    def folders_to_rotate(self, folders: Sequence[str], save_total_limit: int | None) -> list[str]:
        """keep_top_k's rotation: which of ``folders`` (checkpoint folder names in step order) to delete
        so that at most ``save_total_limit`` remain, never the newest, the best or the top k."""
        if save_total_limit is None or save_total_limit <= 0:
            return []
        keep = set(self.protected()) | ({folders[-1]} if folders else set())
        if self.best is not None:
            keep.add(self.best.checkpoint)
        removable = [f for f in folders if f not in keep]
        excess = len(folders) - max(save_total_limit, len(keep))
        return removable[: max(0, excess)]

    # ---- what happened ------------------------------------------------------------------------

    def propose(
        self, checkpoint: str, global_step: int, scores: Any, predictions: Mapping[str | None, np.ndarray]
    ) -> RankedCandidate:
        """A new evaluation of ``checkpoint``: rank it among the recorded ones (the selection now includes
        it) and return its place. ``predictions``: per held-out set, the per-example predictions."""
        self.predictions[checkpoint] = {k: np.asarray(v).astype(np.int16) for k, v in predictions.items()}
        candidates = [c for c in self._candidates() if c.checkpoint != checkpoint]
        candidates.append(Candidate(checkpoint, global_step, scores.metrics))
        self.select(candidates=candidates)
        return next(r for r in self.selection.ranking if r.checkpoint == checkpoint)

    def hold(self, pending: PendingEvaluation) -> None:
        """Keep an evaluation until its folder is saved."""
        self.pending = pending

    def commit(self) -> PendingEvaluation:
        """The pending evaluation's folder was saved: it becomes a record of the run."""
        pending, self.pending = self.pending, None
        if pending is None:
            raise RuntimeError("trainer_ext: no evaluation is waiting for this save")
        self.records[pending.checkpoint] = pending.record
        return pending

    def set_aside(self) -> CheckpointRecord:
        """The pending evaluation will not be saved: it becomes an unsaved entry (leaderboard only), and
        the selection goes back to the saved checkpoints."""
        pending, self.pending = self.pending, None
        if pending is None:
            raise RuntimeError("trainer_ext: no evaluation to set aside")
        self.unsaved[pending.checkpoint] = pending.record
        self.predictions.pop(pending.checkpoint, None)
        if self.records:
            self.select()
        else:
            self.selection, self.comparison = None, None
        return pending.record

    def forget_unsaved(self, global_step: int) -> None:
        """An evaluation of an earlier step that was never saved (``save_strategy="best"`` when it was not
        a new best) is dropped."""
        if self.pending is not None and self.pending.global_step != global_step:
            self.predictions.pop(self.pending.checkpoint, None)
            self.pending = None
            if self.records:
                self.select()
            else:
                self.selection = None

    def select(self, *, candidates: list[Candidate] | None = None, final: bool = False) -> Selection:
        """Rank, then compare the best with the runner-up on the same examples (paired bootstrap)."""
        candidates = self._candidates() if candidates is None else candidates
        result = rank(candidates, self.objective, compare=self._paired, final=final)
        self.selection, self.comparison = result.selection, result.comparison_dict
        return self.selection

    def resume(self, resumed: ResumedRun) -> None:
        """Continue the run read back from disk (:func:`read_resumed_run`)."""
        self.records, self.predictions = dict(resumed.records), dict(resumed.predictions)
        self.unsaved = dict(resumed.unsaved)
        self.unrecorded = resumed.unrecorded
        if self.records:
            self.select()

    def replay_patience(self, threshold: float) -> int:
        """After :meth:`resume`: the early-stopping count the interrupted run had, replayed from its
        evaluations in step order (a saved one may have improved the best; an unsaved one never did)."""
        history = sorted((*self.records.values(), *self.unsaved.values()), key=lambda r: r.global_step)
        candidates: list[Candidate] = []
        previous: RankedCandidate | None = None
        self.stale = 0
        for record in history:
            improved = False
            if record.checkpoint in self.records:
                candidates.append(Candidate(record.checkpoint, record.global_step, record.metrics))
                best = rank(list(candidates), self.objective, compare=self._paired).selection.best
                improved = self._beats(best, record.checkpoint, previous, threshold)
                previous = best
            self.count_for_patience(improved)
        return self.stale

    # ---- internals ----------------------------------------------------------------------------

    def _candidates(self) -> list[Candidate]:
        candidates = candidates_of(self.records.values())
        if self.pending is not None and self.pending.checkpoint not in self.records:
            record = self.pending.record
            candidates.append(Candidate(record.checkpoint, record.global_step, record.metrics))
        return candidates

    def _best_estimate(self) -> tuple[dict | None, str | None]:
        """The selection-corrected estimate of the best, recomputed only when the ranking changed."""
        from .estimate import estimate_for_leaderboard

        ranking = self.selection.ranking
        inputs = tuple((r.checkpoint, r.objective_value, r.checkpoint in self.predictions) for r in ranking)
        if self._estimate is None or self._estimate[0] != inputs:
            best = self.best
            result = estimate_for_leaderboard(
                self._labels, self.predictions, {r.checkpoint: r.global_step for r in ranking},
                self.objective, self._task, None if best is None else best.objective_value,
            )
            self._estimate = (inputs, result)
        return self._estimate[1]

    def _paired(self, first: str, second: str):
        target = self._objective_set
        a, b = self.predictions.get(first, {}).get(target), self.predictions.get(second, {}).get(target)
        if self._compare is None or a is None or b is None:
            return None
        return self._compare(first, second, a, b)


def incomplete_checkpoint(
    output_dir: str | Path, checkpoint: str, records: Mapping[str, CheckpointRecord], needed_files: Iterable[str]
) -> str | None:
    """On resume (main process): ``checkpoint`` when the Trainer saved it but its record or scores are
    missing (the previous run died between the Trainer's save and ours, or while we wrote), else None."""
    folder = Path(output_dir) / checkpoint
    if not (folder / TRAINER_STATE_FILENAME).is_file():
        return None
    names = [RECORD_FILENAME, *needed_files]
    if checkpoint in records and all((folder / name).is_file() for name in names):
        return None
    return checkpoint


def read_resumed_run(
    output_dir: str | Path,
    *,
    global_step: int,
    checkpoint: str,
    objective: Objective,
    set_names: Sequence[str | None],
    needed_files: Iterable[str],
) -> ResumedRun:
    """The records of the run being resumed at ``global_step`` (later ones are forgotten), the saved
    predictions of every held-out set, and whether ``checkpoint`` still needs its record.
    Reads the file system: call it on the main process and share the result."""
    records = read_records(output_dir, up_to_step=global_step, objective=objective)
    predictions: dict[str, dict[str | None, np.ndarray]] = {}
    for set_name in set_names:
        for name, saved in read_predictions(output_dir, records, set_name).items():
            predictions.setdefault(name, {})[set_name] = saved.predictions.astype(np.int16)
    unsaved = read_unsaved(output_dir, up_to_step=global_step, objective=objective)
    unrecorded = incomplete_checkpoint(output_dir, checkpoint, records, needed_files)
    return ResumedRun(records, predictions, unrecorded, unsaved)
