"""Versioned JSON records on disk, written atomically. Pure: no torch.

Files (names are part of the public contract):

* ``<checkpoint>/checkpoint_metrics.json`` -- one :class:`CheckpointRecord`.
* ``<checkpoint>/checkpoint_scores.npz`` -- per-example ``labels``, ``predictions`` and, when the model
  gives scores, ``probabilities`` (float32, rows in held-out order), for re-ranking without a model.
* ``<output_dir>/checkpoint_leaderboard.json`` and ``checkpoint_leaderboard.md`` -- every evaluated
  checkpoint, best first.

Every write goes to a temporary file in the same folder, is flushed to disk, then ``os.replace`` d over
the target: a reader sees the old file or the new one, never a partial one. NaN and infinities are
written as ``null`` (strict JSON). Every file has ``schema_version``; a reader refuses a newer one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SchemaVersionError
from .selection import Selection

__all__ = [
    "SCHEMA_VERSION",
    "RECORD_FILENAME",
    "SCORES_FILENAME",
    "LEADERBOARD_FILENAME",
    "LEADERBOARD_MARKDOWN_FILENAME",
    "CheckpointRecord",
    "write_json_atomic",
    "read_json",
    "load_record",
    "save_scores",
    "load_scores",
    "leaderboard_payload",
    "render_leaderboard_markdown",
]

SCHEMA_VERSION = 1
RECORD_FILENAME = "checkpoint_metrics.json"
SCORES_FILENAME = "checkpoint_scores.npz"
LEADERBOARD_FILENAME = "checkpoint_leaderboard.json"
LEADERBOARD_MARKDOWN_FILENAME = "checkpoint_leaderboard.md"


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
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointRecord:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["metrics"] = {k: (math.nan if v is None else float(v)) for k, v in data["metrics"].items()}
        # A violation is never NaN (a NaN metric misses by inf), so a null one was written from inf.
        kwargs["violations"] = {k: (math.inf if v is None else float(v)) for k, v in data.get("violations", {}).items()}
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
        "labels": np.asarray(labels, dtype=np.int64),
        "predictions": np.asarray(predictions, dtype=np.int64),
    }
    if probabilities is not None:
        arrays["probabilities"] = np.asarray(probabilities, dtype=np.float32)
    path = Path(checkpoint_dir) / (filename or SCORES_FILENAME)
    _replace_atomically(path, lambda handle: np.savez(handle, **arrays))
    return path


def load_scores(checkpoint_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(checkpoint_dir)
    if path.is_dir():
        path = path / SCORES_FILENAME
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    if int(arrays.get("schema_version", 0)) > SCHEMA_VERSION:
        raise SchemaVersionError(f"{path}: schema_version {int(arrays['schema_version'])} is newer than {SCHEMA_VERSION}.")
    return arrays


def leaderboard_payload(
    selection: Selection,
    records: Mapping[str, CheckpointRecord],
    exists: Mapping[str, bool],
    *,
    protected: Sequence[str] = (),
    reason: str | None = None,
    comparison: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``checkpoint_leaderboard.json``: entries best first."""
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
            }
        )
    return _jsonable(
        {
            "schema_version": SCHEMA_VERSION,
            "objective": selection.objective.to_dict(),
            "best_checkpoint": selection.best_checkpoint,
            "reason": reason or selection.reason,
            "comparison": dict(comparison) if comparison else None,
            "labels": next(iter(records.values())).labels if records else [],
            "entries": entries,
        }
    )


def render_leaderboard_markdown(payload: Mapping[str, Any], *, max_classes: int = 6) -> str:
    """A table a person reads: one row per checkpoint, best first, per-class precision/recall/F1."""
    objective = payload["objective"]
    metric = objective["metric"]
    slugs = [s for s in _slugs_in(payload)][:max_classes]
    columns = [metric] + [k for k in ("accuracy", "f1_macro") if k != metric]
    for slug in slugs:
        columns += [k for k in (f"precision_{slug}", f"recall_{slug}", f"f1_{slug}") if k != metric]
    lines = [
        "# Checkpoint leaderboard",
        "",
        f"Objective: **{metric}** ({'higher' if objective['greater_is_better'] else 'lower'} is better)"
        + (f", constraints: {', '.join(objective['constraints'])}" if objective["constraints"] else "")
        + (f", tie-breakers: {', '.join(objective['tie_breakers'])}" if objective["tie_breakers"] else ""),
        "",
        f"Best: **{payload['best_checkpoint']}**. {payload.get('reason', '')}",
        "",
    ]
    comparison = payload.get("comparison")
    if comparison:
        lines += [
            f"Best against runner-up ({comparison['second']}), paired bootstrap of {comparison['resamples']} "
            f"resamples: difference {_fmt(comparison['difference'])} "
            f"[{_fmt(comparison['low'])}, {_fmt(comparison['high'])}] at {comparison['confidence']:.0%}; "
            f"the best wins in {comparison['win_share']:.1%} of resamples.",
            "",
        ]
    with_interval = any(entry.get("interval") for entry in payload["entries"])
    header = ["rank", "checkpoint", "step", "feasible", "on disk"] + (["interval"] if with_interval else [])
    lines += [
        "| " + " | ".join(header + columns) + " |",
        "|" + "---|" * (len(header) + len(columns)),
    ]
    for entry in payload["entries"]:
        marker = " (best)" if entry["checkpoint"] == payload["best_checkpoint"] else ""
        marker += " (top-k, kept)" if entry.get("protected") else ""
        cells = [
            str(entry["rank"]),
            f"{entry['checkpoint']}{marker}",
            str(entry["global_step"]),
            "yes" if entry["feasible"] else "no",
            "yes" if entry["exists"] else "no",
        ]
        if with_interval:
            interval = entry.get("interval")
            cells.append(f"[{_fmt(interval['low'])}, {_fmt(interval['high'])}]" if interval else "n/a")
        cells += [_fmt(entry["metrics"].get(col)) for col in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _slugs_in(payload: Mapping[str, Any]) -> list[str]:
    from .metrics import slugify  # local: records stays importable with only numpy at hand

    return [slugify(name) for name in payload.get("labels", [])]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
