"""Run the in-memory model over this process's share of the held-out set; the task's rows out.

The plan is the same on every rank and does not depend on the number of processes:

1. examples are sorted by token length (longest first, ties by index);
2. consecutive examples fill a batch while ``batch rows x longest row <= token budget``
   (budget = ``batch_size x`` the longest example, so no batch pads more than a regular batch of the
   longest examples would, and short examples go many to a batch); on the CPU a batch also has at most
   ``batch_size`` rows (:func:`max_batch_rows`: there, many-row batches cost more per token);
3. batches are dealt to ranks by padded tokens (largest first, to the least loaded rank), so shards
   are balanced by work, not by example count; ranks with fewer batches repeat their smallest batch
   and drop the result, so every rank runs the same number of forward passes (FSDP and DeepSpeed
   ZeRO-3 need that).

Because a batch's content never depends on the world size, every example gets bit-for-bit the same
logits on 1 or N processes. What leaves the model is the task's rows (:meth:`trainer_ext.tasks.Task.rows`:
for a single-label task, probabilities float32 N x classes, or predicted ids).

Held-out sets are taken as the Trainer takes its ``eval_dataset``: columns the model's ``forward`` does
not accept (strings, ids, ...) are dropped before the collator sees them, as the Trainer's
``remove_unused_columns`` does (forward's parameters, plus ``label``, ``label_ids``, ``labels``), and
:attr:`HeldOutSet.columns` says which columns were used.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import distributed
from .errors import ConfigurationError
from .tasks import SingleLabel, Task

logger = logging.getLogger(__name__)

__all__ = [
    "EvalOutput",
    "HeldOutSet",
    "assign_batches",
    "check_dataset_shape",
    "default_collator",
    "evaluate_model",
    "max_batch_rows",
    "model_input_names",
    "plan_batches",
    "prepare_held_out",
    "probe_model",
    "signature_columns",
]

LABEL_COLUMNS = ("labels", "label")
# The Trainer keeps these besides forward's parameters (its _set_signature_columns_if_needed).
_TRAINER_LABEL_COLUMNS = ("label", "label_ids", "labels")
# Without a model signature to go by: the columns that are never model inputs.
_DROP = {"labels", "label", "label_ids", "text", "idx", "id"}
_FEATURE_COLUMNS = ("input_ids", "inputs_embeds")


@dataclass
class HeldOutSet:
    """Model-ready held-out examples: unpadded features, the task's labels, token lengths, fingerprint,
    and ``columns``: the dataset columns used (model inputs or the text column, then the label column)."""

    name: str
    features: list[dict[str, Any]]
    labels: np.ndarray
    lengths: np.ndarray
    fingerprint: str
    columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def _column_names(dataset: Any) -> list[str] | None:
    names = getattr(dataset, "column_names", None)
    if isinstance(names, list):
        return names
    return None


def _rows(dataset: Any) -> list[Mapping[str, Any]]:
    if hasattr(dataset, "to_dict") and _column_names(dataset) is not None:  # datasets.Dataset: one fast pass
        columns = dataset.to_dict()
        keys = list(columns)
        n = len(columns[keys[0]]) if keys else 0
        return [{k: columns[k][i] for k in keys} for i in range(n)]
    return [dataset[i] for i in range(len(dataset))]


def check_dataset_shape(dataset: Any, *, argument: str, label_column: str | None = None) -> None:
    """Cheap checks at construction: has a length, is not empty, has labels (in ``label_column`` when
    given, else in ``labels`` or ``label``)."""
    try:
        size = len(dataset)
    except TypeError:
        raise ConfigurationError(
            f"{argument}: expected a datasets.Dataset or a torch Dataset with a length; got {type(dataset).__name__}."
        ) from None
    if size == 0:
        raise ConfigurationError(f"{argument}: the held-out set is empty; pass at least one labeled example.")
    names = _column_names(dataset)
    if names is None:
        first = dataset[0]
        if not isinstance(first, Mapping):
            raise ConfigurationError(
                f"{argument}: each example must be a dict of features with a 'labels' (or 'label') entry; "
                f"got {type(first).__name__}."
            )
        names = list(first)
    if label_column is not None and label_column not in names:
        raise ConfigurationError(
            f"label_column: {label_column!r} is not a column of {argument} (columns: {names}). "
            f"Pass label_column='<the column with the gold labels>', or None for 'labels' / 'label'."
        )
    if label_column is None and not any(c in names for c in LABEL_COLUMNS):
        raise ConfigurationError(
            f"{argument}: the held-out set has no 'labels' or 'label' column (columns: {names}). "
            f"Add the gold class ids as 'labels'."
        )


def _forward_parameters(model: Any) -> dict[str, inspect.Parameter] | None:
    """The parameters of ``model.forward`` (of the base model under PEFT, as the Trainer inspects it),
    or None when there is no signature to read."""
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    forward = getattr(inner, "forward", None)
    if forward is None:
        return None
    try:
        return dict(inspect.signature(forward).parameters)
    except (TypeError, ValueError):
        return None


def model_input_names(model: Any) -> set[str] | None:
    """What ``model.forward`` accepts, for the call: its parameters, or None (pass every input) when
    they cannot be known or it takes ``**kwargs``."""
    params = _forward_parameters(model)
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def signature_columns(model: Any) -> list[str] | None:
    """The columns the Trainer's ``remove_unused_columns`` keeps for ``model``: forward's parameter
    names (``**kwargs`` adds only its own name, as in the Trainer) plus ``label``, ``label_ids``,
    ``labels``; None when forward has no signature."""
    params = _forward_parameters(model)
    return None if params is None else [*params, *_TRAINER_LABEL_COLUMNS]


def prepare_held_out(
    dataset: Any,
    *,
    name: str,
    task: Task | None = None,
    tokenizer: Any = None,
    text_column: str = "text",
    label_column: str | None = None,
    model: Any = None,
    argument: str = "eval_dataset",
    label_names: Sequence[str] | None = None,
) -> HeldOutSet:
    """Turn a held-out set into :class:`HeldOutSet`.

    Accepts model-ready features (``input_ids`` ...) or raw text in ``text_column``, which is then
    tokenized with ``tokenizer`` (the Trainer's ``processing_class``): truncation at the tokenizer's
    ``model_max_length`` (512 when it has none), no padding (batches are padded per batch). Labels come
    from ``label_column`` (default: ``labels`` or ``label``) and are read by ``task``
    (:meth:`~trainer_ext.tasks.Task.read_labels`: class ids or names for a single-label task).

    With ``model``, feature columns its ``forward`` does not accept are dropped, as the Trainer's
    ``remove_unused_columns`` drops them; without, the columns ``text``, ``idx``, ``id`` and the label
    columns are. ``label_names`` (instead of ``task``): the first version's call, a single-label task.
    A task with a ``held_out_features(rows, tokenizer, argument=...)`` method makes its own features
    instead (:class:`~trainer_ext.tasks.label_words.LabelWords`: the tokenized ``prompt`` column).
    """
    task = task if task is not None else SingleLabel(list(label_names or ()))
    check_dataset_shape(dataset, argument=argument, label_column=label_column)
    rows = _rows(dataset)
    label_column = label_column or next(c for c in LABEL_COLUMNS if c in rows[0])
    labels = task.read_labels([row[label_column] for row in rows], argument=argument)
    task_features = getattr(task, "held_out_features", None)  # a task that tokenizes its own inputs (label words)
    if task_features is not None:
        features, columns = task_features(rows, tokenizer, argument=argument)
    elif any(c in rows[0] for c in _FEATURE_COLUMNS):
        features, columns = _model_features(rows, label_column, model)
    else:
        features = _tokenize(rows, tokenizer, text_column, argument)
        columns = [text_column]
    task.check_features(labels, features, argument=argument)
    lengths = np.array([_length(f) for f in features], dtype=np.int64)
    digest = hashlib.sha256()
    digest.update(task.label_bytes(labels))
    for f in features:
        digest.update(np.asarray(f.get("input_ids", lengths[:0]), dtype=np.int64).tobytes())
        digest.update(b"|")
    return HeldOutSet(
        name=name, features=features, labels=labels, lengths=lengths, fingerprint=digest.hexdigest()[:16],
        columns=[*columns, label_column],
    )


def _model_features(rows: list[Mapping[str, Any]], label_column: str, model: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Each example's model inputs, and which columns they are (in the dataset's order).

    With a model: the columns the Trainer would keep (:func:`signature_columns`), labels apart. When
    none would be left (a ``forward(**kwargs)`` wrapper, where the Trainer itself refuses the set) or
    without a model: every column but ``text``, ``idx``, ``id`` and the label columns."""
    accepted = signature_columns(model) if model is not None else None
    keep = [] if accepted is None else [
        k for k in rows[0] if k in accepted and k not in _TRAINER_LABEL_COLUMNS and k != label_column
    ]
    if not keep:
        keep = [k for k in rows[0] if k not in _DROP and k != label_column]
    dropped = [k for k in rows[0] if k not in keep and k != label_column]
    if dropped:
        logger.info("Held-out columns not passed to the model: %s", ", ".join(dropped))
    return [{k: row[k] for k in keep} for row in rows], keep


def _tokenize(rows: list[Mapping[str, Any]], tokenizer: Any, text_column: str, argument: str) -> list[dict[str, Any]]:
    if text_column not in rows[0]:
        raise ConfigurationError(
            f"{argument}: examples have neither 'input_ids' nor a '{text_column}' column to tokenize "
            f"(columns: {sorted(rows[0])}). Pass text_column='<the column with the raw text>' "
            f"(text_column={text_column!r} now), or tokenize the set."
        )
    if tokenizer is None or not callable(tokenizer):
        raise ConfigurationError(
            f"{argument}: the held-out set is raw text ('{text_column}'), but no tokenizer is available. "
            f"Pass processing_class=tokenizer to the Trainer, or tokenize the set yourself."
        )
    max_length = getattr(tokenizer, "model_max_length", None)
    if not isinstance(max_length, int) or max_length > 100_000:
        max_length = 512
    encoded = tokenizer([str(row[text_column]) for row in rows], truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    return [{k: encoded[k][i] for k in keys} for i in range(len(rows))]


def _length(feature: Mapping[str, Any]) -> int:
    ids = feature.get("input_ids")
    if ids is None:
        return 1
    return max(1, len(ids))


def max_batch_rows(device_type: str, batch_size: int) -> int | None:
    """The most rows a batch of the plan may have on this kind of device: ``batch_size`` on the CPU,
    no limit but the token budget elsewhere.

    On the CPU a forward pass costs more per token the more tokens its batch holds (the activations
    leave the caches): one thread, a Llama of hidden 256, 4 layers, took 111 us/token in a batch of
    292 x 28 tokens against 89 in one of 32 x 28, and the budget's batches of up to 292 short examples
    made the whole evaluation 4-25 % slower (CPU seconds, every task of ``scripts/bench_eval.py``, 2,000
    examples, one thread) than batches of ``batch_size`` rows, which match a plain length-sorted loop.
    On an accelerator the budget's fewer, fuller batches are kept (not measured there yet). Every rank
    has the same kind of device, so the plan stays the same on every rank and for any world size.
    """
    return int(batch_size) if device_type == "cpu" else None


def plan_batches(lengths: np.ndarray, batch_size: int, *, max_rows: int | None = None) -> list[np.ndarray]:
    """Length-sorted batches under a token budget of ``batch_size x max(lengths)`` padded tokens, each of
    at most ``max_rows`` rows when given (see :func:`max_batch_rows`)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return []
    order = np.lexsort((np.arange(lengths.size), -lengths))  # longest first, ties by index
    budget = int(batch_size) * int(lengths.max())
    batches: list[np.ndarray] = []
    start = 0
    while start < order.size:
        longest = int(lengths[order[start]])  # sorted descending: the first row is the longest
        rows = max(1, budget // longest)
        if max_rows is not None:
            rows = min(rows, max(1, int(max_rows)))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def batch_cost(batch: np.ndarray, lengths: np.ndarray) -> int:
    return int(len(batch) * lengths[batch].max())


def assign_batches(batches: Sequence[np.ndarray], lengths: np.ndarray, num_processes: int) -> list[list[int]]:
    """Deal batch ids to ranks, largest padded-token cost first to the least loaded rank."""
    loads = [0] * num_processes
    shards: list[list[int]] = [[] for _ in range(num_processes)]
    for b in sorted(range(len(batches)), key=lambda b: (-batch_cost(batches[b], lengths), b)):
        target = min(range(num_processes), key=lambda r: (loads[r], r))
        shards[target].append(b)
        loads[target] += batch_cost(batches[b], lengths)
    return [sorted(s) for s in shards]


@dataclass
class EvalOutput:
    """The whole held-out set's result, identical on every rank, in held-out order."""

    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None  # the task's scores (float32 [N, C]), None when the model gives none
    seconds: float
    processes: int
    precision: str


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode and no gradients; afterwards every submodule is back in exactly its previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def precision_context(args: Any, device: torch.device) -> tuple[contextlib.AbstractContextManager, str]:
    """Autocast as the Trainer's arguments ask (bf16/fp16, or their *_full_eval)."""
    if args is not None and (getattr(args, "bf16", False) or getattr(args, "bf16_full_eval", False)):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16), "bf16"
    if args is not None and (getattr(args, "fp16", False) or getattr(args, "fp16_full_eval", False)):
        if device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.float16), "fp16"
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16), "bf16 (fp16 asked; CPU has no fp16 autocast)"
    return contextlib.nullcontext(), "fp32"


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _model_inputs(batch: Mapping[str, Any], accepted: set[str] | None, device: torch.device) -> dict[str, Any]:
    """The collated batch as the model takes it: on its device, without labels or what forward refuses."""
    inputs = {
        k: (v.to(device) if isinstance(v, torch.Tensor) else v)
        for k, v in batch.items()
        if k not in _DROP and (accepted is None or k in accepted)
    }
    if accepted is not None and "use_cache" in accepted:
        inputs["use_cache"] = False  # decoder models would return a KV cache nobody reads
    return inputs


def default_collator(processing_class: Any, *, task: Task | None = None) -> Callable[[list[dict[str, Any]]], Mapping[str, Any]]:
    """The task's own ``collate`` when it has one (label words pad prompts themselves), else dynamic
    padding with the Trainer's ``processing_class`` (``DataCollatorWithPadding``) when it can pad, else
    transformers' ``default_data_collator``."""
    from transformers import DataCollatorWithPadding, default_data_collator

    if task is not None and callable(getattr(task, "collate", None)):
        return task.collate

    if processing_class is not None and hasattr(processing_class, "pad"):
        return DataCollatorWithPadding(processing_class)
    return default_data_collator


def probe_model(model: torch.nn.Module, held_out: HeldOutSet, *, task: Task, collate: Callable) -> bool:
    """One forward pass on the shortest example: does the model give scores (of the task's width)?

    COLLECTIVE: every rank must call it. A wrong output shape is a ConfigurationError from the task; when
    the pass fails on any rank, every rank raises (:func:`trainer_ext.distributed.raise_if_any`), rather
    than the others going on to the first training step and waiting there for the rank that left.
    """
    failure, with_scores = None, True
    try:
        index = np.array([int(np.argmin(held_out.lengths))])
        inputs = _model_inputs(collate([held_out.features[int(index[0])]]), model_input_names(model), _model_device(model))
        with eval_mode(model):
            _, scores = task.outputs(task.rows(np.zeros(1), task.forward(model, inputs), inputs), 1)
        with_scores = scores is not None
    except Exception as exc:  # noqa: BLE001 - re-raised by raise_if_any once every rank knows
        failure = exc
    distributed.raise_if_any(failure, "the model's first forward pass")
    return with_scores


def evaluate_model(
    model: torch.nn.Module,
    held_out: HeldOutSet,
    *,
    task: Task | None = None,
    collate: Callable[[list[dict[str, Any]]], Mapping[str, Any]],
    batch_size: int,
    args: Any = None,
    num_classes: int | None = None,
) -> EvalOutput:
    """Evaluate ``model`` on ``held_out`` using every process. COLLECTIVE: every rank must call it.

    Each rank runs its batches (see the module docstring) through ``task`` (``forward``, then
    ``rows``); the rows are gathered once on every rank, put back in held-out order and turned into
    predictions and scores by the task. Raises on every rank if any rank failed, so no rank waits
    forever for one that died. ``num_classes`` (instead of ``task``): the first version's call, a
    single-label task.
    """
    task = task if task is not None else SingleLabel([f"class_{i}" for i in range(int(num_classes or 0))])
    start = time.perf_counter()
    world = distributed.world_size()
    device = _model_device(model)
    autocast, precision = precision_context(args, device)
    rows: list[np.ndarray] = []
    failure: BaseException | None = None
    try:
        with eval_mode(model), autocast:
            rows = _run_batches(model, held_out, task, collate, batch_size, device, world)
    except BaseException as exc:  # tell the other ranks before re-raising (even a ConfigurationError): none may hang
        failure = exc
    distributed.raise_if_any(failure, "held-out evaluation")

    local = np.concatenate(rows, axis=0) if rows else np.zeros((0, 1 + task.row_width), dtype=np.float64)
    everything = distributed.gather_rows(local)
    everything = everything[np.argsort(everything[:, 0], kind="stable")]
    predictions, scores = task.outputs(everything, len(held_out))
    return EvalOutput(
        labels=held_out.labels,
        predictions=predictions,
        probabilities=scores,  # NaN scores stay NaN: scoring decides
        seconds=time.perf_counter() - start,
        processes=world,
        precision=precision,
    )


def _run_batches(
    model: torch.nn.Module, held_out: HeldOutSet, task: Task, collate: Callable, batch_size: int, device: torch.device, world: int
) -> list[np.ndarray]:
    """This rank's forward passes; a rank with fewer batches repeats the cheapest batch and drops the
    result, so that every rank runs the same number of passes (FSDP / ZeRO-3 gather parameters inside
    forward)."""
    batches = plan_batches(held_out.lengths, batch_size, max_rows=max_batch_rows(device.type, batch_size))
    shards = assign_batches(batches, held_out.lengths, world)
    mine = list(shards[distributed.rank()])
    spare = min(range(len(batches)), key=lambda b: (batch_cost(batches[b], held_out.lengths), b))
    accepted = model_input_names(model)
    rows: list[np.ndarray] = []
    for step in range(max(len(s) for s in shards)):
        padding_pass = step >= len(mine)
        index = batches[mine[step] if not padding_pass else spare]
        inputs = _model_inputs(collate([held_out.features[i] for i in index]), accepted, device)
        scores = task.forward(model, inputs)
        if not padding_pass:
            rows.append(task.rows(index, scores, inputs))
    return rows


# ---- the first version's private helpers (callers outside this module: use the public API above) ----


def _forward_inputs(model: torch.nn.Module) -> set[str] | None:
    return model_input_names(model)


def _scores_of(output: Any) -> torch.Tensor:
    return SingleLabel(["0", "1"]).forward(lambda: output, {})


def _rows_from_scores(index: np.ndarray, scores: torch.Tensor, num_classes: int) -> np.ndarray:
    """The first version's row layout ``[index, prediction, p_0..p_C-1]``."""
    rows = SingleLabel([f"class_{i}" for i in range(num_classes)]).rows(index, scores)
    return np.delete(rows, 2, axis=1)
