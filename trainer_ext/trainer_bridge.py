"""Every contact trainer_ext has with the Trainer beyond the public callback contract, in one module.

The callback contract (hooks receive ``args, state, control, model, processing_class``) gives no handle
on the Trainer and no way to log or load. Each contact below is here, and only here, for a reason:

1. **The Trainer and its CallbackHandler, found on the call stack** (``sys._getframe``) in
   ``on_train_begin``, which the Trainer's training loop calls through its handler. The handler's
   ``on_log`` sends our held-out metrics to every ``report_to`` integration exactly like the Trainer's
   own logs; the Trainer is needed for 3, 4 and the model card.
2. **The best-metric gate.** When the Trainer evaluates with its own ``metric_for_best_model``, its
   ``_determine_best_metric`` compares ``metrics[...]`` with ``state.best_metric`` and would move
   ``best_global_step`` (and so rotation's protected folder) to whatever its metric prefers. For that
   one comparison we set ``state.best_metric`` to ``-inf``/``+inf`` (it succeeds) when this checkpoint
   is the new business-best, NaN (it fails) otherwise; the true fields come back at the next hook.
   ``EarlyStoppingCallback`` reads the same field, so it counts evaluations without business
   improvement.
3. **Sharded best-model loading.** Under DeepSpeed / FSDP only ``Trainer._load_best_model`` knows how to
   fill sharded parameters; we call it when the Trainer will not load the best itself
   (``load_best_model_at_end=False``). Otherwise weights are loaded with :func:`checkpoint_io.load_weights`,
   and with ``load_best_model_at_end=True`` the Trainer's own loader loads ``state.best_model_checkpoint``.
4. **Provenance after ``save_model``.** ``trainer.save_model()`` after training is wrapped so that the
   saved folder also says how its checkpoint was chosen.
5. **Rotation under ``keep_top_k``.** The Trainer's rotation keeps the newest checkpoint and one best;
   to keep the k best we set ``args.save_total_limit = None`` for the run and rotate ourselves with the
   user's limit, which is put back at the end of training.

6 and 7 (the model card, the trackers' confusion matrix) are described above their functions, at the
end of the module. Public ``TrainerState`` fields (``best_metric``, ``best_global_step``, ``best_model_checkpoint``) are set
through :func:`point_state_at` so that every write to them is in this module too.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from transformers.trainer_callback import CallbackHandler

from .errors import TrainerExtWarning

logger = logging.getLogger(__name__)

__all__ = [
    "TrainerBridge",
    "BestMetricGate",
    "point_state_at",
    "saves_nothing",
    "best_strategy",
    "wrap_create_model_card",
    "log_confusion_matrix",
]


def saves_nothing(args: Any) -> bool:
    return str(getattr(args.save_strategy, "value", args.save_strategy)) == "no"


def best_strategy(args: Any) -> bool:
    """``save_strategy="best"``: the Trainer saves only when its own metric improves."""
    return str(getattr(args.save_strategy, "value", args.save_strategy)) == "best"


def point_state_at(args: Any, state: Any, global_step: int, value: float | None, checkpoint: str) -> None:
    """Make ``checkpoint`` the Trainer's best: rotation keeps it, best-model loading loads it."""
    state.best_global_step = global_step
    state.best_metric = value
    state.best_model_checkpoint = os.path.join(args.output_dir, checkpoint)


class BestMetricGate:
    """Contact 2 of the module docstring: the Trainer's own best-metric comparison, made to agree."""

    def __init__(self) -> None:
        self._hidden: tuple[Any, Any, Any] | None = None

    def close(self, args: Any, state: Any, *, new_best: bool) -> None:
        """Before the Trainer's comparison at this step: succeed exactly when ``new_best``."""
        if self._hidden is None:
            self._hidden = (getattr(state, "best_global_step", None), state.best_metric, state.best_model_checkpoint)
        if new_best:
            state.best_metric = -math.inf if args.greater_is_better else math.inf
        else:
            state.best_metric = math.nan

    def open(self, state: Any) -> None:
        """Put the true best fields back (at the next hook)."""
        if self._hidden is not None:
            state.best_global_step, state.best_metric, state.best_model_checkpoint = self._hidden
            self._hidden = None


class TrainerBridge:
    """The running Trainer as trainer_ext reaches it. Made in ``on_train_begin`` (see the module docstring)."""

    def __init__(self, callback: Any) -> None:
        self.handler = _find_callback_handler(callback)
        self.trainer = _find_trainer()
        self.gate = BestMetricGate()
        self._user_save_total_limit: int | None = None
        self._took_rotation = False

    @property
    def sharded(self) -> bool:
        """DeepSpeed or FSDP: parameters are sharded and only the Trainer's loader fills them."""
        trainer = self.trainer
        return trainer is not None and bool(
            getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False)
        )

    # ---- contact 1: logging through the Trainer's callbacks -----------------------------------

    def log(self, args: Any, state: Any, control: Any, logs: Mapping[str, float]) -> None:
        """Append ``logs`` to ``state.log_history`` and send them to every ``report_to`` integration."""
        logs = dict(logs)
        if state.epoch is not None:
            logs["epoch"] = state.epoch
        state.log_history.append({**logs, "step": state.global_step})
        if self.handler is not None:
            # CallbackHandler.on_log clears control.should_log: hand it a copy, or the Trainer would skip
            # its own loss log at this step.
            self.handler.on_log(args, state, copy.copy(control), logs)

    # ---- contact 3: loading the best weights ---------------------------------------------------

    def load_best(self, model: Any, checkpoint_dir: str) -> None:
        """Load ``checkpoint_dir`` into ``model`` (the Trainer's loader under DeepSpeed / FSDP)."""
        if self.sharded:
            logger.info("Loading the business-best checkpoint %s with the Trainer's loader", checkpoint_dir)
            self.trainer._load_best_model()
            return
        from .checkpoint_io import load_weights

        logger.info("Loading the business-best checkpoint %s", checkpoint_dir)
        load_weights(model, checkpoint_dir)

    # ---- contact 4: provenance after save_model -------------------------------------------------

    def after_save_model(self, write: Callable[[str], None], default_dir: str) -> None:
        """From now on ``trainer.save_model(dir)`` also calls ``write(dir)`` (main process decides in ``write``)."""
        trainer = self.trainer
        if trainer is None:
            return
        original = getattr(trainer.save_model, "__trainer_ext_original__", trainer.save_model)

        def save_model(output_dir=None, _internal_call=False):
            original(output_dir, _internal_call)
            if not _internal_call:
                write(output_dir or default_dir)

        save_model.__trainer_ext_original__ = original  # type: ignore[attr-defined]
        trainer.save_model = save_model

    # ---- contact 5: rotation under keep_top_k ---------------------------------------------------

    def take_over_rotation(self, args: Any) -> None:
        self._user_save_total_limit, args.save_total_limit = args.save_total_limit, None
        self._took_rotation = True

    def give_back_rotation(self, args: Any) -> None:
        if self._took_rotation:
            args.save_total_limit = self._user_save_total_limit
            self._took_rotation = False

    @property
    def save_total_limit(self) -> int | None:
        """The user's ``save_total_limit`` while we rotate for the Trainer."""
        return self._user_save_total_limit


def _find_callback_handler(callback: Any) -> CallbackHandler | None:
    frame = sys._getframe(1)
    for _ in range(10):
        if frame is None:
            break
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, CallbackHandler) and callback in candidate.callbacks:
            return candidate
        frame = frame.f_back
    warnings.warn(
        "BestCheckpointCallback: could not find the Trainer's callback handler; held-out metrics go to "
        "state.log_history only, not to report_to integrations.",
        TrainerExtWarning,
        stacklevel=3,
    )
    return None


def _find_trainer() -> Any:
    from transformers import Trainer

    frame = sys._getframe(1)
    for _ in range(14):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer):
            return candidate
        frame = frame.f_back
    return None


# ---- model card and trackers ---------------------------------------------------------------------
#
# Two more contacts, both after training:
#
# 6. **The model card.** ``Trainer.create_model_card`` (which ``Trainer.push_to_hub`` calls before its
#    upload) rewrites ``<output_dir>/README.md`` from scratch, with its last evaluation's results. It is
#    replaced on the Trainer instance (:func:`wrap_create_model_card`) so that, after the original has
#    written its card, ours is written over it: the Trainer's metadata and text are kept, the
#    "How this checkpoint was chosen" section is added and the model-index results become the
#    business-best's (:func:`trainer_ext.provenance.model_card_with_choice`).
# 7. **The trackers' own objects.** The chosen checkpoint's confusion matrix is not a scalar, so it does
#    not go through ``on_log``: :func:`log_confusion_matrix` writes it with TensorBoardCallback's
#    ``SummaryWriter`` class into its log directory, and into MLflowCallback's run with the MLflow client.
#    Both integrations close their writer / end their run in their ``on_train_end``, which the
#    CallbackHandler calls before ours (report_to integrations come before user callbacks), so the
#    matrix is written through a new writer in the same log directory, and into the run MLflow ended last.
#    tensorboard and mlflow are optional: they are only reached through the integration callbacks the
#    Trainer made, never imported here.


def wrap_create_model_card(trainer: Any, write: Callable[[str], None]) -> None:
    """From now on ``trainer.create_model_card(...)`` (and ``trainer.push_to_hub(...)``, which calls it
    before uploading ``args.output_dir``) ends with ``write(args.output_dir)``, on the global main
    process only (the Trainer writes its card there only). ``write`` is expected to rewrite the card
    in that folder, e.g. ``lambda folder: write_provenance(folder, payload, held_out)``; an exception from
    it propagates, so that a card without the choice is never uploaded silently.

    Calling it again (a second ``train()``) replaces ``write``; the Trainer's original method is wrapped
    once. Does nothing when ``trainer`` is None.
    """
    if trainer is None:
        return
    original = getattr(trainer.create_model_card, "__trainer_ext_original__", trainer.create_model_card)

    @functools.wraps(original)
    def create_model_card(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if trainer.is_world_process_zero():
            write(trainer.args.output_dir)
        return result

    create_model_card.__trainer_ext_original__ = original  # type: ignore[attr-defined]
    trainer.create_model_card = create_model_card


def log_confusion_matrix(
    handler_or_trainer: Any,
    matrix: Sequence[Any],
    labels: Sequence[str],
    *,
    step: int,
    checkpoint: str,
    name: str = "holdout",
    args: Any = None,
    task: Any = None,
) -> list[str]:
    """Send the chosen checkpoint's statistics (its record's ``confusion_matrix``) to the active
    ``report_to`` integrations that have a place for it, headed as its task lays them out; return the
    integrations' names.

    ``task``: the record's task (a :class:`~trainer_ext.tasks.Task`, or its name as records store it:
    ``record.task``), which says what the rows and columns are (:meth:`~trainer_ext.tasks.Task.statistics_tables`):
    single-label rows true class x columns predicted class; multi-label one row per label of
    ``[tn, fp, fn, tp]`` (its ``[[tn, fp], [fn, tp]]``); token classification ``[TP, FP, FN]`` per entity
    type, then the labelled tokens correct and wrong. None: read from the matrix's shape (``[L, 2, 2]``
    multi-label; ``C x C`` for the ``C`` labels single-label; otherwise token classification), for
    callers that do not pass it; pass it, since a token record with 3 tags and 2 entity types is also 3 x 3.

    * ``tensorboard``: a text (Markdown tables) under the tag ``<name>/confusion_matrix`` at ``step``,
      in TensorBoardCallback's log directory (``args.logging_dir`` on transformers 4.x).
    * ``mlflow``: the artifact ``trainer_ext/<name>_confusion_matrix.json`` (``checkpoint``,
      ``global_step``, ``task``, ``labels``, ``matrix`` as in the record, and ``tables``: the same tables
      as JSON) in the run MLflowCallback logged to.

    Nothing is sent for a task without statistics (regression: an empty matrix). Call it on the global
    main process, at the end of training (``on_train_end``), with the Trainer's ``CallbackHandler`` or the
    Trainer. Returns ``[]`` (and does nothing) when neither integration is active or there is nothing to
    send. A tracker that fails is reported as a ``TrainerExtWarning``: it never fails a finished run.
    """
    callbacks = getattr(getattr(handler_or_trainer, "callback_handler", handler_or_trainer), "callbacks", None) or []
    kinds = [(callback, kind) for callback in callbacks if (kind := _tracker_kind(callback)) is not None]
    if not kinds or not np.asarray(matrix).size:
        return []
    if args is None:
        args = getattr(handler_or_trainer, "args", None)
    try:
        statistics_task = _statistics_task(task, matrix, labels)
        tables = statistics_task.statistics_tables(matrix)
    except Exception as exc:  # noqa: BLE001 - a tracker must never fail a finished training run
        warnings.warn(
            f"BestCheckpointCallback: could not lay out the statistics of {checkpoint} for the trackers: {exc}",
            TrainerExtWarning,
            stacklevel=2,
        )
        return []
    if not tables:
        return []
    payload = {  # a task given by name stays that name ("label_words" is laid out as single-label)
        "checkpoint": checkpoint, "global_step": int(step), "task": task if isinstance(task, str) else statistics_task.name,
        "labels": [str(label) for label in labels], "matrix": np.asarray(matrix).tolist(), "tables": tables,
    }
    logged: list[str] = []
    for callback, kind in kinds:
        try:
            if kind == "tensorboard":
                _confusion_to_tensorboard(callback, args, payload, name=name)
            else:
                _confusion_to_mlflow(callback, payload, name=name)
        except Exception as exc:  # noqa: BLE001 - a tracker must never fail a finished training run
            warnings.warn(
                f"BestCheckpointCallback: could not send the confusion matrix of {checkpoint} to {kind}: {exc}",
                TrainerExtWarning,
                stacklevel=2,
            )
        else:
            logged.append(kind)
    return logged


def _statistics_task(task: Any, matrix: Sequence[Any], labels: Sequence[str]) -> Any:
    """The task whose :meth:`statistics_tables` heads ``matrix`` (see :func:`log_confusion_matrix`)."""
    from .tasks import Task, task_from_record

    if isinstance(task, Task):
        return task
    if task is None:
        shape = np.shape(matrix)
        task = "multi_label" if len(shape) == 3 else "single_label" if shape == (len(labels), len(labels)) else "token"
    return task_from_record(str(task), list(labels))


def _tracker_kind(callback: Any) -> str | None:
    # The integration classes live in a module that imports no tracker at import time.
    from transformers.integrations.integration_utils import MLflowCallback, TensorBoardCallback

    if isinstance(callback, TensorBoardCallback):
        return "tensorboard"
    if isinstance(callback, MLflowCallback):
        return "mlflow"
    return None


def _statistics_text(payload: Mapping[str, Any]) -> str:
    from .render import statistics_markdown

    head = f"Statistics of {payload['checkpoint']} (step {payload['global_step']}, {payload['task']}), the chosen checkpoint"
    return "\n".join([head, ""] + statistics_markdown(payload["tables"])).rstrip() + "\n"


def _confusion_to_tensorboard(callback: Any, args: Any, payload: Mapping[str, Any], *, name: str) -> None:
    text = _statistics_text(payload)
    step = payload["global_step"]
    tag = f"{name}/confusion_matrix"
    if callback.tb_writer is not None:
        callback.tb_writer.add_text(tag, text, step)
        callback.tb_writer.flush()
        return
    # The integration closed its writer in its on_train_end: a new writer in the same directory.
    log_dir = getattr(callback, "logging_dir", None) or getattr(args, "logging_dir", None)
    make_writer = getattr(callback, "_SummaryWriter", None)
    if log_dir is None or make_writer is None:
        raise RuntimeError("TensorBoardCallback has no log directory (it was not set up on this process)")
    writer = make_writer(log_dir=log_dir)
    try:
        writer.add_text(tag, text, step)
    finally:
        writer.close()


def _confusion_to_mlflow(callback: Any, payload: Mapping[str, Any], *, name: str) -> None:
    mlflow = callback._ml_flow
    run = mlflow.active_run() or mlflow.last_active_run()
    if run is None:
        raise RuntimeError("MLflowCallback has no run (it was not set up on this process)")
    mlflow.tracking.MlflowClient().log_dict(run.info.run_id, dict(payload), f"trainer_ext/{name}_confusion_matrix.json")
