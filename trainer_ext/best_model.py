"""The end of training: what happens to the business-best checkpoint once the run is over.

Called by the callback's ``on_train_end`` after the final selection: warn when no checkpoint met the
constraints, load the best weights when the Trainer did not (through the bridge, which knows sharded
engines), put a tuned threshold into the model's config, say in the log what the model holds, send the
chosen confusion matrix to the trackers, write the report, and make ``trainer.save_model`` /
``create_model_card`` / ``push_to_hub`` record how the checkpoint was chosen (only when the model holds
those weights: a card never claims weights the model does not have).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from . import distributed
from .errors import TrainerExtWarning
from .provenance import write_provenance
from .render import end_line
from .thresholds import CONFIG_KEY
from .tracker import RunTracker
from .trainer_bridge import TrainerBridge, log_confusion_matrix, wrap_create_model_card

logger = logging.getLogger(__name__)

__all__ = ["warn_if_infeasible", "load_best", "log_chosen_confusion_matrix", "sign_saved_models", "write_report_if_possible"]


def warn_if_infeasible(run: RunTracker) -> None:
    best, objective = run.best, run.objective
    if best is not None and not best.feasible:
        warnings.warn(
            f"BestCheckpointCallback: no checkpoint met {[str(c) for c in objective.constraints]}; "
            f"{best.checkpoint} was chosen by on_infeasible={objective.on_infeasible!r}. {run.selection.reason}",
            TrainerExtWarning,
            stacklevel=4,
        )


def load_best(
    host: TrainerBridge, run: RunTracker, args: Any, state: Any, model: Any, *, load_best_at_end: bool,
    recorded_late: bool, task: Any,
) -> bool:
    """Load the business-best weights when the Trainer did not; return whether the model holds them.
    ``recorded_late``: the Trainer loaded its best before this hook, without the checkpoint recorded just now."""
    best = state.best_model_checkpoint
    wanted = (load_best_at_end and not args.load_best_model_at_end) or (recorded_late and args.load_best_model_at_end)
    holds_best = bool(best) and args.load_best_model_at_end
    if best and wanted:
        if os.path.isdir(best):
            host.load_best(model, best)
            holds_best = True
        else:
            holds_best = False
            warnings.warn(
                f"BestCheckpointCallback: the best checkpoint {best} is gone; the model keeps its last weights.",
                TrainerExtWarning,
                stacklevel=4,
            )
    record = run.records.get(os.path.basename(best)) if best else None
    if model is not None and record is not None and record.decision_threshold is not None and hasattr(model, "config"):
        setattr(model.config, CONFIG_KEY, task.threshold_config(record.decision_threshold))
    if best and state.is_world_process_zero and run.best is not None:
        logger.info("%s", end_line(run.objective.metric, run.best, holds_best, args.metric_for_best_model))
    return holds_best


def log_chosen_confusion_matrix(host: TrainerBridge, run: RunTracker, args: Any, name: str) -> None:
    """Main process: the chosen checkpoint's confusion matrix to the trackers that have a place for it."""
    best = run.best
    record = run.records.get(best.checkpoint) if best is not None else None
    if record is not None and record.confusion_matrix:
        log_confusion_matrix(
            host.handler, record.confusion_matrix, record.labels, step=record.global_step,
            checkpoint=record.checkpoint, name=name, args=args, task=record.task,
        )


def sign_saved_models(host: TrainerBridge, run: RunTracker, args: Any) -> None:
    """From now on ``trainer.save_model()`` and ``create_model_card`` (and ``push_to_hub``, which calls it)
    also write how the model was chosen."""
    payload = run.leaderboard()
    if payload is None or not payload.get("best_checkpoint"):
        return
    best = run.records.get(payload["best_checkpoint"])
    held_out = best.eval_set if best is not None else {}

    def write(output_dir: str) -> None:
        if distributed.is_main():
            write_provenance(output_dir, payload, held_out)

    host.after_save_model(write, args.output_dir)
    # create_model_card rewrites README.md from scratch: ours goes over it.
    wrap_create_model_card(host.trainer, write)


def write_report_if_possible(output_dir: str) -> None:
    """Main process: the report of ``trainer-ext report``, when matplotlib is installed."""
    try:
        from .report import write_report

        path = write_report(output_dir)
    except ImportError:
        logger.info("No report figures: matplotlib is not installed (pip install 'trainer-ext[plot]').")
    except Exception as exc:  # a report must never fail a finished training run
        warnings.warn(f"BestCheckpointCallback: could not write the report: {exc}", TrainerExtWarning, stacklevel=3)
    else:
        logger.info("Report written to %s", path)
