"""Every file trainer_ext writes, and every write: versioned JSON records, the leaderboard, per-example
scores, the edits of the Trainer's ``trainer_state.json`` and ``config.json``, checkpoint naming. Pure: no
torch, no transformers. (Reading a whole output folder back is :mod:`trainer_ext.run_folder`; text for
people is :mod:`trainer_ext.render`.)

Files (names are part of the public contract):

* ``<checkpoint>/checkpoint_metrics.json`` -- one :class:`CheckpointRecord`.
* ``<checkpoint>/checkpoint_scores.npz`` -- per-example ``labels``, ``predictions`` and, when the model
  gives scores, ``probabilities`` (float32, rows in held-out order), for re-ranking without a model;
  ``checkpoint_scores.<set>.npz`` per set with several held-out sets (:func:`scores_filename`).
* ``<output_dir>/checkpoint_leaderboard.json`` and ``checkpoint_leaderboard.md`` -- every evaluated
  checkpoint, best first (:func:`leaderboard_payload`, :func:`write_leaderboard`).
* ``<output_dir>/checkpoint_leaderboard.previous.json`` -- leaderboard entries that ``trainer-ext evaluate``
  moved out of the leaderboard because they were measured on another held-out set
  (:func:`append_previous_entries`); each move is appended, none is overwritten.
* ``<checkpoint>/trainer_state.json`` (the Trainer's): :func:`write_best_into_trainer_state` sets its
  three ``best_*`` fields; ``<checkpoint>/config.json``: :func:`write_threshold_into_config` stores a
  tuned decision threshold.

Every write goes to a temporary file in the same folder, is flushed and fsynced, then ``os.replace`` d
over the target (:func:`write_file_atomic`, the one implementation): a reader sees the old file or the
new one, never a partial one. NaN and infinities are written as ``null`` (strict JSON) and read back by
:func:`decode_floats`. Every file has ``schema_version``; a reader refuses a newer one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from .errors import SchemaVersionError
from .selection import Selection

if TYPE_CHECKING:
    from .objectives import Objective
    from .scoring import CheckpointScores
    from .selection import RankedCandidate

__all__ = [
    "SCHEMA_VERSION",
    "RECORD_FILENAME",
    "SCORES_FILENAME",
    "LEADERBOARD_FILENAME",
    "LEADERBOARD_MARKDOWN_FILENAME",
    "PREVIOUS_LEADERBOARD_FILENAME",
    "TRAINER_STATE_FILENAME",
    "CONFIG_FILENAME",
    "CHECKPOINT_PREFIX",
    "checkpoint_step",
    "checkpoint_name",
    "scores_filename",
    "CheckpointRecord",
    "decode_floats",
    "write_file_atomic",
    "write_json_atomic",
    "write_text_atomic",
    "read_json",
    "load_record",
    "save_scores",
    "load_scores",
    "build_record",
    "save_set_scores",
    "write_checkpoint_files",
    "leaderboard_payload",
    "write_leaderboard",
    "append_previous_entries",
    "write_best_into_trainer_state",
    "write_threshold_into_config",
]

SCHEMA_VERSION = 1
RECORD_FILENAME = "checkpoint_metrics.json"
SCORES_FILENAME = "checkpoint_scores.npz"
LEADERBOARD_FILENAME = "checkpoint_leaderboard.json"
LEADERBOARD_MARKDOWN_FILENAME = "checkpoint_leaderboard.md"
PREVIOUS_LEADERBOARD_FILENAME = "checkpoint_leaderboard.previous.json"
TRAINER_STATE_FILENAME = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME
CONFIG_FILENAME = "config.json"  # the model's configuration, saved by save_pretrained
CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR, without importing it
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


# ---- names ------------------------------------------------------------------------------------------


def checkpoint_step(name: str) -> int | None:
    """The global step in a folder name ``checkpoint-<step>``; None for any other name
    (``checkpoint-12-tmp``, ``tmp-checkpoint-12``, ``checkpoint-best``)."""
    match = _CHECKPOINT_NAME.match(name)
    return int(match.group(1)) if match else None


def checkpoint_name(global_step: int) -> str:
    """``checkpoint-<step>``: the folder the Trainer saves at ``global_step``."""
    return f"{CHECKPOINT_PREFIX}-{int(global_step)}"


def scores_filename(set_name: str | None = None) -> str:
    """``checkpoint_scores.npz`` for the held-out set, ``checkpoint_scores.<set>.npz`` with several sets."""
    return SCORES_FILENAME if set_name is None else f"checkpoint_scores.{set_name}.npz"


# ---- JSON values --------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def decode_floats(values: Mapping[str, Any] | None, *, null: float = math.nan) -> dict[str, float]:
    """The inverse of the strict-JSON encoding: ``{key: float}``, a ``null`` read back as ``null``
    (NaN for metric values; ``math.inf`` for constraint violations, which are never NaN: a NaN metric
    misses its bound by inf). ``None`` reads as ``{}``."""
    return {str(k): (null if v is None else float(v)) for k, v in (values or {}).items()}


# ---- atomic writes ------------------------------------------------------------------------------------


def _replace_atomically(path: Path, write: Any) -> None:
    """Write through ``.<name>.<random>.tmp`` + ``os.replace``. On failure the temporary file is removed
    and an ``OSError`` names ``path`` (a full disk's ENOSPC comes from a file descriptor and names none)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if exc.errno is None:
            raise
        raise _naming(exc, path) from exc
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; keep the target's mode, else the umask's
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise _naming(exc, path) from exc
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """The same kind of error (errno, so the same OSError subclass), saying which file could not be written:
    ``[Errno 28] No space left on device; trainer_ext could not write checkpoint_metrics.json (...): '<path>'``."""
    return OSError(
        exc.errno,
        f"{exc.strerror}; trainer_ext could not write {path.name} (a previous version, if any, is unchanged)",
        str(path),
    )


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_file_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Write a file through ``write(handle)`` (a binary file handle) atomically: temp file, fsync,
    ``os.replace``. Every file trainer_ext writes goes through here (JSON, npz, markdown, PNG figures)."""
    _replace_atomically(Path(path), write)


def write_json_atomic(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as JSON (indent 2, sorted keys, NaN as null) through a temp file + os.replace."""
    text = json.dumps(_jsonable(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"
    _replace_atomically(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    _replace_atomically(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read one of our JSON files; raise :class:`SchemaVersionError` when it is newer than this library."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(version, int):
        raise SchemaVersionError(f"{path}: no integer 'schema_version'; this is not a trainer_ext file.")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: schema_version {version} is newer than this trainer_ext understands ({SCHEMA_VERSION}). "
            f"Upgrade trainer-ext to read it."
        )
    return data


# ---- checkpoint records and scores ----------------------------------------------------------------------


@dataclass
class CheckpointRecord:
    """The content of ``checkpoint_metrics.json``. ``metrics`` is a flat dict of metric keys."""

    checkpoint: str
    global_step: int
    epoch: float | None
    labels: list[str]
    num_samples: int
    metrics: dict[str, float]
    confusion_matrix: list[list[int]]
    objective: dict[str, Any]
    objective_value: float | None
    feasible: bool
    violations: dict[str, float] = field(default_factory=dict)
    eval_set: dict[str, Any] = field(default_factory=dict)  # name, num_samples, fingerprint
    evaluation: dict[str, Any] = field(default_factory=dict)  # processes, precision, seconds
    decision_threshold: float | None = None  # tuned threshold on P(class id 1), binary only
    objective_interval: dict[str, Any] | None = None  # bootstrap interval of objective_value
    confusion_matrices: dict[str, list[list[int]]] = field(default_factory=dict)  # per held-out set
    notes: list[str] = field(default_factory=list)
    task: str = "single_label"  # records written before this field are single-label
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointRecord:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["metrics"] = decode_floats(data["metrics"])
        kwargs["violations"] = decode_floats(data.get("violations"), null=math.inf)
        return cls(**kwargs)

    def write(self, checkpoint_dir: str | os.PathLike) -> Path:
        path = Path(checkpoint_dir) / RECORD_FILENAME
        write_json_atomic(path, self.to_dict())
        return path


def load_record(path: str | os.PathLike) -> CheckpointRecord:
    """Read ``checkpoint_metrics.json`` (a folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILENAME
    return CheckpointRecord.from_dict(read_json(path))


def save_scores(
    checkpoint_dir: str | os.PathLike,
    labels: np.ndarray,
    predictions: np.ndarray,
    probabilities: np.ndarray | None,
    *,
    filename: str | None = None,
) -> Path:
    """Write the per-example arrays next to the record, atomically (``filename`` default
    ``checkpoint_scores.npz``; with several held-out sets, ``checkpoint_scores.<set>.npz``)."""
    arrays = {
        "schema_version": np.asarray(SCHEMA_VERSION),
        "labels": _saved_values(labels),
        "predictions": _saved_values(predictions),
    }
    if probabilities is not None:
        arrays["probabilities"] = np.asarray(probabilities, dtype=np.float32)
    path = Path(checkpoint_dir) / (filename or SCORES_FILENAME)
    _replace_atomically(path, lambda handle: np.savez(handle, **arrays))
    return path


def _saved_values(values: np.ndarray) -> np.ndarray:
    """Class ids (or 0/1 label vectors) as int64; a regression model's real values stay float64."""
    values = np.asarray(values)
    return values.astype(np.float64) if values.dtype.kind == "f" and not np.all(values == np.round(values)) else values.astype(np.int64)


def load_scores(checkpoint_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(checkpoint_dir)
    if path.is_dir():
        path = path / SCORES_FILENAME
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    if int(arrays.get("schema_version", 0)) > SCHEMA_VERSION:
        raise SchemaVersionError(f"{path}: schema_version {int(arrays['schema_version'])} is newer than {SCHEMA_VERSION}.")
    return arrays


# ---- the leaderboard ----------------------------------------------------------------------------------


def leaderboard_payload(
    selection: Selection,
    records: Mapping[str, CheckpointRecord],
    exists: Mapping[str, bool],
    *,
    protected: Sequence[str] = (),
    reason: str | None = None,
    comparison: Mapping[str, Any] | None = None,
    best_estimate: Mapping[str, Any] | None = None,
    estimate_note: str | None = None,
    unsaved: Mapping[str, CheckpointRecord] | None = None,
) -> dict[str, Any]:
    """The content of ``checkpoint_leaderboard.json``: entries best first. Each entry carries the
    ``fingerprint`` of the held-out set its metrics were measured on (None when unknown: an entry of a
    leaderboard written before this field), so that ``trainer-ext evaluate`` can tell which entries of
    rotated-away checkpoints are comparable with a new evaluation. ``best_estimate`` is the
    selection-corrected estimate of the chosen checkpoint (:func:`trainer_ext.estimate.estimate_for_leaderboard`),
    None when it could not be computed; ``estimate_note`` (why not, or what it left out) is added to
    ``reason``. ``unsaved``: evaluations for which no checkpoint was written (``eval_steps``/``save=``),
    listed after the ranked entries in step order with ``saved: false`` and ``rank: null`` (never
    candidates for the best); ranked entries have ``saved: true``."""
    entries = []
    for ranked in selection.ranking:
        record = records[ranked.checkpoint]
        entries.append(
            {
                "rank": ranked.rank,
                "checkpoint": ranked.checkpoint,
                "global_step": ranked.global_step,
                "epoch": record.epoch,
                "objective_value": ranked.objective_value,
                "feasible": ranked.feasible,
                "violations": dict(ranked.violations),
                "exists": bool(exists.get(ranked.checkpoint, False)),
                "protected": ranked.checkpoint in protected,
                "interval": record.objective_interval,
                "decision_threshold": record.decision_threshold,
                "metrics": record.metrics,
                "fingerprint": record.eval_set.get("fingerprint"),
                "saved": True,
            }
        )
    for record in sorted((unsaved or {}).values(), key=lambda r: r.global_step):
        entries.append(
            {
                "rank": None, "checkpoint": record.checkpoint, "global_step": record.global_step,
                "epoch": record.epoch, "objective_value": record.objective_value, "feasible": record.feasible,
                "violations": dict(record.violations), "exists": False, "protected": False,
                "interval": record.objective_interval, "decision_threshold": record.decision_threshold,
                "metrics": record.metrics, "fingerprint": record.eval_set.get("fingerprint"), "saved": False,
            }
        )
    return _jsonable(
        {
            "schema_version": SCHEMA_VERSION,
            "objective": selection.objective.to_dict(),
            "best_checkpoint": selection.best_checkpoint,
            "reason": "; ".join(t for t in (reason or selection.reason, estimate_note) if t),
            "comparison": dict(comparison) if comparison else None,
            "best_estimate": dict(best_estimate) if best_estimate else None,
            "labels": next(iter(records.values())).labels if records else [],
            "task": next(iter(records.values())).task if records else "single_label",
            "entries": entries,
        }
    )


def write_leaderboard(output_dir: str | os.PathLike, payload: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``checkpoint_leaderboard.json`` and ``.md`` (from :func:`leaderboard_payload`), each
    atomically. Main process only."""
    from .render import leaderboard_markdown

    json_path = Path(output_dir) / LEADERBOARD_FILENAME
    markdown_path = Path(output_dir) / LEADERBOARD_MARKDOWN_FILENAME
    write_json_atomic(json_path, payload)
    write_text_atomic(markdown_path, leaderboard_markdown(payload))
    return json_path, markdown_path


def append_previous_entries(
    output_dir: str | os.PathLike, board: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], *, reason: str
) -> Path:
    """Append ``entries`` (leaderboard entries taken out of ``board``, the leaderboard they were in) to
    ``checkpoint_leaderboard.previous.json``, atomically, and return its path. The file keeps every move
    ever made, oldest first::

        {"schema_version": 1, "moves": [{"reason": ..., "objective": ..., "labels": [...],
                                         "best_checkpoint": ..., "entries": [...]}, ...]}

    Raises :class:`~trainer_ext.errors.SchemaVersionError` when the existing file is newer than this
    library (it is then left as it is). Main process only."""
    path = Path(output_dir) / PREVIOUS_LEADERBOARD_FILENAME
    moves = list(read_json(path).get("moves", [])) if path.is_file() else []
    moves.append(
        {
            "reason": reason,
            "objective": board.get("objective"),
            "labels": list(board.get("labels", [])),
            "best_checkpoint": board.get("best_checkpoint"),
            "entries": [dict(entry) for entry in entries],
        }
    )
    write_json_atomic(path, {"schema_version": SCHEMA_VERSION, "moves": moves})
    return path


# ---- one checkpoint's files -------------------------------------------------------------------------


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
    task: str = "single_label",
    columns: Mapping[str | None, Sequence[str]] | None = None,
) -> CheckpointRecord:
    """The ``checkpoint_metrics.json`` of one evaluated checkpoint, the same wherever it is made.

    ``held_out`` maps each held-out set (None when there is one) to ``(num_samples, fingerprint)``;
    ``scores`` is :func:`trainer_ext.scoring.score_checkpoint`'s result; ``ranked`` is this checkpoint in
    the current selection (its objective value, feasibility and violations; without it they are left
    unset, for :func:`trainer_ext.run_folder.rank_records` to fill); ``evaluation`` is ``processes``,
    ``precision``, ``seconds``, ``batch_size``; ``task`` is the task's name; ``columns`` the held-out columns
    each set was read from (``eval_set.columns``: one list with one set, by set with several).
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
            **_columns_field(columns, several),
        },
        evaluation=dict(evaluation),
        decision_threshold=scores.threshold,
        objective_interval=scores.interval.to_dict() if scores.interval else None,
        confusion_matrices={str(k): np.asarray(v).tolist() for k, v in scores.confusion_matrices.items()} if several else {},
        notes=list(scores.notes),
        task=task,
    )


def _columns_field(columns: Mapping[str | None, Sequence[str]] | None, several: bool) -> dict[str, Any]:
    if not columns:
        return {}
    if several:
        return {"columns": {str(k): list(v) for k, v in columns.items()}}
    return {"columns": list(next(iter(columns.values())))}


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


def write_checkpoint_files(
    checkpoint_dir: str | os.PathLike,
    record: CheckpointRecord,
    outputs: Mapping[str | None, Any],
    predictions: Mapping[str | None, np.ndarray],
    *,
    save_scores: bool = True,
    threshold: Mapping[str, Any] | None = None,
) -> None:
    """Everything one evaluated checkpoint writes into its folder, in this order: the record, the
    per-example scores of each held-out set (with ``save_scores``, see :func:`save_set_scores`), and a
    tuned decision threshold into its ``config.json`` (``threshold``: the task's
    :meth:`~trainer_ext.tasks.Task.threshold_config`, or None). The callback's
    ``on_save`` and ``trainer-ext evaluate`` both call it. Main process only."""
    record.write(checkpoint_dir)
    if save_scores:
        save_set_scores(checkpoint_dir, outputs, predictions)
    if threshold is not None:
        write_threshold_into_config(checkpoint_dir, threshold)


# ---- edits of the Trainer's files -----------------------------------------------------------------------


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


def write_threshold_into_config(checkpoint_dir: str | os.PathLike, setting: Mapping[str, Any]) -> bool:
    """Store a tuned decision threshold in ``<checkpoint_dir>/config.json`` under ``decision_threshold``,
    in the task's form (:meth:`trainer_ext.tasks.Task.threshold_config`; single-label:
    ``{"class_id": 1, "threshold": t}``, read by :func:`trainer_ext.thresholds.predict_with_threshold`).
    False when there is no config.json."""
    from .thresholds import CONFIG_KEY

    path = Path(checkpoint_dir) / CONFIG_FILENAME
    if not path.is_file():
        return False
    config = json.loads(path.read_text(encoding="utf-8"))
    config[CONFIG_KEY] = dict(setting)
    write_json_atomic(path, config)
    return True
