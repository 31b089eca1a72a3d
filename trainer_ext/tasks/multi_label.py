"""Multi-label classification: any subset of L labels per example (``problem_type="multi_label_classification"``).

A sigmoid per label; label ``l`` is predicted when its probability is at least its threshold (0.5 unless
tuned). Held-out labels are multi-hot vectors of length L (0/1, int or float) or lists of label names.

Keys (``<l>`` the slug of a label name), each equal to scikit-learn on multilabel-indicator arrays with
``zero_division=0``:

* per label: ``precision_<l>``, ``recall_<l>``, ``f1_<l>``, ``support_<l>`` (``average=None``),
  ``roc_auc_<l>`` (``roc_auc_score`` of the column; NaN when the column is constant),
  ``average_precision_<l>`` (``average_precision_score`` of the column);
* overall: ``precision_micro``, ``recall_micro``, ``f1_micro``, ``precision_macro``, ``recall_macro``,
  ``f1_macro``, ``f1_weighted`` (the averages of ``precision_recall_fscore_support``),
  ``f1_samples`` (``f1_score(average="samples")``; an example with no true and no predicted label
  counts 0, scikit-learn's ``zero_division=0``), ``subset_accuracy`` (``accuracy_score``: every
  label right) and ``hamming_loss`` (share of wrong (example, label) cells; lower is better).

Sufficient statistics: the per-label 2 x 2 confusion matrices ``[L, 2, 2]`` (scikit-learn's
``multilabel_confusion_matrix`` layout: ``[[tn, fp], [fn, tp]]``, label order), what the record keeps
as ``confusion_matrix``. Every key but ``f1_samples``, ``subset_accuracy`` and the score keys follows
from them. Those two need each example's label vector, so they are resampled by rows, like the
score keys (the registry marks them ``"score"``).

Bootstrap: :meth:`MultiLabel.resample_paired` draws examples (labels of one example stay together).
:meth:`MultiLabel.resample` only has the summed matrices, so it draws each label's 2 x 2 cells
independently (multinomial of N): exact for per-label keys; for the averages over labels it ignores
the correlation between labels of one example (the interval is then an approximation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigurationError
from ..metrics import _average_precision, _one_vs_rest_curve, _roc_auc, pick_keys
from . import Task, model_logits

__all__ = ["MultiLabel", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.5
_OVERALL = (
    "precision_micro", "recall_micro", "f1_micro", "precision_macro", "recall_macro", "f1_macro",
    "f1_weighted", "hamming_loss",
)
_ROW_KEYS = ("f1_samples", "subset_accuracy")
_PER_LABEL = ("precision", "recall", "f1", "support")
_PER_LABEL_SCORE = ("roc_auc", "average_precision")
_RESERVED = frozenset({"micro", "macro", "weighted", "samples"})


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


class MultiLabel(Task):
    """Any subset of ``L >= 2`` labels per example (``AutoModelForSequenceClassification`` with
    ``problem_type="multi_label_classification"``); see the module docstring.

    Rows: ``[index, has_scores, p_0 .. p_{L-1}]`` with ``p`` the sigmoid of the logits (float32
    precision). Predictions: int64 ``[N, L]`` (0/1); scores: float32 ``[N, L]``. Threshold: a float
    (every label) or ``{label: t}`` (names or slugs; labels left out keep 0.5); ``config.json`` form
    ``{"thresholds": {"<label name>": t, ...}}``.
    """

    name: ClassVar[str] = "multi_label"

    def __init__(self, label_names: Sequence[str]) -> None:
        super().__init__(label_names)
        reserved = sorted(set(self.slugs) & _RESERVED)
        if reserved:
            raise ConfigurationError(
                f"label_names: a multi-label model's labels must not slug to {sorted(_RESERVED)} (their keys "
                f"would collide with f1_micro, f1_samples, ...); got {self.label_names}."
            )

    @property
    def num_labels(self) -> int:
        return len(self.slugs)

    @property
    def row_width(self) -> int:  # type: ignore[override]
        return 1 + self.num_labels

    # ---- 1. held-out labels ------------------------------------------------------------------

    def read_labels(self, raw: Sequence[Any], *, argument: str) -> np.ndarray:
        """Multi-hot vectors of length L (0/1 as int, float or bool) or lists of label names (as given
        or as slugs) -> int64 ``[N, L]``. Anything else is a ConfigurationError naming the first bad row."""
        index = {name: i for i, name in enumerate(self.label_names)}
        index.update({slug: i for i, slug in enumerate(self.slugs)})
        out = np.zeros((len(raw), self.num_labels), dtype=np.int64)
        for row, value in enumerate(raw):
            vector = self._vector(value, index)
            if vector is None:
                raise ConfigurationError(
                    f"{argument}: the model is multi-label with {self.num_labels} labels {self.label_names} but "
                    f"labels[{row}] is {value!r}. Expected a multi-hot vector of length {self.num_labels} (0/1) "
                    f"or a list of label names."
                )
            out[row] = vector
        return out

    def _vector(self, value: Any, index: Mapping[str, int]) -> np.ndarray | None:
        if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
            value = value.tolist()  # a tensor or numpy array
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            return None
        values = list(value)
        if not values:  # an empty list of label names: no label
            return np.zeros(self.num_labels, dtype=np.int64)
        if all(isinstance(v, str) for v in values):
            if any(v not in index for v in values):
                return None
            vector = np.zeros(self.num_labels, dtype=np.int64)
            vector[[index[v] for v in values]] = 1
            return vector
        if len(values) != self.num_labels:
            return None
        if not all(isinstance(v, (bool, int, float, np.integer, np.floating)) and v in (0, 1) for v in values):
            return None
        return np.asarray(values, dtype=np.int64)

    # ---- 2. model outputs to rows (torch) ------------------------------------------------------

    def forward(self, model: Any, inputs: Mapping[str, Any]) -> Any:
        """The model's logits ``[batch, L]`` for one collated batch."""
        return model_logits(model, inputs, f"a multi-label model must return logits [batch, {self.num_labels}]")

    def rows(self, index: np.ndarray, scores: Any, batch: Mapping[str, Any] | None = None) -> np.ndarray:
        import torch

        scores = scores.detach()
        if scores.dim() != 2 or scores.shape[-1] != self.num_labels or not torch.is_floating_point(scores):
            raise ConfigurationError(
                f"model: logits have shape {tuple(scores.shape)} ({scores.dtype}), expected float [batch, "
                f"{self.num_labels}] for the {self.num_labels} labels of a multi-label model. Check num_labels / id2label."
            )
        out = np.empty((len(index), 1 + self.row_width), dtype=np.float64)
        out[:, 0] = index
        out[:, 1] = 1.0
        out[:, 2:] = torch.sigmoid(scores.float()).cpu().numpy().astype(np.float32)
        return out

    # ---- 3. rows to predictions and scores ---------------------------------------------------

    def outputs(self, rows: np.ndarray, num_examples: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions int64 ``[N, L]`` at 0.5 and sigmoid probabilities float32 ``[N, L]``."""
        if rows.shape[0] != num_examples or not np.array_equal(rows[:, 0], np.arange(num_examples)):
            raise RuntimeError(f"internal error: gathered {rows.shape[0]} rows for {num_examples} held-out examples")
        scores = rows[:, 2:].astype(np.float32)
        return self.apply_threshold(scores, DEFAULT_THRESHOLD), scores

    # ---- 4. keys and metrics ---------------------------------------------------------------

    def sample_outputs(self) -> tuple[list[Any], list[Any]]:
        first = [1] + [0] * (self.num_labels - 1)
        return [first, first[::-1]], [first, first[::-1]]

    def metric_keys(self, *, with_scores: bool = True, with_cost: bool = False) -> list[str]:
        keys = [*_OVERALL, *_ROW_KEYS] + [f"{p}_{s}" for s in self.slugs for p in _PER_LABEL]
        if with_scores:
            keys += [f"{p}_{s}" for s in self.slugs for p in _PER_LABEL_SCORE]
        return keys

    def count_keys(self, *, with_cost: bool = False) -> list[str]:
        return [*_OVERALL] + [f"{p}_{s}" for s in self.slugs for p in _PER_LABEL]

    def metrics(
        self, labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray | None, *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, float]:
        """Every key of one held-out set, in :meth:`metric_keys` order (score keys when ``scores``)."""
        labels, predictions = self._check(labels, "labels"), self._check(predictions, "predictions")
        counts = self.statistic_values(self.statistics(labels, predictions), self.count_keys())
        result = {key: float(value[0]) for key, value in counts.items()}
        result.update(self._row_values(labels, predictions))
        if scores is not None:
            result.update(self._score_values(labels, np.asarray(scores)))
        return {key: result[key] for key in self.metric_keys(with_scores=scores is not None)}

    def _check(self, array: np.ndarray, argument: str) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[1] != self.num_labels or array.shape[0] == 0:
            raise ValueError(f"{argument}: expected a non-empty 0/1 array [N, {self.num_labels}]; got shape {array.shape}.")
        return array.astype(np.int64)

    @staticmethod
    def _row_values(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """``f1_samples`` and ``subset_accuracy`` (per-example keys), as scikit-learn computes them."""
        tp = (labels & predictions).sum(axis=1)
        f1 = _divide(2.0 * tp, labels.sum(axis=1) + predictions.sum(axis=1))
        return {"f1_samples": float(f1.mean()), "subset_accuracy": float((labels == predictions).all(axis=1).mean())}

    def _score_values(self, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        for l, slug in enumerate(self.slugs):
            column, positives = labels[:, l] == 1, int(labels[:, l].sum())
            if positives == 0:
                roc_auc, average_precision = float("nan"), 0.0
            else:
                tps, fps = _one_vs_rest_curve(column, scores[:, l].astype(np.float64))
                roc_auc = float("nan") if positives == labels.shape[0] else _roc_auc(tps, fps)
                average_precision = _average_precision(tps, fps)
            out[f"roc_auc_{slug}"] = roc_auc
            out[f"average_precision_{slug}"] = average_precision
        return out

    # ---- 5. sufficient statistics --------------------------------------------------------------

    def statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Per-label ``[[tn, fp], [fn, tp]]``, int64 ``[L, 2, 2]`` (``multilabel_confusion_matrix``); the
        sum of :meth:`example_statistics`, computed without its ``[N, L, 2, 2]`` array."""
        labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
        tp = (labels & predictions).sum(axis=0)
        fp = ((1 - labels) & predictions).sum(axis=0)
        fn = (labels & (1 - predictions)).sum(axis=0)
        tn = labels.shape[0] - tp - fp - fn
        return np.stack([np.stack([tn, fp], axis=-1), np.stack([fn, tp], axis=-1)], axis=-2)

    def example_statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Each example's per-label matrices, int64 ``[N, L, 2, 2]``: one 1 per label, in cell
        (true, predicted)."""
        labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
        stats = np.zeros((*labels.shape, 2, 2), dtype=np.int64)
        rows, columns = np.indices(labels.shape)
        stats[rows, columns, labels, predictions] = 1
        return stats

    def statistic_values(
        self, stats: np.ndarray, keys: Sequence[str], *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, np.ndarray]:
        """Count-based ``keys`` of per-label matrices ``[B, L, 2, 2]`` (or one ``[L, 2, 2]``) -> ``{key: [B]}``."""
        counts = np.asarray(stats, dtype=np.float64)
        if counts.ndim == 3:
            counts = counts[None]
        tn, fp, fn, tp = counts[..., 0, 0], counts[..., 0, 1], counts[..., 1, 0], counts[..., 1, 1]
        support = tp + fn
        precision, recall, f1 = _divide(tp, tp + fp), _divide(tp, support), _divide(2.0 * tp, 2.0 * tp + fp + fn)
        stp, sfp, sfn = tp.sum(-1), fp.sum(-1), fn.sum(-1)
        overall = {
            "precision_micro": lambda: _divide(stp, stp + sfp),
            "recall_micro": lambda: _divide(stp, stp + sfn),
            "f1_micro": lambda: _divide(2.0 * stp, 2.0 * stp + sfp + sfn),
            "precision_macro": lambda: precision.mean(-1),
            "recall_macro": lambda: recall.mean(-1),
            "f1_macro": lambda: f1.mean(-1),
            "f1_weighted": lambda: _divide((f1 * support).sum(-1), support.sum(-1)),
            "hamming_loss": lambda: _divide(sfp + sfn, (tn + fp + fn + tp).sum(-1)),
        }
        per_label = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        return pick_keys(keys, overall, per_label, self.slugs, f"a count-based multi-label key; known: {self.count_keys()}")

    def score_values(self, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        """Keys that need the rows (for the row bootstrap): the score keys, and ``f1_samples`` and
        ``subset_accuracy`` at the default threshold 0.5."""
        labels, scores = np.asarray(labels, dtype=np.int64), np.asarray(scores)
        out = self._score_values(labels, scores)
        out.update(self._row_values(labels, self.apply_threshold(scores, DEFAULT_THRESHOLD)))
        return out

    def resample(self, stats: np.ndarray, *, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """``[R, L, 2, 2]``: each label's four cells drawn independently (multinomial of N); see the
        module docstring for what this ignores."""
        cm = np.asarray(stats, dtype=np.int64)
        n = int(cm[0].sum())
        draws = [rng.multinomial(n, cm[l].ravel() / n, size=resamples) for l in range(cm.shape[0])]
        return np.stack(draws, axis=1).reshape(resamples, *cm.shape)

    def resample_paired(
        self, labels: np.ndarray, first: np.ndarray, second: np.ndarray, *, resamples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Examples drawn with replacement (as multinomial weights over the N examples, so labels of one
        example and both checkpoints' predictions of it stay together)."""
        labels = np.asarray(labels, dtype=np.int64)
        n = labels.shape[0]
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)  # [R, N]

        def drawn(predictions: np.ndarray) -> np.ndarray:
            predictions = np.asarray(predictions, dtype=np.int64)
            tp = weights @ (labels & predictions)
            fp = weights @ ((1 - labels) & predictions)
            fn = weights @ (labels & (1 - predictions))
            tn = n - tp - fp - fn
            return np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], -2)

        return drawn(first), drawn(second), (self.statistics(labels, first), self.statistics(labels, second))

    # ---- 6. decision thresholds ------------------------------------------------------------

    def threshold_cuts(self, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-label 2 x 2 matrices at every cut of ONE label's scores: ``labels`` / ``scores`` ``[N]``
        (a column). The same cut rule as the single-label task."""
        from . import SingleLabel

        return SingleLabel(["0", "1"]).threshold_cuts(np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64))

    def tune_thresholds(self, labels: np.ndarray, scores: np.ndarray, objective: Any) -> dict[str, float]:
        """One threshold per label name: the cut maximising that label's F1, or the objective when it is
        a key of that label (``recall_toxic``), under the constraints on that label's keys; ties as in
        :func:`trainer_ext.thresholds.tune_threshold` (closest to 0.5)."""
        from ..thresholds import _best_cut

        labels, scores = np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64)
        out: dict[str, float] = {}
        for l, (name, slug) in enumerate(zip(self.label_names, self.slugs)):
            own = {f"{p}_{slug}": p for p in _PER_LABEL}
            metric = objective.metric if objective.metric in own and own[objective.metric] != "support" else f"f1_{slug}"
            constraints = [c for c in objective.constraints if c.metric in own]
            ties = [k for k in objective.tie_breakers if k in own and k != metric]
            local = objective.replace(
                metric=metric, greater_is_better=True, tie_breakers=ties,
                constraints=[f"{c.metric} {c.op} {c.bound!r}" for c in constraints],
                tune_threshold=False, bootstrap_resamples=0,
            )
            cms, thresholds = self.threshold_cuts(labels[:, l], scores[:, l])
            counts = _binary_values(cms)
            values = {f"{p}_{slug}": counts[f"{p}_1"] for p in _PER_LABEL}
            best, _ = _best_cut(values, thresholds, local)
            out[name] = float(thresholds[best])
        return out

    def thresholds_of(self, threshold: Any) -> np.ndarray:
        """Per-label thresholds ``[L]`` from a float, ``{label: t}`` (names or slugs) or the
        ``config.json`` form ``{"thresholds": {...}}``; labels left out keep 0.5."""
        if isinstance(threshold, Mapping) and "thresholds" in threshold:
            threshold = threshold["thresholds"]
        if isinstance(threshold, Mapping):
            index = {name: i for i, name in enumerate(self.label_names)}
            index.update({slug: i for i, slug in enumerate(self.slugs)})
            unknown = [k for k in threshold if k not in index]
            if unknown:
                raise ConfigurationError(f"threshold: unknown label(s) {unknown}; labels: {self.label_names}.")
            out = np.full(self.num_labels, DEFAULT_THRESHOLD)
            for key, value in threshold.items():
                out[index[key]] = float(value)
            return out
        return np.full(self.num_labels, float(threshold))

    def apply_threshold(self, scores: np.ndarray, threshold: Any) -> np.ndarray:
        """0/1 int64 ``[N, L]``: label l where its probability is at least its threshold."""
        return (np.asarray(scores) >= self.thresholds_of(threshold)[None, :]).astype(np.int64)

    def predict_tensor(self, logits: Any, setting: Mapping[str, Any] | None) -> Any:
        """0/1 predictions of a logits tensor ``[batch, L]`` (torch) at the stored thresholds (0.5 without)."""
        import torch

        cut = torch.as_tensor(self.thresholds_of(setting or DEFAULT_THRESHOLD), dtype=torch.float32, device=logits.device)
        return (torch.sigmoid(logits.float()) >= cut).long()

    def threshold_config(self, threshold: Any) -> dict[str, Any]:
        return {"thresholds": {name: float(t) for name, t in zip(self.label_names, self.thresholds_of(threshold))}}

    def threshold_from_config(self, setting: Mapping[str, Any]) -> dict[str, float]:
        return {name: float(t) for name, t in zip(self.label_names, self.thresholds_of(setting))}

    # ---- 7. the task's checks of an objective ------------------------------------------------

    def check_objective(self, objective: Any) -> None:
        if objective.cost_matrix is not None or objective.class_prior is not None:
            raise ConfigurationError(
                "cost_matrix: a cost matrix (and class_prior) is single-label only; this model is multi-label "
                f"with labels {self.label_names}. Use per-label keys such as 'recall_{self.slugs[0]}' with constraints."
            )

    # ---- 8. the statistics as people read them -------------------------------------------------

    def statistics_tables(self, stats: Any) -> list[dict[str, Any]]:
        """One row per label: its 2 x 2 matrix ``[[tn, fp], [fn, tp]]`` (scikit-learn's
        ``multilabel_confusion_matrix``) read row by row, in label order (``[]`` for an empty matrix)."""
        cms = np.asarray(stats, dtype=np.int64)
        if cms.size == 0:
            return []
        return [{
            "title": "Per-label confusion counts (each label's [[tn, fp], [fn, tp]], as scikit-learn's "
            "multilabel_confusion_matrix)",
            "corner": "label", "columns": ["true negative", "false positive", "false negative", "true positive"],
            "index": list(self.label_names), "data": cms.reshape(self.num_labels, 4).tolist(),
        }]


def _binary_values(cms: np.ndarray) -> dict[str, np.ndarray]:
    """precision/recall/f1/support of class ``1`` of binary matrices ``[K, 2, 2]``."""
    from ..metrics import count_metric_values

    return count_metric_values(cms, ["0", "1"], ["precision_1", "recall_1", "f1_1", "support_1"])
