"""What the callback writes into the output folder during a run, on the global main process only, and
the one fact every rank needs back from the file system (which recorded checkpoints still exist).

Each write is a step of a hook: it runs on the main process and its failure is returned, not raised,
so that the hook can share it with every rank first (:func:`on_main` then
:func:`trainer_ext.distributed.raise_if_any`): no rank waits in a collective for a main process that
failed to write.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import distributed
from .records import write_best_into_trainer_state, write_checkpoint_files, write_leaderboard
from .run_folder import checkpoint_folders, existing_checkpoints
from .tracker import PendingEvaluation, RunTracker

logger = logging.getLogger(__name__)

__all__ = ["RunFiles", "on_main"]


def on_main(state: Any, write: Callable[[], None]) -> Exception | None:
    """Run ``write`` on the global main process; return its exception instead of raising it."""
    if not state.is_world_process_zero:
        return None
    try:
        write()
    except Exception as exc:  # noqa: BLE001 - re-raised by distributed.raise_if_any on this rank
        return exc
    return None


class RunFiles:
    """The files of one run: checkpoint records and scores, the leaderboard, the best fields of each new
    ``trainer_state.json``, and keep_top_k's rotation (``save_total_limit`` is the user's, given back
    to the Trainer at the end)."""

    def __init__(self, output_dir: str, run: RunTracker, *, task: Any, save_scores: bool, keep_top_k: int | None,
                 save_total_limit: Callable[[], int | None]) -> None:
        self.output_dir = Path(output_dir)
        self._run, self._task = run, task
        self._save_scores, self._keep_top_k = save_scores, keep_top_k
        self._save_total_limit = save_total_limit

    def checkpoint(self, pending: PendingEvaluation) -> None:
        """The evaluated checkpoint's own files (record, scores, tuned threshold), then rotation."""
        threshold = pending.scores.threshold
        write_checkpoint_files(
            self.output_dir / pending.checkpoint, pending.record, pending.outputs, pending.scores.predictions,
            save_scores=self._save_scores, threshold=None if threshold is None else self._task.threshold_config(threshold),
        )
        self.rotate()

    def leaderboard_and_best(self, state: Any, checkpoint: str) -> None:
        """The leaderboard, and the business-best in the new checkpoint's ``trainer_state.json`` (what
        ``resume_from_checkpoint`` reads)."""
        self.leaderboard()
        write_best_into_trainer_state(
            self.output_dir / checkpoint, best_metric=state.best_metric, best_global_step=state.best_global_step,
            best_model_checkpoint=state.best_model_checkpoint,
        )

    def leaderboard(self) -> None:
        payload = self._run.leaderboard()
        if payload is not None:
            write_leaderboard(self.output_dir, payload)

    def rotate(self) -> None:
        """keep_top_k: delete the oldest checkpoints beyond save_total_limit, never the newest or the top k."""
        if self._keep_top_k is None:
            return
        folders = [p.name for p in checkpoint_folders(self.output_dir)]
        for name in self._run.folders_to_rotate(folders, self._save_total_limit()):
            logger.info("keep_top_k: deleting %s (not among the %d best)", name, self._keep_top_k)
            shutil.rmtree(self.output_dir / name, ignore_errors=True)

    def share_existing(self) -> None:
        """COLLECTIVE: which recorded checkpoints still exist, read on the main process, shared."""
        exists = existing_checkpoints(self.output_dir, self._run.records) if distributed.is_main() else None
        self._run.exists = distributed.broadcast_object(exists)
