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
import warnings
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from . import distributed
from .best_model import load_best, log_chosen_confusion_matrix, sign_saved_models, warn_if_infeasible, write_report_if_possible
from .config import CallbackConfig
from .errors import TrainerExtWarning
from .holdout import HeldOutSets
from .objectives import Objective
from .records import build_record, checkpoint_name, scores_filename
from .render import decision_line, early_stop_line
from .run_files import RunFiles, on_main
from .scoring import Metric
from .tracker import PendingEvaluation, RunTracker, read_resumed_run
from .trainer_bridge import TrainerBridge, best_strategy, point_state_at, saves_nothing

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
        self._files: RunFiles | None = None

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
        self._run, self._files = self._new_run(args)
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
        failure = on_main(state, lambda: self._files.checkpoint(pending))
        self._files.share_existing()  # collective: every rank, even after a failure
        failure = failure or on_main(state, lambda: self._files.leaderboard_and_best(state, pending.checkpoint))
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
        warn_if_infeasible(self._run)
        failure = on_main(state, self._files.rotate)
        self._files.share_existing()
        failure = failure or on_main(state, self._files.leaderboard)
        distributed.raise_if_any(failure, "writing the leaderboard at the end of training", on="the main process")
        self._finish(args, state, model, recorded_late)

    def _finish(self, args, state, model, recorded_late: bool) -> None:
        """The business-best after training (see :mod:`trainer_ext.best_model`)."""
        holds_best = load_best(
            self._host, self._run, args, state, model, load_best_at_end=self.config.load_best_at_end,
            recorded_late=recorded_late, task=self._held_out.task,
        )
        if state.is_world_process_zero:
            log_chosen_confusion_matrix(self._host, self._run, args, self.config.name)
            write_report_if_possible(args.output_dir)
        if holds_best:
            sign_saved_models(self._host, self._run, args)
        distributed.barrier()

    # ---- steps of the hooks -------------------------------------------------------------------

    def _new_run(self, args) -> tuple[RunTracker, RunFiles]:
        held_out, config = self._held_out, self.config
        run = RunTracker(
            self.objective, compare=held_out.compare, keep_top_k=config.keep_top_k, task=held_out.task,
            labels={k: h.labels for k, h in held_out.sets.items()}, objective_set=held_out.target,
        )
        files = RunFiles(
            args.output_dir, run, task=held_out.task, save_scores=config.save_scores, keep_top_k=config.keep_top_k,
            save_total_limit=lambda: self._host.save_total_limit,
        )
        return run, files

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
                        logger.info("%s", early_stop_line(
                            step, stale, self.objective.metric, config.early_stopping_threshold, self._run.best))
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
        failure = on_main(state, self._files.leaderboard)
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
            selection = self._run.selection
            logger.info("%s", decision_line(self.objective.metric, ranked, previous, self._run.best, selection.reason))

    def _apply_best(self, args, state) -> None:
        best = self._run.best
        if best is not None:
            point_state_at(args, state, best.global_step, best.objective_value, best.checkpoint)

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
            self._files.share_existing()
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

    def _trainer_metric_is_ours(self, args) -> str | None:
        wanted = args.metric_for_best_model
        if not wanted:
            return None
        key = wanted if wanted.startswith("eval_") else f"eval_{wanted}"
        return key if key == f"eval_{self.config.name}_{self.objective.metric}" else None
