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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .objectives import Objective
from .records import (
    LEADERBOARD_FILENAME,
    LEADERBOARD_MARKDOWN_FILENAME,
    RECORD_FILENAME,
    CheckpointRecord,
    load_record,
    read_json,
    render_leaderboard_markdown,
    write_json_atomic,
    write_text_atomic,
)
from .selection import Candidate

__all__ = [
    "CHECKPOINT_PREFIX",
    "TRAINER_STATE_FILENAME",
    "checkpoint_step",
    "checkpoint_folders",
    "read_records",
    "record_from_leaderboard_entry",
    "candidates_of",
    "existing_checkpoints",
    "write_leaderboard",
    "write_best_into_trainer_state",
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
