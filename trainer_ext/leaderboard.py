"""The leaderboard of an output folder on disk: read every record back, write the ranking, point the
Trainer's state at the best. Pure: no torch, no transformers (the callback and the command line share it).

What an output folder holds (see :mod:`trainer_ext.records` for the file formats)::

    <output_dir>/checkpoint-<step>/checkpoint_metrics.json   one record per evaluated checkpoint
    <output_dir>/checkpoint-<step>/checkpoint_scores.npz     per-example scores (optional)
    <output_dir>/checkpoint-<step>/trainer_state.json        the Trainer's state, with best_* fields
    <output_dir>/checkpoint_leaderboard.json / .md           every evaluated checkpoint, best first

A checkpoint folder deleted by the Trainer's rotation (``save_total_limit``) keeps its leaderboard entry,
so :func:`read_records` rebuilds its record from that entry (metrics only: no confusion matrix).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .objectives import Objective, is_score_based
from .records import (
    LEADERBOARD_FILENAME,
    LEADERBOARD_MARKDOWN_FILENAME,
    RECORD_FILENAME,
    SCORES_FILENAME,
    CheckpointRecord,
    leaderboard_payload,
    load_record,
    load_scores,
    read_json,
    render_leaderboard_markdown,
    save_scores,
    write_json_atomic,
    write_text_atomic,
)
from .selection import Candidate, RankedCandidate, Selection, select_best

if TYPE_CHECKING:
    from .scoring import CheckpointScores
    from .uncertainty import PairedComparison

__all__ = [
    "CHECKPOINT_PREFIX",
    "TRAINER_STATE_FILENAME",
    "checkpoint_step",
    "checkpoint_folders",
    "scores_filename",
    "read_records",
    "record_from_leaderboard_entry",
    "candidates_of",
    "existing_checkpoints",
    "build_record",
    "save_set_scores",
    "compare_predictions",
    "Ranking",
    "rank_records",
    "write_leaderboard",
    "write_best_into_trainer_state",
    "write_threshold_into_config",
]

CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR, without importing it
TRAINER_STATE_FILENAME = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


def checkpoint_step(name: str) -> int | None:
    """The global step in a folder name ``checkpoint-<step>``; None for any other name
    (``checkpoint-12-tmp``, ``tmp-checkpoint-12``, ``checkpoint-best``)."""
    match = _CHECKPOINT_NAME.match(name)
    return int(match.group(1)) if match else None


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-<step>`` folders of ``output_dir``, in step order (empty when there are none)."""
    folders = [p for p in Path(output_dir).iterdir() if p.is_dir() and checkpoint_step(p.name) is not None]
    return sorted(folders, key=lambda p: checkpoint_step(p.name))


def scores_filename(set_name: str | None = None) -> str:
    """``checkpoint_scores.npz`` for the held-out set, ``checkpoint_scores.<set>.npz`` with several sets."""
    return SCORES_FILENAME if set_name is None else f"checkpoint_scores.{set_name}.npz"


def record_from_leaderboard_entry(
    entry: Mapping[str, Any], *, labels: list[str], objective: Mapping[str, Any]
) -> CheckpointRecord:
    """A record rebuilt from a leaderboard entry: metrics and ranking fields, no confusion matrix
    (``confusion_matrix == []``, ``num_samples == 0``)."""
    fields = {
        "checkpoint": entry["checkpoint"],
        "global_step": int(entry["global_step"]),
        "epoch": entry.get("epoch"),
        "labels": list(labels),
        "num_samples": 0,
        "metrics": {k: (math.nan if v is None else float(v)) for k, v in entry["metrics"].items()},
        "confusion_matrix": [],
        "objective": dict(objective),
        "objective_value": entry.get("objective_value"),
        "feasible": bool(entry.get("feasible")),
        "violations": {k: (math.inf if v is None else float(v)) for k, v in (entry.get("violations") or {}).items()},
        "objective_interval": entry.get("interval"),
        "decision_threshold": entry.get("decision_threshold"),
    }
    known = CheckpointRecord.__dataclass_fields__
    return CheckpointRecord(**{k: v for k, v in fields.items() if k in known})


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
    stored in the rebuilt records; default: the leaderboard's.

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
            if up_to_step is not None and int(entry["global_step"]) > up_to_step:
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


def candidates_of(records: Iterable[CheckpointRecord]) -> list[Candidate]:
    return [Candidate(r.checkpoint, r.global_step, r.metrics) for r in records]


def existing_checkpoints(output_dir: str | os.PathLike, names: Iterable[str]) -> dict[str, bool]:
    """Which of the checkpoint folders ``names`` are still on disk. Reads the file system: under
    several processes, call it on the main process and broadcast the result."""
    return {name: (Path(output_dir) / name).is_dir() for name in names}


def write_leaderboard(output_dir: str | os.PathLike, payload: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``checkpoint_leaderboard.json`` and ``.md`` (from :func:`trainer_ext.records.leaderboard_payload`),
    each atomically. Main process only."""
    json_path = Path(output_dir) / LEADERBOARD_FILENAME
    markdown_path = Path(output_dir) / LEADERBOARD_MARKDOWN_FILENAME
    write_json_atomic(json_path, payload)
    write_text_atomic(markdown_path, render_leaderboard_markdown(payload))
    return json_path, markdown_path


def write_best_into_trainer_state(
    checkpoint_dir: str | os.PathLike,
    *,
    best_metric: float | None,
    best_global_step: int | None,
    best_model_checkpoint: str | None,
) -> bool:
    """Set the three best fields of ``<checkpoint_dir>/trainer_state.json``, atomically, keeping every
    other field. ``TrainerState.load_from_json`` reads them on ``resume_from_checkpoint``, and
    best-model loading and rotation follow ``best_model_checkpoint``. Returns False (and writes
    nothing) when the folder has no ``trainer_state.json``. Main process only."""
    path = Path(checkpoint_dir) / TRAINER_STATE_FILENAME
    if not path.is_file():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    data["best_metric"] = best_metric
    data["best_global_step"] = best_global_step
    data["best_model_checkpoint"] = best_model_checkpoint
    write_json_atomic(path, data)
    return True


def write_threshold_into_config(checkpoint_dir: str | os.PathLike, threshold: float) -> bool:
    """Store a tuned decision threshold in ``<checkpoint_dir>/config.json`` as
    ``decision_threshold = {"class_id": 1, "threshold": t}`` (read by
    :func:`trainer_ext.thresholds.predict_with_threshold`). False when there is no config.json."""
    from .thresholds import CONFIG_KEY

    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        return False
    config = json.loads(path.read_text(encoding="utf-8"))
    config[CONFIG_KEY] = {"class_id": 1, "threshold": threshold}
    write_json_atomic(path, config)
    return True


# ---- one checkpoint's record ------------------------------------------------------------------------


def build_record(
    *,
    checkpoint: str,
    global_step: int,
    epoch: float | None,
    labels: Sequence[str],
    name: str,
    held_out: Mapping[str | None, tuple[int, str]],
    scores: CheckpointScores,
    objective: Objective,
    evaluation: Mapping[str, Any],
    ranked: RankedCandidate | None = None,
) -> CheckpointRecord:
    """The ``checkpoint_metrics.json`` of one evaluated checkpoint, the same wherever it is made.

    ``held_out`` maps each held-out set (None when there is one) to ``(num_samples, fingerprint)``;
    ``scores`` is :func:`trainer_ext.scoring.score_checkpoint`'s result; ``ranked`` is this checkpoint in
    the current selection (its objective value, feasibility and violations; without it they are left
    unset, for :func:`rank_records` to fill); ``evaluation`` is ``processes``, ``precision``, ``seconds``,
    ``batch_size``.
    """
    total = int(sum(n for n, _ in held_out.values()))
    several = len(held_out) > 1
    return CheckpointRecord(
        checkpoint=checkpoint,
        global_step=int(global_step),
        epoch=epoch,
        labels=[str(n) for n in labels],
        num_samples=total,
        metrics=dict(scores.metrics),
        confusion_matrix=np.asarray(sum(scores.confusion_matrices.values())).tolist(),
        objective=objective.to_dict(),
        objective_value=None if ranked is None else ranked.objective_value,
        feasible=False if ranked is None else ranked.feasible,
        violations={} if ranked is None else dict(ranked.violations),
        eval_set={
            "name": name,
            "num_samples": total,
            "fingerprint": "+".join(fingerprint for _, fingerprint in held_out.values()),
            "sets": {str(k): {"num_samples": n, "fingerprint": f} for k, (n, f) in held_out.items()},
        },
        evaluation=dict(evaluation),
        decision_threshold=scores.threshold,
        objective_interval=scores.interval.to_dict() if scores.interval else None,
        confusion_matrices={str(k): np.asarray(v).tolist() for k, v in scores.confusion_matrices.items()} if several else {},
        notes=list(scores.notes),
    )


def save_set_scores(
    checkpoint_dir: str | os.PathLike,
    outputs: Mapping[str | None, Any],
    predictions: Mapping[str | None, np.ndarray],
) -> None:
    """Per-example ``labels``, ``predictions`` (after a tuned threshold) and ``probabilities`` of each
    held-out set (``outputs[set]`` has ``labels`` and ``probabilities``), one file per set
    (:func:`scores_filename`). Main process only."""
    for set_name, output in outputs.items():
        filename = None if set_name is None else scores_filename(set_name)
        save_scores(checkpoint_dir, output.labels, predictions[set_name], output.probabilities, filename=filename)


# ---- ranking ------------------------------------------------------------------------------------------


def _unprefixed(key: str, set_name: str | None) -> str:
    if set_name and key.startswith(f"{set_name}_"):
        return key[len(set_name) + 1 :]
    return key


def _count_key(key: str, slugs: Sequence[str]) -> bool:
    from .metrics import metric_keys

    return key == "expected_cost" or key in metric_keys(slugs, with_scores=False)


def compare_predictions(
    objective: Objective,
    slugs: Sequence[str],
    labels: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    *,
    names: tuple[str, str],
    target: str | None = None,
) -> PairedComparison | None:
    """Paired bootstrap of the objective's key, ``first`` minus ``second`` (signed so that positive favours
    ``first``), on the same examples of held-out set ``target``; None for a key computed from scores or
    not computed by trainer_ext (custom), which cannot be resampled from predictions."""
    from .uncertainty import paired_bootstrap

    key = _unprefixed(objective.metric, target)
    if is_score_based(key) or not _count_key(key, slugs):
        return None
    return paired_bootstrap(
        np.asarray(labels),
        np.asarray(first),
        np.asarray(second),
        key,
        list(slugs),
        greater_is_better=bool(objective.greater_is_better),
        names=names,
        resamples=objective.bootstrap_resamples,
        confidence=objective.confidence,
        seed=objective.seed,
        cost_matrix=None if objective.cost_matrix is None else np.asarray(objective.cost_matrix),
        class_prior=None if objective.class_prior is None else np.asarray(objective.class_prior),
    )


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


class _Predictions:
    """Per-example predictions of the objective's held-out set, for paired comparisons: given, or read
    from each checkpoint's scores file when first needed."""

    def __init__(self, output_dir: Path, filename: str, given: Mapping[str, Any] | None) -> None:
        self.output_dir, self.filename = output_dir, filename
        self.loaded: dict[str, tuple[np.ndarray, np.ndarray] | None] = dict(given or {})

    def get(self, checkpoint: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(labels, predictions)`` or None when the checkpoint has no scores file."""
        if checkpoint not in self.loaded:
            path = self.output_dir / checkpoint / self.filename
            if path.is_file():
                arrays = load_scores(path)
                self.loaded[checkpoint] = (arrays["labels"], arrays["predictions"])
            else:
                self.loaded[checkpoint] = None
        return self.loaded[checkpoint]


def rank_records(
    records: Mapping[str, CheckpointRecord],
    objective: Objective,
    *,
    output_dir: str | os.PathLike,
    exists: Mapping[str, bool] | None = None,
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    final: bool = True,
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

    Reads scores files only; writes nothing.
    """
    from .metrics import class_slugs
    from .scoring import objective_set

    output_dir = Path(output_dir)
    notes: list[str] = []
    labels = next(iter(records.values())).labels if records else []
    slugs = class_slugs(labels) if len(labels) >= 2 else []
    set_names = _set_names(records)
    target = objective_set(objective, set_names) if set_names != [None] else None
    store = _Predictions(output_dir, scores_filename(target), predictions)

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
    if lacking:
        missing = sorted({k for n in lacking for k in objective.keys if k not in derived[n]})
        notes.append(
            f"{', '.join(sorted(lacking, key=_step_or_minus_one))}: no confusion matrix or saved scores to compute "
            f"{', '.join(missing)} (folder rotated away, or saved without scores); ranked as missing."
        )

    def p_value(challenger: str, incumbent: str) -> float:
        comparison = _compare(challenger, incumbent)
        return 0.0 if comparison is None else 1.0 - comparison.win_share  # no predictions: the value decides

    def _compare(first: str, second: str) -> PairedComparison | None:
        a, b = store.get(first), store.get(second)
        if a is None or b is None or not slugs or a[0].shape != b[0].shape:
            return None
        return compare_predictions(objective, slugs, a[0], a[1], b[1], names=(first, second), target=target)

    candidates = [Candidate(r.checkpoint, r.global_step, derived[n]) for n, r in records.items()]
    selection = select_best(
        candidates, objective, final=final, **({"p_value": p_value} if objective.require_significance else {})
    )
    comparison = None
    if objective.bootstrap_resamples > 0 and selection.best is not None and len(selection.ranking) >= 2:
        paired = _compare(selection.ranking[0].checkpoint, selection.ranking[1].checkpoint)
        comparison = paired.to_dict() if paired is not None else None

    ranked = {r.checkpoint: r for r in selection.ranking}
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
    payload = leaderboard_payload(selection, new_records, exists, comparison=comparison)
    fingerprints = {r.eval_set.get("fingerprint") for r in records.values() if r.eval_set.get("fingerprint")}
    if len(fingerprints) > 1:
        notes.append(
            f"the records come from {len(fingerprints)} different held-out sets (fingerprints "
            f"{', '.join(sorted(fingerprints))}); their values are not comparable."
        )
    return Ranking(selection, new_records, dict(exists), payload, tuple(notes), p_value)


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

    key = _unprefixed(objective.metric, target)
    if record.confusion_matrices:
        cm = record.confusion_matrices.get(str(target)) if target is not None else None
    else:
        cm = record.confusion_matrix
    if not cm or not slugs or is_score_based(key) or not _count_key(key, slugs):
        return None
    return bootstrap_interval(
        np.asarray(cm, dtype=np.int64), key, list(slugs), resamples=objective.bootstrap_resamples,
        confidence=objective.confidence, seed=objective.seed,
        cost_matrix=None if objective.cost_matrix is None else np.asarray(objective.cost_matrix),
        class_prior=None if objective.class_prior is None else np.asarray(objective.class_prior),
    ).to_dict()
