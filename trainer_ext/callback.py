"""``BestCheckpointCallback``: score every saved checkpoint on a held-out set, make the business-best one
the Trainer's best. The callback orchestrates; the work is elsewhere:

* :mod:`trainer_ext.config` checks the arguments; :mod:`trainer_ext.holdout` prepares the held-out sets
  and evaluates the in-memory model on them; :mod:`trainer_ext.tracker` holds the run's records and
  selection; :mod:`trainer_ext.records` writes the files; :mod:`trainer_ext.trainer_bridge` holds every
  contact with the Trainer beyond the callback contract.

How it fits the Trainer's order of events at a step that saves (``transformers/trainer.py``): the
Trainer runs ``on_step_end`` (or ``on_epoch_end``) after ``DefaultFlowCallback`` has set
``control.should_save``, then evaluates (``on_evaluate``, then its own best-metric comparison), then
saves the folder, rotates old folders (``save_total_limit``, keeping ``state.best_model_checkpoint``),
then calls ``on_save``. So:

1. ``on_step_end`` / ``on_epoch_end``: when the Trainer is about to save, evaluate the in-memory model,
   rank every checkpoint including this one, and point ``state.best_*`` at the business-best BEFORE the
   save, so that rotation keeps that folder. If the Trainer also evaluates with its own
   ``metric_for_best_model``, its comparison is gated to agree (see :mod:`trainer_ext.trainer_bridge`).
2. ``on_save`` (the folder exists, rotation is done): the main process writes the record, the scores,
   the leaderboard and the best fields of the new folder's ``trainer_state.json``; every rank waits.
3. ``on_train_end``: final selection, and the business-best weights loaded when the Trainer does not
   load them itself (``load_best_model_at_end=False``).

The run control of issue 13 (``eval_steps``, ``save``, ``early_stopping_*``) decides in the same
``on_step_end`` / ``on_epoch_end``: with ``eval_steps=N`` the callback evaluates the in-memory model at
every N-th optimizer step and at the last one (``state.max_steps``), whatever the Trainer's strategies;
with ``save="improved"`` / ``"top_k"`` it owns ``control.should_save`` (True exactly at the evaluations
that deserve a checkpoint, False otherwise), and the Trainer then saves and rotates as usual. An
evaluation without a checkpoint is an unsaved entry (``saved: false`` in the leaderboard, every metric
kept). **Rule for unsaved bests:** only an evaluation whose checkpoint is written can be the best
(``best_model_checkpoint``); under ``save="all"`` with ``eval_steps`` not aligned with the Trainer's
saves, an evaluation at a step the Trainer does not save is listed but never chosen, however good (the
Trainer's saves at other steps are evaluated as before). Under ``"improved"`` every new best is saved,
so the choice equals the best of all evaluations. Early stopping counts the evaluations since the
business-best last improved by more than ``early_stopping_threshold`` (an unsaved one never improves it).
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from . import distributed
from .config import CallbackConfig
from .errors import TrainerExtWarning
from .holdout import HeldOutSets
from .objectives import Objective
from .provenance import write_provenance
from .records import (
    build_record,
    checkpoint_name,
    scores_filename,
    write_best_into_trainer_state,
    write_checkpoint_files,
    write_leaderboard,
)
from .run_folder import checkpoint_folders, existing_checkpoints
from .scoring import Metric
from .tasks import SingleLabel
from .thresholds import CONFIG_KEY
from .tracker import PendingEvaluation, RunTracker, read_resumed_run
from .trainer_bridge import (
    TrainerBridge,
    best_strategy,
    log_confusion_matrix,
    point_state_at,
    saves_nothing,
    wrap_create_model_card,
)

logger = logging.getLogger(__name__)

__all__ = ["BestCheckpointCallback"]


class BestCheckpointCallback(TrainerCallback):
    """Evaluate every saved checkpoint on a held-out set and make the business-best one the Trainer's best.

    Args:
        eval_dataset: the held-out set: a ``datasets.Dataset`` or a torch ``Dataset`` of dicts, with a
            ``labels`` (or ``label``) column of class ids (or class names). Either model-ready features
            (``input_ids``, ``attention_mask``, ...) or raw text in a ``text`` column: raw text is
            tokenized once, at the start of training, with the Trainer's ``processing_class``
            (truncation at its ``model_max_length``, no padding). Several sets as a dict
            ``{"reviews_2024": a, "reviews_2025": b}``: keys become ``<set>_<key>``, and unprefixed
            keys combine the sets (see ``Objective(across_sets=...)``).
        objective: a metric key (``"recall_negative"``) or an :class:`~trainer_ext.Objective`.
        data_collator: turns a list of features into a padded batch. Default: dynamic padding with
            the Trainer's ``processing_class`` (``DataCollatorWithPadding``), else transformers'
            ``default_data_collator``.
        batch_size: rows per batch for the longest examples; shorter examples are packed many to a
            batch under the same token budget. Default: ``args.per_device_eval_batch_size``.
        name: prefix of the logged keys (``holdout_recall_negative``).
        load_best_at_end: at the end of training load the business-best weights into ``trainer.model``
            when the Trainer will not (``load_best_model_at_end=False``).
        label_names: class names in id order; default ``model.config.id2label``.
        save_scores: write per-example labels, predictions and probabilities next to each record.
        keep_top_k: protect the k best checkpoints by the objective from rotation (besides the newest,
            kept for resuming). The callback then rotates instead of the Trainer, with the same
            ``save_total_limit``.
        custom_metrics: :class:`~trainer_ext.Metric` s computed on each set's gathered predictions.
        evaluate_modules: ``evaluate`` modules (``evaluate.load(...)``, ``evaluate.combine([...])``),
            computed on the gathered predictions; their numeric outputs become metric keys (give the
            direction in the Objective: ``Objective("matthews_correlation", greater_is_better=True)``).
        text_column: the column of raw text in the held-out set (default ``"text"``), tokenized with the
            Trainer's ``processing_class`` when the set has no ``input_ids``.
        label_column: the column of the gold labels (default: ``labels``, else ``label``).
        task: what the model's head does; default: read from the model (``config.problem_type``, the
            model class). A name (``"single_label"``, ...) or a task object overrides it.
        eval_steps: evaluate every ``eval_steps`` optimizer steps and at the last step, whatever the
            Trainer's ``save_strategy`` / ``eval_strategy`` (also ``"no"``). Default None: evaluate at
            every save of the Trainer.
        save: ``"all"`` (default: checkpoints follow the Trainer's schedule), ``"improved"`` (save exactly
            at the evaluations that give a new business-best, under the objective's constraints,
            ``min_delta`` and significance), ``"top_k"`` (save the evaluations that enter the
            ``keep_top_k`` best). ``save_total_limit`` still bounds the folders and never deletes the best.
        early_stopping_patience: stop training (``control.should_training_stop``) after this many
            evaluations in a row without improving the business-best; default None: never.
        early_stopping_threshold: the improvement must exceed this (absolute, objective's units).

    The held-out set may be the Trainer's own ``eval_dataset``: columns the model's ``forward`` does not
    accept (a ``sentence`` text column, ids) are dropped exactly as the Trainer's
    ``remove_unused_columns`` drops them; the record's ``eval_set.columns`` lists the columns used.

    Metric keys (class names as slugs, ``NEGATIVE`` -> ``negative``): see :mod:`trainer_ext.metrics`.
    Files: ``<checkpoint>/checkpoint_metrics.json``, ``<output_dir>/checkpoint_leaderboard.json`` and
    ``.md`` (see :mod:`trainer_ext.records`). Under several processes every rank evaluates its share
    and reaches the same decision; only the global main process writes.
    """

    def __init__(
        self,
        eval_dataset: Any,
        objective: str | Objective,
        *,
        data_collator: Any = None,
        batch_size: int | None = None,
        name: str = "holdout",
        load_best_at_end: bool = True,
        label_names: Sequence[str] | None = None,
        save_scores: bool = True,
        keep_top_k: int | None = None,
        custom_metrics: Sequence[Metric] = (),
        evaluate_modules: Sequence[Any] = (),
        text_column: str = "text",
        label_column: str | None = None,
        task: Any = None,
        eval_steps: int | None = None,
        save: str = "all",
        early_stopping_patience: int | None = None,
        early_stopping_threshold: float = 0.0,
    ) -> None:
        self.config = CallbackConfig.from_arguments(
            eval_dataset, objective, data_collator=data_collator, batch_size=batch_size, name=name,
            load_best_at_end=load_best_at_end, label_names=label_names, save_scores=save_scores,
            keep_top_k=keep_top_k, custom_metrics=custom_metrics, evaluate_modules=evaluate_modules,
            text_column=text_column, label_column=label_column, task=task, eval_steps=eval_steps, save=save,
            early_stopping_patience=early_stopping_patience, early_stopping_threshold=early_stopping_threshold,
        )
        self.objective = self.config.objective
        self._held_out: HeldOutSets | None = None  # made in on_train_begin
        self._run = RunTracker(self.objective, keep_top_k=keep_top_k)
        self._host: TrainerBridge | None = None

    @property
    def leaderboard(self) -> dict[str, Any] | None:
        """The current leaderboard (the content of checkpoint_leaderboard.json), or None before any save."""
        return self._run.leaderboard()

    @property
    def metric_keys(self) -> list[str]:
        """Every key the callback computes for this model (known after training starts)."""
        return list(self._held_out.available) if self._held_out is not None else []

    # ---- Trainer hooks ------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        distributed.check_launch(args.world_size)
        self._host = TrainerBridge(self)
        self._held_out = HeldOutSets.prepare(self.config, model, processing_class)
        held_out = self._held_out
        self._run = RunTracker(
            self.objective, compare=held_out.compare, keep_top_k=self.config.keep_top_k,
            labels={k: h.labels for k, h in held_out.sets.items()} if isinstance(held_out.task, SingleLabel) else None,
            slugs=held_out.task.slugs,
            objective_set=held_out.target,
        )
        if self.config.keep_top_k is not None:
            self._host.take_over_rotation(args)  # the Trainer keeps the newest and one best; we keep k
        if state.global_step > 0:
            self._resume(args, state)
        if saves_nothing(args) and self.config.save == "all":
            warnings.warn(
                "BestCheckpointCallback: save_strategy='no' saves no checkpoint, so there is nothing to evaluate "
                "or choose. Use save_strategy='epoch' or 'steps'.",
                TrainerExtWarning,
                stacklevel=2,
            )

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._host.gate.open(state)
        self._record_resumed_checkpoint(args, state, control, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._maybe_evaluate(args, state, control, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._maybe_evaluate(args, state, control, model)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # metric_for_best_model may name our logged key: give the Trainer (and EarlyStoppingCallback) its value.
        ours = self._trainer_metric_is_ours(args)
        if metrics is not None and ours is not None:
            metrics[ours] = self._run.value_for_trainer()

    def on_save(self, args, state, control, model=None, **kwargs):
        self._host.gate.open(state)
        if not self._run.is_pending(checkpoint_name(state.global_step)):
            # A save we did not see coming (e.g. another callback asked for it): evaluate now.
            self._run.unsaved.pop(checkpoint_name(state.global_step), None)  # saved after all
            self._evaluate_and_rank(args, state, control, model)
        pending = self._run.commit()
        folder = Path(args.output_dir) / pending.checkpoint
        failure = _on_main(state, lambda: self._write_checkpoint_files(args, folder, pending))
        self._share_existing(args)  # collective: every rank, even after a failure
        failure = failure or _on_main(state, lambda: self._write_leaderboard_and_best(args, state, folder))
        distributed.raise_if_any(failure, f"writing the records of {pending.checkpoint}", on="the main process")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._host.gate.open(state)
        recorded_late = self._record_resumed_checkpoint(args, state, control, model)
        self._set_aside_unsaved(args, state, now=True)
        self._run.forget_unsaved(state.global_step)
        self._run.pending = None
        self._host.give_back_rotation(args)
        if not self._run.records:
            return
        self._run.select(final=True)
        self._apply_best(args, state)
        self._warn_if_infeasible()
        failure = _on_main(state, lambda: self._rotate(args))
        self._share_existing(args)
        failure = failure or _on_main(state, lambda: self._write_leaderboard(args))
        distributed.raise_if_any(failure, "writing the leaderboard at the end of training", on="the main process")
        holds_best = self._load_best(args, state, model, recorded_late)
        if state.is_world_process_zero:
            self._log_chosen_confusion_matrix(args)
            _write_report_if_possible(args.output_dir)
        if holds_best:
            self._sign_saved_models(args)
        distributed.barrier()

    # ---- steps of the hooks -------------------------------------------------------------------

    def _maybe_evaluate(self, args, state, control, model) -> None:
        self._set_aside_unsaved(args, state)
        self._run.forget_unsaved(state.global_step)
        will_save = control.should_save or (best_strategy(args) and control.should_evaluate)
        checkpoint = checkpoint_name(state.global_step)
        if not self._controls_run():
            if will_save and not self._run.is_pending(checkpoint):
                self._evaluate_and_rank(args, state, control, model)  # today's behaviour, unchanged
        else:
            self._run_control(args, state, control, model, will_save)
        if control.should_evaluate and args.metric_for_best_model is not None:
            best = self._run.best
            new_best = best is not None and best.checkpoint == checkpoint and self._run.is_pending(checkpoint)
            self._host.gate.close(args, state, new_best=new_best)

    def _run_control(self, args, state, control, model, will_save: bool) -> None:
        """Issue 13: evaluate on our schedule, ask for the saves that can win, stop when stale."""
        config, step = self.config, state.global_step
        checkpoint = checkpoint_name(step)
        if config.eval_steps is None:
            due = will_save
        else:
            due = step % config.eval_steps == 0 or step >= state.max_steps
        if due and not self._run.evaluated(step):
            previous = self._run.best
            self._evaluate_and_rank(args, state, control, model)
            # save="all": the Trainer may still save this step (at on_epoch_end); an evaluation it did not
            # save is set aside at the next hook.
            if config.save != "all" and not self._run.deserves_save(checkpoint, config.save):
                self._set_aside_unsaved(args, state, now=True)
            if config.early_stopping_patience is not None:
                improved = self._run.improves(checkpoint, previous, config.early_stopping_threshold)
                stale = self._run.count_for_patience(improved)
                if stale >= config.early_stopping_patience:
                    control.should_training_stop = True
                    if state.is_world_process_zero:
                        best = self._run.best
                        logger.info(
                            "Early stopping at step %d: %d evaluations in a row without improving %s by more than %g; "
                            "best checkpoint %s (%s = %s).", step, stale, self.objective.metric,
                            config.early_stopping_threshold, None if best is None else best.checkpoint,
                            self.objective.metric, None if best is None else best.objective_value,
                        )
        if config.save != "all":
            control.should_save = self._run.is_pending(checkpoint)

    def _set_aside_unsaved(self, args, state, *, now: bool = False) -> None:
        """Run control: the pending evaluation (of this step when ``now``, else of an earlier step the
        Trainer did not save) becomes an unsaved leaderboard entry."""
        pending = self._run.pending
        if not self._controls_run() or pending is None or (not now and pending.global_step == state.global_step):
            return
        self._run.set_aside()
        self._apply_best(args, state)
        failure = _on_main(state, lambda: self._write_leaderboard(args))
        distributed.raise_if_any(failure, f"writing the leaderboard after {pending.checkpoint}", on="the main process")

    def _controls_run(self) -> bool:
        config = self.config
        return config.eval_steps is not None or config.save != "all" or config.early_stopping_patience is not None

    def _evaluate_and_rank(self, args, state, control, model, *, log: bool = True) -> None:
        if self._held_out is None:
            raise RuntimeError("BestCheckpointCallback: on_train_begin did not run; is the callback attached to the Trainer?")
        checkpoint = checkpoint_name(state.global_step)
        previous = self._run.best
        result = self._held_out.evaluate(model, args, checkpoint)
        ranked = self._run.propose(checkpoint, state.global_step, result.scores, result.scores.predictions)
        record = build_record(
            checkpoint=checkpoint, global_step=state.global_step, epoch=state.epoch, labels=self._held_out.labels,
            name=self.config.name, held_out=self._held_out.fingerprints, scores=result.scores,
            objective=self.objective, evaluation=result.info, ranked=ranked, task=self._held_out.task.name,
            columns={k: h.columns for k, h in self._held_out.sets.items()},
        )
        self._run.hold(PendingEvaluation(record, result.scores, result.outputs))
        self._apply_best(args, state)
        if log:
            logs = {f"{self.config.name}_{k}": float(v) for k, v in result.scores.metrics.items()}
            logs[f"{self.config.name}_objective"] = float("nan") if ranked.objective_value is None else float(ranked.objective_value)
            self._host.log(args, state, control, logs)
        if state.is_world_process_zero:
            logger.info("%s", _decision_line(self.objective.metric, ranked, previous, self._run.best, self._run.selection))

    def _apply_best(self, args, state) -> None:
        best = self._run.best
        if best is not None:
            point_state_at(args, state, best.global_step, best.objective_value, best.checkpoint)

    def _write_checkpoint_files(self, args, folder: Path, pending: PendingEvaluation) -> None:
        threshold = pending.scores.threshold
        write_checkpoint_files(
            folder, pending.record, pending.outputs, pending.scores.predictions, save_scores=self.config.save_scores,
            threshold=None if threshold is None else self._held_out.task.threshold_config(threshold),
        )
        self._rotate(args)

    def _write_leaderboard_and_best(self, args, state, folder: Path) -> None:
        self._write_leaderboard(args)
        write_best_into_trainer_state(
            folder, best_metric=state.best_metric, best_global_step=state.best_global_step,
            best_model_checkpoint=state.best_model_checkpoint,
        )

    def _write_leaderboard(self, args) -> None:
        payload = self._run.leaderboard()
        if payload is not None:
            write_leaderboard(args.output_dir, payload)

    def _rotate(self, args) -> None:
        """keep_top_k: delete the oldest checkpoints beyond save_total_limit, never the newest or the top k."""
        if self.config.keep_top_k is None:
            return
        folders = [p.name for p in checkpoint_folders(args.output_dir)]
        for name in self._run.folders_to_rotate(folders, self._host.save_total_limit):
            logger.info("keep_top_k: deleting %s (not among the %d best)", name, self.config.keep_top_k)
            shutil.rmtree(Path(args.output_dir) / name, ignore_errors=True)

    def _share_existing(self, args) -> None:
        """Which recorded checkpoints still exist: read on the main process, shared with every rank."""
        exists = existing_checkpoints(args.output_dir, self._run.records) if distributed.is_main() else None
        self._run.exists = distributed.broadcast_object(exists)

    def _resume(self, args, state) -> None:
        """Continue the leaderboard of the run being resumed (read on the main process, shared)."""
        resumed = None
        if distributed.is_main():
            needed = [scores_filename(s) for s in self.config.eval_datasets] if self.config.save_scores else []
            resumed = read_resumed_run(
                args.output_dir, global_step=state.global_step, checkpoint=checkpoint_name(state.global_step),
                objective=self.objective, set_names=self.config.set_names, needed_files=needed,
            )
        self._run.resume(distributed.broadcast_object(resumed))
        self._run.replay_patience(self.config.early_stopping_threshold)
        if self._run.records:
            self._apply_best(args, state)
            self._share_existing(args)
            logger.info("Resumed %d checkpoint record(s); best so far %s", len(self._run.records), self._run.selection.best_checkpoint)

    def _record_resumed_checkpoint(self, args, state, control, model) -> bool:
        """Evaluate and record the checkpoint training resumed from when it has no complete record, at the
        first step (or at the end when no step is left): the weights then in the model are that
        checkpoint's, also under DeepSpeed / FSDP, which load them after on_train_begin."""
        checkpoint, self._run.unrecorded = self._run.unrecorded, None
        if checkpoint is None or checkpoint != checkpoint_name(state.global_step):
            return False
        logger.info("Resumed from %s, which has no complete record: evaluating it now", checkpoint)
        self._evaluate_and_rank(args, state, control, model, log=False)  # its log entry is in log_history already
        self.on_save(args, state, control, model=model)
        return True

    def _warn_if_infeasible(self) -> None:
        best = self._run.best
        if best is not None and not best.feasible:
            warnings.warn(
                f"BestCheckpointCallback: no checkpoint met {[str(c) for c in self.objective.constraints]}; "
                f"{best.checkpoint} was chosen by on_infeasible={self.objective.on_infeasible!r}. "
                f"{self._run.selection.reason}",
                TrainerExtWarning,
                stacklevel=3,
            )

    def _load_best(self, args, state, model, recorded_late: bool) -> bool:
        """Load the business-best weights when the Trainer did not; return whether the model holds them."""
        best = state.best_model_checkpoint
        # recorded_late: the Trainer loaded its best before this hook, without the checkpoint recorded just now.
        wanted = (self.config.load_best_at_end and not args.load_best_model_at_end) or (
            recorded_late and args.load_best_model_at_end
        )
        holds_best = bool(best) and args.load_best_model_at_end
        if best and wanted:
            if os.path.isdir(best):
                self._host.load_best(model, best)
                holds_best = True
            else:
                holds_best = False
                warnings.warn(
                    f"BestCheckpointCallback: the best checkpoint {best} is gone; the model keeps its last weights.",
                    TrainerExtWarning,
                    stacklevel=3,
                )
        record = self._run.records.get(os.path.basename(best)) if best else None
        if model is not None and record is not None and record.decision_threshold is not None and hasattr(model, "config"):
            setattr(model.config, CONFIG_KEY, self._held_out.task.threshold_config(record.decision_threshold))
        if best and state.is_world_process_zero:
            logger.info("%s", _end_line(self.objective.metric, self._run.best, holds_best, args.metric_for_best_model))
        return holds_best

    def _log_chosen_confusion_matrix(self, args) -> None:
        """The chosen checkpoint's confusion matrix to the trackers that have a place for it."""
        best = self._run.best
        record = self._run.records.get(best.checkpoint) if best is not None else None
        if record is not None and record.confusion_matrix:
            log_confusion_matrix(
                self._host.handler, record.confusion_matrix, record.labels, step=record.global_step,
                checkpoint=record.checkpoint, name=self.config.name, args=args,
            )

    def _sign_saved_models(self, args) -> None:
        """After training, ``trainer.save_model()`` also writes how the model was chosen (provenance)."""
        payload = self._run.leaderboard()
        if payload is None or not payload.get("best_checkpoint"):
            return
        best = self._run.records.get(payload["best_checkpoint"])
        held_out = best.eval_set if best is not None else {}

        def write(output_dir: str) -> None:
            if distributed.is_main():
                write_provenance(output_dir, payload, held_out)

        self._host.after_save_model(write, args.output_dir)
        # create_model_card (and push_to_hub, which calls it) rewrite README.md from scratch: ours goes over it.
        wrap_create_model_card(self._host.trainer, write)

    def _trainer_metric_is_ours(self, args) -> str | None:
        wanted = args.metric_for_best_model
        if not wanted:
            return None
        key = wanted if wanted.startswith("eval_") else f"eval_{wanted}"
        return key if key == f"eval_{self.config.name}_{self.objective.metric}" else None


# ---- small helpers -----------------------------------------------------------------------------


def _on_main(state, write) -> Exception | None:
    """Run ``write`` on the global main process; return its exception instead of raising it, so that the
    caller can share the failure with every rank first (``distributed.raise_if_any``)."""
    if not state.is_world_process_zero:
        return None
    try:
        write()
    except Exception as exc:  # noqa: BLE001 - re-raised by raise_if_any on this rank
        return exc
    return None


def _decision_line(metric: str, ranked, previous, best, selection) -> str:
    """One line per evaluation: ``checkpoint-126: recall_negative = 0.8388 (new best; previous checkpoint-63
    0.8099)`` or ``... (best stays checkpoint-63, 0.8388: <reason>)``."""
    value = "nan" if ranked.objective_value is None else f"{ranked.objective_value:.4f}"
    head = f"{ranked.checkpoint}: {metric} = {value}"
    if best is not None and best.checkpoint == ranked.checkpoint:
        if previous is None or previous.checkpoint == ranked.checkpoint:
            return f"{head} (new best; first evaluated)"
        before = "nan" if previous.objective_value is None else f"{previous.objective_value:.4f}"
        return f"{head} (new best; previous {previous.checkpoint} {before})"
    if best is None:
        return f"{head} (no checkpoint has a finite {metric} yet)"
    return f"{head} (best stays {best.checkpoint}, {best.objective_value:.4f}: {selection.reason})"


def _end_line(metric: str, best, holds_best: bool, trainer_metric: str | None) -> str:
    """The last decision line: which checkpoint the model holds, and what the Trainer's own "score" meant."""
    value = "nan" if best.objective_value is None else f"{best.objective_value:.4f}"
    if holds_best:
        line = f"Business-best checkpoint loaded: {best.checkpoint} ({metric} = {value})."
    else:
        line = (f"Business-best checkpoint: {best.checkpoint} ({metric} = {value}); the model keeps its last weights "
                f"(load_best_at_end=False).")
    wanted = (trainer_metric or "").removeprefix("eval_")
    if wanted and wanted != metric and not wanted.endswith(f"_{metric}"):
        line += (f" The Trainer's 'Loading best model from ... (score: ...)' line reports the business objective "
                 f"{metric}, not its metric_for_best_model {wanted!r}.")
    return line


def _write_report_if_possible(output_dir) -> None:
    """The report of ``trainer-ext report`` at the end of training, when matplotlib is installed."""
    try:
        from .report import write_report

        path = write_report(output_dir)
    except ImportError:
        logger.info("No report figures: matplotlib is not installed (pip install 'trainer-ext[plot]').")
    except Exception as exc:  # a report must never fail a finished training run
        warnings.warn(f"BestCheckpointCallback: could not write the report: {exc}", TrainerExtWarning, stacklevel=2)
    else:
        logger.info("Report written to %s", path)
