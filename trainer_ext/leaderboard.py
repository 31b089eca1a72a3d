"""Temporary, removed when callback.py moves to the new modules: the names the callback (and the
tracker and held-out modules written with it) import from here, re-exported from their homes
(:mod:`trainer_ext.records`, :mod:`trainer_ext.run_folder`, :mod:`trainer_ext.selection`)."""

# temporary, removed when callback.py moves to the new modules
from .records import (
    build_record,
    save_set_scores,
    scores_filename,
    write_best_into_trainer_state,
    write_leaderboard,
    write_threshold_into_config,
)
from .run_folder import checkpoint_folders, existing_checkpoints, read_records
from .selection import candidates_of, compare_predictions

__all__ = [
    "build_record",
    "candidates_of",
    "checkpoint_folders",
    "compare_predictions",
    "existing_checkpoints",
    "read_records",
    "save_set_scores",
    "scores_filename",
    "write_best_into_trainer_state",
    "write_leaderboard",
    "write_threshold_into_config",
]
