"""Run the in-memory model over this process's share of the held-out set; scores out.

The plan is the same on every rank and does not depend on the number of processes:

1. examples are sorted by token length (longest first, ties by index);
2. consecutive examples fill a batch while ``batch rows x longest row <= token budget``
   (budget = ``batch_size x`` the longest example, so no batch pads more than a regular batch of the
   longest examples would, and short examples go many to a batch);
3. batches are dealt to ranks by padded tokens (largest first, to the least loaded rank), so shards
   are balanced by work, not by example count; ranks with fewer batches repeat their smallest batch
   and drop the result, so every rank runs the same number of forward passes (FSDP and DeepSpeed
   ZeRO-3 need that).

Because a batch's content never depends on the world size, every example gets bit-for-bit the same
logits on 1 or N processes. Only probabilities (float32, N x classes) or predicted ids leave the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import distributed
from .errors import ConfigurationError

logger = logging.getLogger(__name__)

__all__ = ["HeldOutSet", "prepare_held_out", "plan_batches", "assign_batches", "EvalOutput", "evaluate_model"]

LABEL_COLUMNS = ("labels", "label")
_DROP = {"labels", "label", "label_ids", "text", "idx", "id"}


@dataclass
class HeldOutSet:
    """Model-ready held-out examples: unpadded features, integer labels, token lengths, fingerprint."""

    name: str
    features: list[dict[str, Any]]
    labels: np.ndarray
    lengths: np.ndarray
    fingerprint: str

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


def check_dataset_shape(dataset: Any, *, argument: str) -> None:
    """Cheap checks at construction: has a length, is not empty, has labels."""
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
    if not any(c in names for c in LABEL_COLUMNS):
        raise ConfigurationError(
            f"{argument}: the held-out set has no 'labels' or 'label' column (columns: {names}). "
            f"Add the gold class ids as 'labels'."
        )


def prepare_held_out(
    dataset: Any,
    *,
    name: str,
    label_names: Sequence[str],
    tokenizer: Any = None,
    text_column: str = "text",
    argument: str = "eval_dataset",
) -> HeldOutSet:
    """Turn a held-out set into :class:`HeldOutSet`.

    Accepts model-ready features (``input_ids`` ...) or raw text in ``text_column``, which is then
    tokenized with ``tokenizer`` (the Trainer's ``processing_class``): truncation at the tokenizer's
    ``model_max_length`` (512 when it has none), no padding (batches are padded per batch). Labels come
    from ``labels`` or ``label``: class ids, or class names from ``label_names``.
    """
    check_dataset_shape(dataset, argument=argument)
    rows = _rows(dataset)
    label_column = next(c for c in LABEL_COLUMNS if c in rows[0])
    raw_labels = [row[label_column] for row in rows]
    labels = _label_ids(raw_labels, label_names, argument=argument)

    has_features = "input_ids" in rows[0] or "inputs_embeds" in rows[0]
    if not has_features:
        if text_column not in rows[0]:
            raise ConfigurationError(
                f"{argument}: examples have neither 'input_ids' nor a '{text_column}' column to tokenize "
                f"(columns: {sorted(rows[0])})."
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
        keys = [k for k in encoded.keys()]
        features = [{k: encoded[k][i] for k in keys} for i in range(len(rows))]
    else:
        features = [{k: v for k, v in row.items() if k not in _DROP} for row in rows]

    lengths = np.array([_length(f) for f in features], dtype=np.int64)
    digest = hashlib.sha256()
    digest.update(labels.tobytes())
    for f in features:
        digest.update(np.asarray(f.get("input_ids", lengths[:0]), dtype=np.int64).tobytes())
        digest.update(b"|")
    return HeldOutSet(name=name, features=features, labels=labels, lengths=lengths, fingerprint=digest.hexdigest()[:16])


def _length(feature: Mapping[str, Any]) -> int:
    ids = feature.get("input_ids")
    if ids is None:
        return 1
    return max(1, len(ids))


def _label_ids(raw: Sequence[Any], label_names: Sequence[str], *, argument: str) -> np.ndarray:
    from .metrics import slugify

    by_name = {str(n): i for i, n in enumerate(label_names)}
    by_slug = {slugify(str(n)): i for i, n in enumerate(label_names)}
    out = np.empty(len(raw), dtype=np.int64)
    bad: list[Any] = []
    for i, value in enumerate(raw):
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or value is None:
            bad.append(value)
            continue
        if isinstance(value, (int, np.integer)) or (isinstance(value, float) and float(value).is_integer()):
            out[i] = int(value)
        elif isinstance(value, str) and (value in by_name or slugify(value) in by_slug):
            out[i] = by_name.get(value, by_slug.get(slugify(value), -1))
        else:
            bad.append(value)
            continue
        if not 0 <= out[i] < len(label_names):
            bad.append(value)
    if bad:
        shown = sorted({repr(b) for b in bad})[:5]
        raise ConfigurationError(
            f"{argument}: {len(bad)} label(s) are outside the model's classes, e.g. {', '.join(shown)}. "
            f"Allowed: class ids 0..{len(label_names) - 1} or names {list(label_names)}."
        )
    return out


def plan_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Length-sorted batches under a token budget of ``batch_size x max(lengths)`` padded tokens."""
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
    probabilities: np.ndarray | None  # float32 [N, C], None when the model gives no scores
    seconds: float
    processes: int
    precision: str


def _forward_inputs(model: torch.nn.Module) -> set[str] | None:
    forward = getattr(model, "forward", None)
    if forward is None:
        return None
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def _scores_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) or hasattr(output, "logits"):
        logits = output["logits"] if isinstance(output, Mapping) else output.logits
        if logits is not None:
            return logits
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    raise ConfigurationError(
        f"model: its output ({type(output).__name__}) has no 'logits'; trainer_ext needs a sequence "
        f"classifier returning logits [batch, classes] (or predicted class ids [batch])."
    )


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


def evaluate_model(
    model: torch.nn.Module,
    held_out: HeldOutSet,
    *,
    collate: Callable[[list[dict[str, Any]]], Mapping[str, Any]],
    batch_size: int,
    num_classes: int,
    args: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalOutput:
    """Evaluate ``model`` on ``held_out`` using every process. COLLECTIVE: every rank must call it.

    Each rank runs its batches (see the module docstring), then rows ``[index, prediction, p_0..p_C-1]``
    are gathered once on every rank and put back in held-out order. Raises on every rank if any rank
    failed, so no rank waits forever for one that died.
    """
    start = time.perf_counter()
    world, me = distributed.world_size(), distributed.rank()
    batches = plan_batches(held_out.lengths, batch_size)
    shards = assign_batches(batches, held_out.lengths, world)
    mine = list(shards[me])
    forward_count = max(len(s) for s in shards)
    # A rank with fewer batches repeats the cheapest batch and drops the result, so that every rank
    # runs the same number of forward passes (FSDP / ZeRO-3 gather parameters inside forward).
    spare = min(range(len(batches)), key=lambda b: (batch_cost(batches[b], held_out.lengths), b))
    device = _model_device(model)
    autocast, precision = precision_context(args, device)
    accepted = _forward_inputs(model)

    rows: list[np.ndarray] = []
    failure: BaseException | None = None
    gives_ids = False
    try:
        with eval_mode(model), autocast:
            for step in range(forward_count):
                padding_pass = step >= len(mine)
                index = batches[mine[step] if not padding_pass else spare]
                features = [held_out.features[i] for i in index]
                inputs = collate(features)
                inputs = {
                    k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                    for k, v in inputs.items()
                    if k not in _DROP and (accepted is None or k in accepted)
                }
                if accepted is not None and "use_cache" in accepted:
                    inputs["use_cache"] = False  # decoder models would return a KV cache nobody reads
                scores = _scores_of(model(**inputs))
                gives_ids = scores.dim() == 1 and not torch.is_floating_point(scores)
                if padding_pass:
                    continue
                rows.append(_rows_from_scores(index, scores, num_classes))
                if progress is not None:
                    progress(step + 1, len(mine))
    except BaseException as exc:  # tell the other ranks before re-raising (even a ConfigurationError): none may hang
        failure = exc

    if distributed.any_rank(failure is not None):
        if failure is not None:
            raise failure
        raise RuntimeError("held-out evaluation failed on another process; see that process's error")

    width = 2 + num_classes
    local = np.concatenate(rows, axis=0) if rows else np.zeros((0, width), dtype=np.float64)
    everything = distributed.gather_rows(local)
    order = np.argsort(everything[:, 0], kind="stable")
    everything = everything[order]
    if everything.shape[0] != len(held_out) or not np.array_equal(everything[:, 0], np.arange(len(held_out))):
        raise RuntimeError(
            f"internal error: gathered {everything.shape[0]} rows for {len(held_out)} held-out examples"
        )
    predictions = everything[:, 1].astype(np.int64)
    probabilities = everything[:, 2:].astype(np.float32)
    return EvalOutput(
        labels=held_out.labels,
        predictions=predictions,
        probabilities=None if gives_ids else probabilities,  # NaN scores stay NaN: the caller decides
        seconds=time.perf_counter() - start,
        processes=world,
        precision=precision,
    )


def _rows_from_scores(index: np.ndarray, scores: torch.Tensor, num_classes: int) -> np.ndarray:
    scores = scores.detach()
    out = np.empty((len(index), 2 + num_classes), dtype=np.float64)
    out[:, 0] = index
    if scores.dim() == 1 and not torch.is_floating_point(scores):  # predicted ids, no scores
        out[:, 1] = scores.cpu().numpy()
        out[:, 2:] = math.nan
        return out
    if scores.dim() != 2 or scores.shape[-1] != num_classes:
        raise ConfigurationError(
            f"model: logits have shape {tuple(scores.shape)}, expected [batch, {num_classes}] for the "
            f"{num_classes} classes of the held-out labels. Check num_labels / id2label."
        )
    probabilities = torch.softmax(scores.float(), dim=-1)
    out[:, 1] = probabilities.argmax(dim=-1).cpu().numpy()
    out[:, 2:] = probabilities.cpu().numpy().astype(np.float32)
    return out
