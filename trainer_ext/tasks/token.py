"""Token classification, scored per entity (``*ForTokenClassification``), with seqeval as the reference.

Labels: one tag id per token, ``-100`` for tokens without a label (special tokens and non-first
sub-words, as in Hugging Face's token-classification recipe). ``id2label`` names the tags in IOB2
(``O``, ``B-PER``, ``I-PER``, ...) or IOBES (``B-``, ``I-``, ``E-``, ``S-``); the entity type is what
follows the prefix (``B-PER`` -> ``PER``, keys ``*_per``).

Entities are decoded exactly as seqeval's ``get_entities`` (its default, conlleval-compatible mode)
does on the label sequences with the ``-100`` positions removed, vectorised over every sentence at
once; an entity is a true positive when the same type spans the same tokens in labels and predictions.

Keys (all count-based, all higher-is-better except ``support_<t>``):

======================  =====================================================================
key                     value (seqeval ``classification_report(output_dict=True)``)
======================  =====================================================================
``precision_<t>``       TP / predicted entities of type t (``report[T]["precision"]``)
``recall_<t>``          TP / true entities of type t (``report[T]["recall"]``)
``f1_<t>``              2 P R / (P + R) (``report[T]["f1-score"]``)
``support_<t>``         true entities of type t (``report[T]["support"]``)
``precision_micro``,    the same over every entity (``report["micro avg"]``)
``recall_micro``,
``f1_micro``
``precision_macro``,    mean over the types seqeval reports: those present in the labels or
``recall_macro``,       the predictions (``report["macro avg"]``)
``f1_macro``
``f1_weighted``         ``f1_<t>`` weighted by support (``report["weighted avg"]["f1-score"]``)
``token_accuracy``      correct labelled tokens / labelled tokens (seqeval ``accuracy_score``)
======================  =====================================================================

Edge cases: every 0/0 is 0.0 (seqeval's ``zero_division`` default, without its warning); a type
that appears neither in labels nor predictions has 0.0 everywhere and is left out of the macro
means, as seqeval leaves it out of its report; with no entity at all, the macro means are 0.0
(seqeval: NaN).

Statistics (what a record keeps as ``confusion_matrix``): ``[T + 1, 3]`` int64, row t the entity
type t (types sorted, as seqeval sorts them) as ``[TP, FP, FN]``, the last row the labelled tokens
as ``[correct, wrong, 0]``. The bootstrap resamples sentences: :meth:`resampling_statistics` gives
the per-sentence statistics ``[N, T + 1, 3]`` and :meth:`TokenClassification.resample` draws N
sentences with replacement (a multinomial over the distinct per-sentence patterns, the same
distribution, O(resamples x patterns)).

Array layouts: held-out labels and predictions are int64 ``[N, W]`` (W the longest example),
``-100`` for tokens without a label and ``-1`` (:data:`NO_TOKEN`) beyond an example's end; scores
are the tag probabilities float32 ``[N, W, C]`` (0 beyond an example's end, NaN for a diverged
model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigurationError
from ..metrics import ZERO_DIVISION, slugify, pick_keys
from . import Task, model_logits

__all__ = ["IGNORE_INDEX", "NO_TOKEN", "TokenClassification"]

IGNORE_INDEX = -100  # a token without a label (Hugging Face's convention)
NO_TOKEN = -1  # beyond an example's last token
_O, _B, _I, _E, _S = 0, 1, 2, 3, 4
_PREFIX_CODES = {"B": _B, "I": _I, "E": _E, "S": _S}
_OVERALL = (
    "precision_micro", "recall_micro", "f1_micro", "precision_macro", "recall_macro", "f1_macro", "f1_weighted",
    "token_accuracy",
)
_PER_TYPE = ("precision", "recall", "f1", "support")
_RESERVED_TYPE_SLUGS = frozenset({"micro", "macro", "weighted"})
_RESAMPLE_CELLS = 2_000_000  # resamples x patterns drawn at once (memory bound of one chunk)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, dtype=np.float64), denominator)
    result = np.full(numerator.shape, ZERO_DIVISION, dtype=np.float64)
    np.divide(numerator, denominator, out=result, where=denominator != 0)
    return result


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """seqeval's F1: ``2 P R / (P + R)``, 0 where ``P + R == 0`` (the same operations, same order)."""
    denominator = precision + recall
    denominator = np.where(denominator == 0.0, 1.0, denominator)
    return 2.0 * precision * recall / denominator


class TokenClassification(Task):
    """One tag per token, scored per entity type (see the module docstring). ``label_names``: the
    model's ``id2label`` in id order; anything but IOB2 / IOBES naming is a ConfigurationError."""

    name: ClassVar[str] = "token"

    def __init__(self, label_names: Sequence[str]) -> None:
        names = [str(n) for n in label_names]
        codes, types = [], []
        bad = []
        for name in names:
            prefix, dash, entity = name.partition("-")
            if name == "O":
                codes.append(_O)
                types.append(None)
            elif dash and prefix in _PREFIX_CODES and entity:
                codes.append(_PREFIX_CODES[prefix])
                types.append(entity)
            else:
                bad.append(name)
        if bad or "O" not in names:
            raise ConfigurationError(
                f"id2label: token classification needs IOB2 tags ('O', 'B-PER', 'I-PER', ...) or IOBES tags "
                f"('B-', 'I-', 'E-', 'S-' prefixes); got {names}"
                + (f" ({bad} do not follow it)." if bad else " (no 'O' tag).")
                + " Set model.config.id2label / label2id to the tag names."
            )
        self.entity_types: list[str] = sorted({t for t in types if t is not None})
        try:
            self.type_slugs: list[str] = [slugify(t) for t in self.entity_types]
        except ValueError as exc:
            raise ConfigurationError(f"id2label: {exc}") from None
        if len(set(self.type_slugs)) != len(self.type_slugs) or set(self.type_slugs) & _RESERVED_TYPE_SLUGS:
            raise ConfigurationError(
                f"id2label: entity types {self.entity_types} give the key slugs {self.type_slugs}; they must be "
                f"distinct and not {sorted(_RESERVED_TYPE_SLUGS)} (keys such as 'f1_macro' would collide)."
            )
        self.scheme = "IOBES" if any(c in (_E, _S) for c in codes) else "IOB2"
        self._tag_code = np.array(codes, dtype=np.int64)
        self._tag_type = np.array([-1 if t is None else self.entity_types.index(t) for t in types], dtype=np.int64)
        super().__init__(names)

    @property
    def num_tags(self) -> int:
        return len(self.label_names)

    @property
    def row_width(self) -> int:  # type: ignore[override]
        return 2 + self.num_tags  # position, predicted tag, p_0 .. p_{C-1}

    # ---- 1. held-out labels ------------------------------------------------------------------

    def read_labels(self, raw: Sequence[Any], *, argument: str) -> np.ndarray:
        """Per-token tag ids (lists, arrays or 1-D tensors; ``-100`` allowed) -> int64 ``[N, W]``, padded
        with :data:`NO_TOKEN`. Anything else is a ConfigurationError naming ``argument``."""
        expected = (
            f"expected one label per token: a list of tag ids 0..{self.num_tags - 1} of {self.label_names}, or "
            f"-100 for special tokens and non-first sub-words, as many as input_ids"
        )
        sequences = []
        for i, value in enumerate(raw):
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            array = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
            if array is None or array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
                raise ConfigurationError(
                    f"{argument}: labels[{i}] is {value!r} ({type(value).__name__}); token classification {expected}."
                )
            if array.size == 0:
                raise ConfigurationError(f"{argument}: labels[{i}] is empty; {expected}.")
            outside = (array != IGNORE_INDEX) & ((array < 0) | (array >= self.num_tags))
            if outside.any():
                j = int(np.argmax(outside))
                raise ConfigurationError(
                    f"{argument}: labels[{i}][{j}] is {int(array[j])}, outside the model's {self.num_tags} tags; {expected}."
                )
            sequences.append(array.astype(np.int64))
        width = max((s.size for s in sequences), default=0)
        labels = np.full((len(sequences), width), NO_TOKEN, dtype=np.int64)
        for i, s in enumerate(sequences):
            labels[i, : s.size] = s
        if labels.size and not (labels >= 0).any():
            raise ConfigurationError(f"{argument}: no token has a label (every label is -100); {expected}.")
        return labels

    def check_features(self, labels: np.ndarray, features: Sequence[Mapping[str, Any]], *, argument: str) -> None:
        """Each example has exactly as many labels as ``input_ids``."""
        counts = (labels != NO_TOKEN).sum(axis=1)
        for i, feature in enumerate(features):
            ids = feature.get("input_ids")
            if ids is None:
                raise ConfigurationError(
                    f"{argument}: token classification needs tokenized examples ('input_ids' with per-token "
                    f"'labels'); example {i} has columns {sorted(feature)}."
                )
            if len(ids) != counts[i]:
                raise ConfigurationError(
                    f"{argument}: labels[{i}] has {int(counts[i])} entries but input_ids[{i}] has {len(ids)} tokens; "
                    f"expected one label per token (-100 for special tokens and non-first sub-words, as Hugging "
                    f"Face's tokenize_and_align_labels does)."
                )

    # ---- 2. model outputs to rows (torch) ------------------------------------------------------

    def forward(self, model: Any, inputs: Mapping[str, Any]) -> Any:
        """The model's logits ``[batch, tokens, C]`` for one collated batch."""
        return model_logits(model, inputs, "token classification needs logits [batch, tokens, tags] (an AutoModelForTokenClassification)")

    def rows(self, index: np.ndarray, scores: Any, batch: Mapping[str, Any] | None = None) -> np.ndarray:
        """One row per real token (``attention_mask`` 1): ``[index, position, predicted tag, p_0..]``,
        position counted from the example's first real token (left or right padding alike)."""
        import torch

        logits = scores.detach()
        if logits.dim() != 3 or logits.shape[-1] != self.num_tags:
            raise ConfigurationError(
                f"model: logits have shape {tuple(logits.shape)}, expected [batch, tokens, {self.num_tags}] for the "
                f"{self.num_tags} tags of id2label (a token classifier)."
            )
        mask = None if batch is None else batch.get("attention_mask")
        mask = torch.ones(logits.shape[:2], dtype=torch.long) if mask is None else mask.detach().cpu().long()
        probabilities = torch.softmax(logits.float(), dim=-1).cpu()
        positions = mask.cumsum(dim=1) - 1
        example, token = mask.bool().nonzero(as_tuple=True)
        out = np.empty((example.numel(), 1 + self.row_width), dtype=np.float64)
        out[:, 0] = np.asarray(index)[example.numpy()]
        out[:, 1] = positions[example, token].numpy()
        out[:, 2] = probabilities.argmax(dim=-1)[example, token].numpy()
        out[:, 3:] = probabilities[example, token].numpy()
        return out

    # ---- 3. rows to predictions and scores ---------------------------------------------------

    def outputs(self, rows: np.ndarray, num_examples: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted tags int64 ``[N, W]`` (:data:`NO_TOKEN` beyond each example) and probabilities
        float32 ``[N, W, C]`` (0 there)."""
        examples = rows[:, 0].astype(np.int64)
        if not np.array_equal(np.unique(examples), np.arange(num_examples)):
            raise RuntimeError(f"internal error: gathered token rows do not cover the {num_examples} held-out examples")
        positions = rows[:, 1].astype(np.int64)
        width = int(positions.max()) + 1 if positions.size else 0
        predictions = np.full((num_examples, width), NO_TOKEN, dtype=np.int64)
        predictions[examples, positions] = np.nan_to_num(rows[:, 2]).astype(np.int64)
        probabilities = np.zeros((num_examples, width, self.num_tags), dtype=np.float32)
        probabilities[examples, positions] = rows[:, 3:]
        return predictions, probabilities

    # ---- 4. keys and metrics ---------------------------------------------------------------

    def sample_outputs(self) -> tuple[list[Any], list[Any]]:
        return [[0, 0]], [[0, 0]]

    def metric_keys(self, *, with_scores: bool = True, with_cost: bool = False) -> list[str]:
        return list(_OVERALL) + [f"{prefix}_{slug}" for slug in self.type_slugs for prefix in _PER_TYPE]

    def count_keys(self, *, with_cost: bool = False) -> list[str]:
        return self.metric_keys()

    def metrics(
        self, labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray | None, *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, float]:
        values = self.statistic_values(self.statistics(labels, predictions), self.metric_keys())
        return {key: float(value[0]) for key, value in values.items()}

    # ---- 5. sufficient statistics --------------------------------------------------------------

    def statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Totals ``[T + 1, 3]``: ``[TP, FP, FN]`` per entity type, then ``[correct, wrong, 0]`` tokens."""
        return self.resampling_statistics(labels, predictions).sum(axis=0)

    def resampling_statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Per-sentence statistics ``[N, T + 1, 3]`` (what the bootstrap draws sentences from)."""
        labels, predictions = self._aligned(labels, predictions)
        n, t = labels.shape[0], len(self.entity_types)
        labelled = labels >= 0
        per_sentence = labelled.sum(axis=1)
        true_entities = self._entities(labels, labelled, per_sentence)
        pred_entities = self._entities(np.where(labelled, predictions, 0), labelled, per_sentence)
        true_hit = np.isin(true_entities[0], pred_entities[0])
        pred_hit = np.isin(pred_entities[0], true_entities[0])

        def count(cells: np.ndarray) -> np.ndarray:
            return np.bincount(cells, minlength=n * t).reshape(n, t)

        true_cells = true_entities[1] * t + true_entities[2]
        pred_cells = pred_entities[1] * t + pred_entities[2]
        stats = np.zeros((n, t + 1, 3), dtype=np.int64)
        stats[:, :t, 0] = count(true_cells[true_hit])
        stats[:, :t, 1] = count(pred_cells[~pred_hit])
        stats[:, :t, 2] = count(true_cells[~true_hit])
        correct = ((labels == predictions) & labelled).sum(axis=1)
        stats[:, t, 0] = correct
        stats[:, t, 1] = per_sentence - correct
        return stats

    def example_statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Per-sentence statistics ``[N, T + 1, 3]`` (the same as :meth:`resampling_statistics`)."""
        return self.resampling_statistics(labels, predictions)

    def _aligned(self, labels: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = np.asarray(labels, dtype=np.int64)
        predictions = np.asarray(predictions, dtype=np.int64)
        if predictions.shape[1] < labels.shape[1]:
            predictions = np.pad(predictions, ((0, 0), (0, labels.shape[1] - predictions.shape[1])), constant_values=NO_TOKEN)
        predictions = predictions[:, : labels.shape[1]]
        missing = (labels >= 0) & ((predictions < 0) | (predictions >= self.num_tags))
        if missing.any():
            raise ConfigurationError(
                f"eval_dataset: the model gave no tag for {int(missing.sum())} labelled token(s) (first in example "
                f"{int(np.argwhere(missing)[0][0])}); was the input truncated by the data_collator?"
            )
        return labels, predictions

    def _entities(self, tags: np.ndarray, labelled: np.ndarray, per_sentence: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(key, sentence, type)`` of every entity, decoded as seqeval's ``get_entities`` does on the
        labelled tokens, each sentence followed by an ``O`` (so no entity crosses sentences)."""
        n = tags.shape[0]
        offsets = np.concatenate(([0], np.cumsum(per_sentence + 1)[:-1]))
        length = int((per_sentence + 1).sum()) + 1
        flat = (offsets[:, None] + np.cumsum(labelled, axis=1) - 1)[labelled]
        code = np.zeros(length, dtype=np.int64)  # O everywhere else
        kind = np.full(length, -1, dtype=np.int64)
        code[flat] = self._tag_code[tags[labelled]]
        kind[flat] = self._tag_type[tags[labelled]]
        prev_code = np.concatenate(([_O], code[:-1]))
        prev_kind = np.concatenate(([-1], kind[:-1]))
        inside = (prev_code == _B) | (prev_code == _I)
        closed = (prev_code == _E) | (prev_code == _S)
        ends = (
            closed
            | (inside & ((code == _B) | (code == _S) | (code == _O)))
            | ((prev_code != _O) & (prev_kind != kind))
        )
        starts = (
            (code == _B) | (code == _S)
            | ((closed | (prev_code == _O)) & ((code == _E) | (code == _I)))
            | ((code != _O) & (prev_kind != kind))
        )
        end_at = np.flatnonzero(ends)  # the entity ends at end_at - 1 and started at the last start before
        start_at = np.flatnonzero(starts)
        begin = start_at[np.maximum(np.searchsorted(start_at, end_at, side="left") - 1, 0)]
        last = end_at - 1
        types = prev_kind[end_at]
        keys = (begin * length + last) * max(1, len(self.entity_types)) + types
        sentence = np.repeat(np.arange(n), per_sentence + 1)
        sentence = np.concatenate((sentence, [max(n - 1, 0)]))[begin]
        return keys, sentence, types

    def statistic_values(
        self, stats: np.ndarray, keys: Sequence[str], *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, np.ndarray]:
        """Keys of statistics ``[T + 1, 3]``, a batch ``[B, T + 1, 3]`` (resamples) or a batch of
        per-sentence statistics ``[B, N, T + 1, 3]`` (summed over sentences) -> ``{key: [B]}``."""
        counts = np.asarray(stats, dtype=np.float64)
        if counts.ndim == 2:
            counts = counts[None]
        if counts.ndim == 4:
            counts = counts.sum(axis=1)
        t = len(self.entity_types)
        tp, fp, fn = counts[:, :t, 0], counts[:, :t, 1], counts[:, :t, 2]
        predicted, support = tp + fp, tp + fn
        precision, recall = _divide(tp, predicted), _divide(tp, support)
        f1 = _f1(precision, recall)
        present = (predicted + support) > 0
        shown = present.sum(axis=-1)
        micro_p, micro_r = _divide(tp.sum(-1), predicted.sum(-1)), _divide(tp.sum(-1), support.sum(-1))
        overall = {
            "precision_micro": lambda: micro_p,
            "recall_micro": lambda: micro_r,
            "f1_micro": lambda: _f1(micro_p, micro_r),
            "precision_macro": lambda: _divide((precision * present).sum(-1), shown),
            "recall_macro": lambda: _divide((recall * present).sum(-1), shown),
            "f1_macro": lambda: _divide((f1 * present).sum(-1), shown),
            "f1_weighted": lambda: _divide((f1 * support).sum(-1), support.sum(-1)),
            "token_accuracy": lambda: _divide(counts[:, t, 0], counts[:, t, 0] + counts[:, t, 1]),
        }
        per_type = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        return pick_keys(keys, overall, per_type, self.type_slugs, f"a token-classification key for entity types {self.entity_types}")

    def score_values(self, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        return {}  # every key is count-based

    def resample(self, stats: np.ndarray, *, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """Bootstrap resamples of the N sentences of per-sentence statistics ``[N, T + 1, 3]``
        (:meth:`resampling_statistics`) -> totals ``[R, T + 1, 3]``."""
        stats = np.asarray(stats, dtype=np.int64)
        if stats.ndim != 3:
            raise ValueError(f"stats: token classification resamples per-sentence statistics [N, T + 1, 3]; got shape {stats.shape}")
        return self._draw(stats.reshape(stats.shape[0], -1), resamples, rng).reshape(resamples, *stats.shape[1:])

    @staticmethod
    def _draw(per_sentence: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """Sums of N sentences drawn with replacement: a multinomial over the distinct rows."""
        n = per_sentence.shape[0]
        patterns, counts = np.unique(per_sentence, axis=0, return_counts=True)
        chunk = max(1, _RESAMPLE_CELLS // max(1, patterns.shape[0]))
        parts = []
        for start in range(0, resamples, chunk):
            draws = rng.multinomial(n, counts / n, size=min(chunk, resamples - start))
            parts.append(np.rint(draws.astype(np.float64) @ patterns.astype(np.float64)).astype(np.int64))
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, per_sentence.shape[1]), dtype=np.int64)

    def resample_paired(
        self, labels: np.ndarray, first: np.ndarray, second: np.ndarray, *, resamples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Both checkpoints' statistics on the same resampled sentences."""
        a, b = self.resampling_statistics(labels, first), self.resampling_statistics(labels, second)
        n, shape = a.shape[0], a.shape[1:]
        joint = self._draw(np.concatenate((a.reshape(n, -1), b.reshape(n, -1)), axis=1), resamples, rng)
        half = joint.shape[1] // 2
        return joint[:, :half].reshape(resamples, *shape), joint[:, half:].reshape(resamples, *shape), (a.sum(0), b.sum(0))

    # ---- 6. decision thresholds (none) ---------------------------------------------------------

    def _no_threshold(self, *_: Any) -> Any:
        raise ConfigurationError("tune_threshold: token classification has no decision threshold to tune.")

    threshold_cuts = apply_threshold = threshold_config = threshold_from_config = _no_threshold  # type: ignore[assignment]

    # ---- 7. the task's checks of an objective ------------------------------------------------

    def check_objective(self, objective: Any) -> None:
        for argument in ("cost_matrix", "class_prior", "tune_threshold"):
            if getattr(objective, argument, None):
                raise ConfigurationError(
                    f"{argument}: not available for token classification (entity-level keys: "
                    f"{self.metric_keys()[:8]} and per type); use constraints such as 'precision_per >= 0.5'."
                )

    # ---- 8. the statistics as people read them -------------------------------------------------

    def statistics_tables(self, stats: Any) -> list[dict[str, Any]]:
        """Two tables from ``[T + 1, 3]``: per entity type (sorted) its true positives, false positives and
        false negatives (exact span and type, as seqeval), then the labelled tokens, correct and wrong
        (``[]`` for an empty matrix)."""
        counts = np.asarray(stats, dtype=np.int64)
        if counts.size == 0:
            return []
        t = len(self.entity_types)
        counts = counts.reshape(t + 1, 3)
        return [
            {
                "title": "Entities per type (a true positive has the same type and span in labels and predictions)",
                "corner": "entity type", "columns": ["true positive", "false positive", "false negative"],
                "index": list(self.entity_types), "data": counts[:t].tolist(),
            },
            {
                "title": "Labelled tokens (tokens whose label is not -100)", "corner": "",
                "columns": ["correct", "wrong"], "index": ["tokens"], "data": [counts[t, :2].tolist()],
            },
        ]
