"""Reading a Trainer output folder back: its checkpoints on disk, their records, their saved predictions,
and ranking those records again without a model. Pure: no torch, no transformers (the callback, the
command line and the report share it). The file formats are :mod:`trainer_ext.records`'.

What an output folder holds::

    <output_dir>/checkpoint-<step>/checkpoint_metrics.json   one record per evaluated checkpoint
    <output_dir>/checkpoint-<step>/checkpoint_scores.npz     per-example scores (optional)
    <output_dir>/checkpoint-<step>/trainer_state.json        the Trainer's state, with best_* fields
    <output_dir>/checkpoint_leaderboard.json / .md           every evaluated checkpoint, best first

A checkpoint folder deleted by the Trainer's rotation (``save_total_limit``) keeps its leaderboard entry,
so :func:`read_records` rebuilds its record from that entry (metrics only: no confusion matrix).
Everything here reads the file system: under several processes, call it on the main process and
broadcast the result.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .objectives import Objective
from .records import (
    LEADERBOARD_FILENAME,
    RECORD_FILENAME,
    SCORES_FILENAME,
    CheckpointRecord,
    checkpoint_step,
    decode_floats,
    leaderboard_payload,
    load_record,
    load_scores,
    read_json,
    scores_filename,
)
from .selection import Candidate, Selection, compare_predictions, p_value_of, rank, resampled_key, select_best

if TYPE_CHECKING:
    from .uncertainty import PairedComparison

__all__ = [
    "checkpoint_folders",
    "record_from_leaderboard_entry",
    "read_records",
    "existing_checkpoints",
    "SavedPredictions",
    "read_predictions",
    "EarlierLeaderboard",
    "read_earlier_leaderboard",
    "Ranking",
    "rank_records",
]


# ---- checkpoints and records -------------------------------------------------------------------------


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-<step>`` folders of ``output_dir``, in step order (empty when there are none)."""
    folders = [p for p in Path(output_dir).iterdir() if p.is_dir() and checkpoint_step(p.name) is not None]
    return sorted(folders, key=lambda p: checkpoint_step(p.name))


def existing_checkpoints(output_dir: str | os.PathLike, names: Iterable[str]) -> dict[str, bool]:
    """Which of the checkpoint folders ``names`` are still on disk."""
    return {name: (Path(output_dir) / name).is_dir() for name in names}


def record_from_leaderboard_entry(
    entry: Mapping[str, Any], *, labels: list[str], objective: Mapping[str, Any]
) -> CheckpointRecord:
    """A record rebuilt from a leaderboard entry: metrics and ranking fields, no confusion matrix
    (``confusion_matrix == []``, ``num_samples == 0``); ``eval_set`` holds the entry's ``fingerprint``
    when it has one."""
    fingerprint = entry.get("fingerprint")
    return CheckpointRecord(
        checkpoint=entry["checkpoint"],
        global_step=int(entry["global_step"]),
        epoch=entry.get("epoch"),
        labels=list(labels),
        num_samples=0,
        metrics=decode_floats(entry["metrics"]),
        confusion_matrix=[],
        objective=dict(objective),
        objective_value=entry.get("objective_value"),
        feasible=bool(entry.get("feasible")),
        violations=decode_floats(entry.get("violations"), null=float("inf")),
        objective_interval=entry.get("interval"),
        decision_threshold=entry.get("decision_threshold"),
        eval_set={"fingerprint": fingerprint} if fingerprint else {},
    )


def read_records(
    output_dir: str | os.PathLike,
    *,
    up_to_step: int | None = None,
    objective: Objective | None = None,
) -> dict[str, CheckpointRecord]:
    """Every record of ``output_dir``, by checkpoint folder name.

    A folder's ``checkpoint_metrics.json`` wins; a leaderboard entry whose folder has no record (the
    folder was rotated away) is rebuilt with :func:`record_from_leaderboard_entry`. ``up_to_step`` drops
    records of later steps (a resumed run forgets what came after its checkpoint). ``objective`` is
    stored in the rebuilt records; default: the leaderboard's. Entries with ``saved: false`` (evaluations
    without a checkpoint, ``eval_steps=``/``save=``) are not records: :func:`read_unsaved` reads them.

    Raises :class:`~trainer_ext.errors.SchemaVersionError` when a file is newer than this library, and
    ``FileNotFoundError`` when ``output_dir`` does not exist. Returns ``{}`` when there is no record.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise FileNotFoundError(f"{output_dir}: no such folder")
    records: dict[str, CheckpointRecord] = {}
    board_path = output_dir / LEADERBOARD_FILENAME
    if board_path.is_file():
        board = read_json(board_path)
        stored = objective.to_dict() if objective is not None else board.get("objective") or {}
        for entry in board.get("entries", []):
            if entry.get("saved") is False or (up_to_step is not None and int(entry["global_step"]) > up_to_step):
                continue
            records[entry["checkpoint"]] = record_from_leaderboard_entry(
                entry, labels=list(board.get("labels", [])), objective=stored
            )
    for folder in checkpoint_folders(output_dir):
        path = folder / RECORD_FILENAME
        if path.is_file():
            record = load_record(path)
            if up_to_step is None or record.global_step <= up_to_step:
                records[record.checkpoint] = record
    return records


def read_unsaved(
    output_dir: str | os.PathLike, *, up_to_step: int | None = None, objective: Objective | None = None
) -> dict[str, CheckpointRecord]:
    """The leaderboard's entries with ``saved: false`` (evaluations for which no checkpoint was written),
    rebuilt as records (:func:`record_from_leaderboard_entry`); ``{}`` without a leaderboard."""
    board_path = Path(output_dir) / LEADERBOARD_FILENAME
    if not board_path.is_file():
        return {}
    board = read_json(board_path)
    stored = objective.to_dict() if objective is not None else board.get("objective") or {}
    return {
        entry["checkpoint"]: record_from_leaderboard_entry(entry, labels=list(board.get("labels", [])), objective=stored)
        for entry in board.get("entries", [])
        if entry.get("saved") is False and (up_to_step is None or int(entry["global_step"]) <= up_to_step)
    }


# ---- saved predictions ---------------------------------------------------------------------------------


class SavedPredictions(NamedTuple):
    """One checkpoint's per-example gold class ids and predicted class ids, in held-out order."""

    labels: np.ndarray
    predictions: np.ndarray


def read_predictions(
    output_dir: str | os.PathLike, checkpoints: Iterable[str], set_name: str | None = None
) -> dict[str, SavedPredictions]:
    """The saved predictions on held-out set ``set_name`` (None: the only one) of each of ``checkpoints``
    that has a scores file (:func:`trainer_ext.records.scores_filename`); the others are left out."""
    filename = scores_filename(set_name)
    out = {}
    for checkpoint in checkpoints:
        path = Path(output_dir) / checkpoint / filename
        if path.is_file():
            arrays = load_scores(path)
            out[checkpoint] = SavedPredictions(arrays["labels"], arrays["predictions"])
    return out


# ---- the leaderboard before a new evaluation -----------------------------------------------------------


@dataclass(frozen=True)
class EarlierLeaderboard:
    """``checkpoint_leaderboard.json`` as it was before ``trainer-ext evaluate`` measures again, with the
    fingerprint of the held-out set behind each entry (``fingerprints``; None where unknown)."""

    board: dict[str, Any]
    fingerprints: dict[str, str | None]

    def split(
        self, fingerprints: Collection[str], on_disk: Collection[str], objective: Objective
    ) -> tuple[dict[str, CheckpointRecord], list[dict[str, Any]]]:
        """``(kept, moved)`` for a new evaluation of the folders ``on_disk`` on the held-out set(s) with
        ``fingerprints``.

        ``kept``: records rebuilt from the entries of checkpoints no longer on disk that were measured on
        the same set (comparable: they stay in the leaderboard). ``moved``: every entry measured on
        another set or an unknown one (not comparable, whether its folder is on disk or not)."""
        kept: dict[str, CheckpointRecord] = {}
        moved: list[dict[str, Any]] = []
        labels = list(self.board.get("labels", []))
        for entry in self.board.get("entries", []):
            name, fingerprint = entry["checkpoint"], self.fingerprints.get(entry["checkpoint"])
            if fingerprint is None or fingerprint not in fingerprints:
                moved.append(dict(entry))
            elif entry.get("saved") is False:
                continue  # an evaluation without a checkpoint on the same set: see unsaved()
            elif name not in on_disk:
                kept[name] = record_from_leaderboard_entry(
                    {**entry, "fingerprint": fingerprint}, labels=labels, objective=objective.to_dict()
                )
        return kept, moved

    def unsaved(self, fingerprints: Collection[str], *, exclude: Collection[str] = ()) -> dict[str, CheckpointRecord]:
        """The board's evaluations without a checkpoint (``saved: false``) measured on a set of
        ``fingerprints``, rebuilt as records (those of another set are among :meth:`split`'s ``moved``)."""
        labels = list(self.board.get("labels", []))
        return {
            entry["checkpoint"]: record_from_leaderboard_entry(entry, labels=labels, objective=self.board.get("objective") or {})
            for entry in self.board.get("entries", [])
            if entry.get("saved") is False and entry["checkpoint"] not in exclude
            and self.fingerprints.get(entry["checkpoint"]) in fingerprints
        }


def read_earlier_leaderboard(output_dir: str | os.PathLike) -> EarlierLeaderboard | None:
    """The leaderboard of ``output_dir`` (None when there is none), each entry's held-out fingerprint
    resolved: the entry's own ``fingerprint``; else that of the record in its folder; else (a
    leaderboard written before entries carried it, whose rotated-away entries have no record left) the
    one fingerprint shared by every record on disk of that leaderboard, since one leaderboard is one
    run on one held-out set; else None (unknown)."""
    path = Path(output_dir) / LEADERBOARD_FILENAME
    if not path.is_file():
        return None
    board = read_json(path)
    on_disk: dict[str, str | None] = {}
    for entry in board.get("entries", []):
        record_path = Path(output_dir) / entry["checkpoint"] / RECORD_FILENAME
        if record_path.is_file():
            on_disk[entry["checkpoint"]] = load_record(record_path).eval_set.get("fingerprint")
    shared = set(on_disk.values())
    inferred = next(iter(shared)) if len(shared) == 1 else None
    fingerprints = {
        entry["checkpoint"]: entry.get("fingerprint") or on_disk.get(entry["checkpoint"]) or inferred
        for entry in board.get("entries", [])
    }
    return EarlierLeaderboard(board, fingerprints)


# ---- ranking records without a model ------------------------------------------------------------------


@dataclass(frozen=True)
class Ranking:
    """Records ranked by an objective, as :func:`rank_records` returns them.

    ``records`` carry this objective's ranking fields (``objective``, ``objective_value``, ``feasible``,
    ``violations``, ``objective_interval``) and the keys it derived (``expected_cost``); ``payload`` is
    the content of ``checkpoint_leaderboard.json``; ``notes`` say what could not be computed;
    ``p_value(challenger, incumbent)`` is the paired p-value ``require_significance`` used.
    """

    selection: Selection
    records: dict[str, CheckpointRecord]
    exists: dict[str, bool]
    payload: dict[str, Any]
    notes: tuple[str, ...]
    p_value: Callable[[str, str], float] | None = None


def rank_records(
    records: Mapping[str, CheckpointRecord],
    objective: Objective,
    *,
    output_dir: str | os.PathLike,
    exists: Mapping[str, bool] | None = None,
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    final: bool = True,
    unsaved: Mapping[str, CheckpointRecord] | None = None,
) -> Ranking:
    """Rank ``records`` by ``objective`` without a model: the selection, the records' ranking fields, the
    leaderboard payload.

    * Keys a record lacks: ``expected_cost`` (when the objective has a cost matrix) from the record's
      confusion matrix, else from the labels and predictions of its scores file; any other key from its
      scores file. A key that cannot be derived stays missing: that checkpoint's value is NaN (never best).
    * Intervals: a record keeps its ``objective_interval`` when it was computed for this same objective;
      otherwise a count-based key's interval is resampled from the record's confusion matrix (cheap); a
      score-based key's needs every row and is left out (``trainer-ext evaluate`` computes it).
    * ``require_significance`` and the leaderboard's ``comparison`` use the checkpoints' saved predictions
      (``predictions``: ``{checkpoint: (labels, predictions)}`` when in memory, else their scores files);
      a checkpoint without them is compared by value, as the callback does after a resume.

    ``unsaved``: evaluations without a checkpoint (:func:`read_unsaved`); they are listed in the payload
    with this objective's value, never ranked.

    Reads scores files only; writes nothing.
    """
    from .metrics import class_slugs
    from .scoring import objective_set

    output_dir = Path(output_dir)
    labels = next(iter(records.values())).labels if records else []
    slugs = class_slugs(labels) if len(labels) >= 2 else []
    set_names = _set_names(records)
    target = objective_set(objective, set_names) if set_names != [None] else None
    derived, notes = _derived_metrics(records, objective, output_dir, slugs)
    compare = _comparer(output_dir, objective, _task_of(records) or slugs, target, predictions)
    candidates = [Candidate(r.checkpoint, r.global_step, derived[n]) for n, r in records.items()]
    result = rank(candidates, objective, compare=compare, final=final)
    ranked = {r.checkpoint: r for r in result.selection.ranking}
    stored = objective.to_dict()
    new_records = {
        name: replace(
            record,
            metrics=derived[name],
            objective=stored,
            objective_value=ranked[name].objective_value,
            feasible=ranked[name].feasible,
            violations=dict(ranked[name].violations),
            objective_interval=_interval(record, objective, stored, slugs, target),
        )
        for name, record in records.items()
    }
    if exists is None:
        exists = existing_checkpoints(output_dir, new_records)
    estimate, estimate_note = _best_estimate(records, result.selection, objective, output_dir, set_names, slugs, predictions)
    payload = leaderboard_payload(
        result.selection, new_records, exists, comparison=result.comparison_dict,
        best_estimate=estimate, estimate_note=estimate_note, unsaved=_rescored(unsaved or {}, objective),
    )
    notes += _fingerprint_notes(records.values())
    return Ranking(result.selection, new_records, dict(exists), payload, tuple(notes), p_value_of(compare))


def _rescored(unsaved: Mapping[str, CheckpointRecord], objective: Objective) -> dict[str, CheckpointRecord]:
    """Unsaved evaluations with this objective's value, feasibility and violations (never ranked)."""
    out = {}
    for name, record in unsaved.items():
        alone = select_best([Candidate(name, record.global_step, record.metrics)], objective).ranking[0]
        out[name] = replace(
            record, objective=objective.to_dict(), objective_value=alone.objective_value, feasible=alone.feasible,
            violations=dict(alone.violations),
        )
    return out


def _best_estimate(
    records: Mapping[str, CheckpointRecord],
    selection: Any,
    objective: Objective,
    output_dir: Path,
    set_names: Sequence[str | None],
    slugs: Sequence[str],
    given: Mapping[str, tuple[np.ndarray, np.ndarray]] | None,
) -> tuple[dict | None, str | None]:
    """The leaderboard's ``best_estimate`` from the predictions given (one held-out set, in memory) or
    saved in each checkpoint's scores files; a checkpoint whose saved labels differ from the others' (another
    held-out set) is left out."""
    from .estimate import estimate_for_leaderboard

    task = _task_of(records)
    if task is None:
        return estimate_for_leaderboard(None, {}, {}, objective, slugs, None)
    labels: dict[str | None, np.ndarray] = {}
    predictions: dict[str, dict[str | None, np.ndarray]] = {}
    for set_name in set_names:
        saved = dict(read_predictions(output_dir, records, set_name))
        if given and set_names == [None]:
            saved.update({k: SavedPredictions(*v) for k, v in given.items()})
        for name in sorted(saved, key=lambda n: records[n].global_step):
            reference = labels.setdefault(set_name, saved[name].labels)
            if np.array_equal(reference, saved[name].labels):
                predictions.setdefault(name, {})[set_name] = saved[name].predictions
    complete = {name: p for name, p in predictions.items() if len(p) == len(set_names)}
    best = selection.best
    steps = {r.checkpoint: r.global_step for r in selection.ranking}
    return estimate_for_leaderboard(
        labels or None, complete, steps, objective, task, None if best is None else best.objective_value
    )


def _task_of(records: Mapping[str, CheckpointRecord]) -> Any:
    """The task the records were written with (None without records of two or more labels)."""
    from .tasks import task_from_record

    first = next(iter(records.values()), None)
    return task_from_record(first.task, first.labels) if first is not None and len(first.labels) >= 2 else None


def _comparer(
    output_dir: Path,
    objective: Objective,
    slugs: Sequence[str],
    target: str | None,
    given: Mapping[str, tuple[np.ndarray, np.ndarray]] | None,
) -> Callable[[str, str], PairedComparison | None]:
    """``compare(first, second)`` for :func:`trainer_ext.selection.rank`: a paired bootstrap on the
    predictions given, else those saved in each checkpoint's scores file (read when first needed)."""
    loaded: dict[str, tuple[np.ndarray, np.ndarray] | None] = dict(given or {})

    def predictions_of(checkpoint: str) -> tuple[np.ndarray, np.ndarray] | None:
        if checkpoint not in loaded:
            loaded[checkpoint] = read_predictions(output_dir, [checkpoint], target).get(checkpoint)
        return loaded[checkpoint]

    def compare(first: str, second: str) -> PairedComparison | None:
        a, b = predictions_of(first), predictions_of(second)
        if a is None or b is None or not slugs or a[0].shape != b[0].shape:
            return None
        return compare_predictions(objective, slugs, a[0], a[1], b[1], names=(first, second), target=target)

    return compare


def _derived_metrics(
    records: Mapping[str, CheckpointRecord], objective: Objective, output_dir: Path, slugs: Sequence[str]
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Each record's metrics with the objective's missing keys derived where possible, and a note
    naming the checkpoints where they could not be."""
    derived: dict[str, dict[str, float]] = {}
    lacking: list[str] = []
    for name, record in records.items():
        metrics = dict(record.metrics)
        needed = [k for k in objective.keys if k not in metrics or k == "expected_cost"]
        if needed and slugs:
            metrics.update(_derive(record, output_dir / name, needed, objective, slugs))
        if any(k not in metrics for k in objective.keys):
            lacking.append(name)
        derived[name] = metrics
    notes = []
    if lacking:
        missing = sorted({k for n in lacking for k in objective.keys if k not in derived[n]})
        notes.append(
            f"{', '.join(sorted(lacking, key=_step_or_minus_one))}: no confusion matrix or saved scores to compute "
            f"{', '.join(missing)} (folder rotated away, or saved without scores); ranked as missing."
        )
    return derived, notes


def _fingerprint_notes(records: Iterable[CheckpointRecord]) -> list[str]:
    fingerprints = {r.eval_set.get("fingerprint") for r in records if r.eval_set.get("fingerprint")}
    if len(fingerprints) <= 1:
        return []
    return [
        f"the records come from {len(fingerprints)} different held-out sets (fingerprints "
        f"{', '.join(sorted(fingerprints))}); their values are not comparable."
    ]


def _step_or_minus_one(name: str) -> int:
    step = checkpoint_step(name)
    return -1 if step is None else step


def _set_names(records: Mapping[str, CheckpointRecord]) -> list[str | None]:
    for record in records.values():
        if record.confusion_matrices:
            return list(record.confusion_matrices)
    return [None]


def _derive(
    record: CheckpointRecord, folder: Path, keys: Sequence[str], objective: Objective, slugs: Sequence[str]
) -> dict[str, float]:
    """Values of ``keys`` for one checkpoint with one held-out set, from its confusion matrix or saved scores."""
    out: dict[str, float] = {}
    if record.confusion_matrices:  # several held-out sets: the records hold every key the callback made
        return out
    scores = load_scores(folder) if (folder / SCORES_FILENAME).is_file() else None
    if "expected_cost" in keys and objective.cost_matrix is not None:
        from .metrics import confusion_matrix
        from .uncertainty import expected_cost

        cm = np.asarray(record.confusion_matrix, dtype=np.int64)
        if cm.size == 0 and scores is not None:
            cm = confusion_matrix(scores["labels"], scores["predictions"], len(slugs))
        if cm.size:
            prior = None if objective.class_prior is None else np.asarray(objective.class_prior)
            out["expected_cost"] = float(expected_cost(cm, np.asarray(objective.cost_matrix), prior))
    rest = [k for k in keys if k != "expected_cost" and k not in record.metrics]
    if rest and scores is not None:
        from .metrics import compute_metrics

        computed = compute_metrics(scores["labels"], scores["predictions"], scores.get("probabilities"), label_names=slugs)
        out.update({k: computed[k] for k in rest if k in computed})
    return out


def _interval(
    record: CheckpointRecord,
    objective: Objective,
    stored: Mapping[str, Any],
    slugs: Sequence[str],
    target: str | None,
) -> dict[str, Any] | None:
    if objective.bootstrap_resamples == 0:
        return None
    if record.objective == stored:
        return record.objective_interval
    from .uncertainty import bootstrap_interval

    key = resampled_key(objective, slugs, target) if slugs else None
    if record.confusion_matrices:
        cm = record.confusion_matrices.get(str(target)) if target is not None else None
    else:
        cm = record.confusion_matrix
    if not cm or key is None:
        return None
    return bootstrap_interval(
        np.asarray(cm, dtype=np.int64), key, list(slugs), resamples=objective.bootstrap_resamples,
        confidence=objective.confidence, seed=objective.seed,
        cost_matrix=None if objective.cost_matrix is None else np.asarray(objective.cost_matrix),
        class_prior=None if objective.class_prior is None else np.asarray(objective.class_prior),
    ).to_dict()
