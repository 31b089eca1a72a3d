"""What a *task* is: everything that depends on the model's head, in one object.

The rest of the package (evaluation, scoring, uncertainty, thresholds, selection, records, the
callback, the CLI) handles labels, predictions, scores and statistics as opaque arrays and asks the
task what they mean. Only this module knows about softmax, argmax, class ids and confusion matrices.
It imports neither torch nor transformers at module level: the three methods that touch model
outputs (:meth:`Task.forward`, :meth:`Task.rows`, and the probe built on them) import torch when
called, so the pure part is usable and testable with numpy alone.

:class:`SingleLabel` (``name = "single_label"``) is today's behaviour: one class per example,
``C >= 2`` logits, softmax probabilities, argmax predictions, the ``C x C`` confusion matrix as the
sufficient statistic, and a decision threshold on the probability of class id 1 for binary models.

What a new task implements
--------------------------
Subclass :class:`Task` and give it a ``name`` (written in records: ``"multi_label"``, ``"token"``,
``"regression"``, ...). Then, in the order the data flows:

1. **Held-out labels**: :meth:`Task.read_labels` turns a column of raw labels (ids, names, vectors,
   per-token lists) into one validated numpy array, raising :class:`~trainer_ext.errors.ConfigurationError`
   that names the argument, what was found and what is expected; :meth:`Task.label_bytes` gives the
   bytes that enter the held-out set's fingerprint.
2. **Model outputs to rows** (torch, lazily imported): :meth:`Task.forward` runs the model on one
   collated batch and returns its score tensor; :meth:`Task.rows` turns it into float64 rows whose
   column 0 is the example's index in the held-out set. Rows are what is gathered across processes,
   then sorted by column 0 (stable). A task may give several rows per example (token
   classification: one per labelled token, in token order); :attr:`Task.row_width` is the number of
   columns after the index.
3. **Rows to predictions and scores**: :meth:`Task.outputs` turns the gathered, sorted rows back
   into ``(predictions, scores)`` (``scores`` None when the model gives predictions only), checking
   that every example is there.
4. **Keys and metrics**: :meth:`Task.metric_keys` lists the keys this task computes (their
   directions and kinds come from the key registry, :data:`trainer_ext.metrics.KEY_RULES`: a task adds
   its rows there); :meth:`Task.metrics` computes them for one held-out set.
5. **Sufficient statistics**: :meth:`Task.statistics` (additive over disjoint sets of examples, so
   processes may sum theirs; what the record keeps as ``confusion_matrix``),
   :meth:`Task.statistic_values` (count-based keys of a batch of statistics: one checkpoint, bootstrap
   resamples or threshold cuts), :meth:`Task.resample` and :meth:`Task.resample_paired` (bootstrap
   draws of the statistics, the latter keeping two checkpoints' predictions of each example together),
   and :meth:`Task.score_values` for keys that need the rows (resampled by rows). A task without
   statistics (regression) returns None from :meth:`Task.statistics` and :meth:`Task.count_keys` is
   empty: every key is then resampled by rows.
6. **Decision thresholds**: :meth:`Task.threshold_cuts` (the statistics at every candidate cut of the
   scores), :meth:`Task.apply_threshold`, and :meth:`Task.threshold_config` /
   :meth:`Task.threshold_from_config` (the ``decision_threshold`` entry of ``config.json``).
7. **The task's checks of an objective**: :meth:`Task.check_objective` (cost-matrix size, which
   thresholds can be tuned, ...).
8. **The statistics as people read them**: :meth:`Task.statistics_tables` (the trackers and the
   report show a record's ``confusion_matrix`` through it); default ``[]``.

The selection-corrected estimate (:mod:`trainer_ext.estimate`) also needs
:meth:`Task.example_statistics`, the per-example statistics whose sum is :meth:`Task.statistics`
(default None: the task's keys get no estimate).

How the tasks of the next issue fit this interface, without changing it:

* multi-label: rows of L sigmoid probabilities; statistics ``[L, 2, 2]``; per-label thresholds
  (``threshold`` a dict, ``config.json`` ``{"thresholds": {label: t}}``); resampling draws example
  rows (labels of one example are not independent).
* regression: one score column, no statistics (:meth:`Task.statistics` is None), every key by rows.
* token classification: several rows per example (index, label, prediction per labelled token);
  statistics the per-entity TP/FP/FN per sentence, summed for the metrics; :meth:`Task.resample`
  draws sentences.
* label words on a causal LM: :meth:`Task.forward` sums the log-probabilities of each class's label
  tokens after the prompt; from there on it is exactly :class:`SingleLabel` (a subclass).
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigurationError, TrainerExtWarning
from ..metrics import (
    class_slugs,
    confusion_matrix,
    count_metric_values,
    metric_keys,
    score_metrics,
    slugify,
)

__all__ = ["TASK_NAMES", "SingleLabel", "Task", "as_task", "label_names_of", "task_for_model", "task_from_record"]

TASK_NAMES = ("single_label", "multi_label", "token", "regression")
THRESHOLD_CLASS_ID = 1  # a binary model's threshold is on the probability of class id 1


class Task(ABC):
    """The interface every task implements (see the module docstring). Stateless after construction
    apart from its classes; instances compare equal when their name and classes are equal."""

    name: ClassVar[str] = ""

    def __init__(self, label_names: Sequence[str]) -> None:
        self.slugs: list[str] = class_slugs(list(label_names))
        self.label_names: list[str] = [str(n) for n in label_names]

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.label_names == self.label_names  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.label_names)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label_names!r})"

    # ---- 1. held-out labels ------------------------------------------------------------------

    @abstractmethod
    def read_labels(self, raw: Sequence[Any], *, argument: str) -> np.ndarray:
        ...

    def label_bytes(self, labels: np.ndarray) -> bytes:
        return np.ascontiguousarray(labels).tobytes()

    def check_features(self, labels: np.ndarray, features: Sequence[Mapping[str, Any]], *, argument: str) -> None:
        """Raise a ConfigurationError naming ``argument`` when the labels do not fit the model inputs
        (token classification: one label per token). Default: nothing to check."""

    # ---- 2. model outputs to rows (torch) ------------------------------------------------------

    @property
    @abstractmethod
    def row_width(self) -> int:
        """Columns of a row after the example index."""

    @abstractmethod
    def forward(self, model: Any, inputs: Mapping[str, Any]) -> Any:
        ...

    @abstractmethod
    def rows(self, index: np.ndarray, scores: Any, batch: Mapping[str, Any] | None = None) -> np.ndarray:
        ...

    # ---- 3. rows to predictions and scores ---------------------------------------------------

    @abstractmethod
    def outputs(self, rows: np.ndarray, num_examples: int) -> tuple[np.ndarray, np.ndarray | None]:
        ...

    def broken_examples(self, scores: np.ndarray | None) -> int:
        """How many examples have NaN scores (a diverged model): such a checkpoint cannot be scored."""
        if scores is None:
            return 0
        scores = np.asarray(scores)
        return int(np.isnan(scores.reshape(scores.shape[0], -1)).any(axis=1).sum())

    # ---- 4. keys and metrics ---------------------------------------------------------------

    @abstractmethod
    def sample_outputs(self) -> tuple[list[Any], list[Any]]:
        """``(references, predictions)`` of two examples, for a dry run of an ``evaluate`` module
        (to learn which keys it returns)."""

    @abstractmethod
    def metric_keys(self, *, with_scores: bool = True, with_cost: bool = False) -> list[str]:
        """Every key, in canonical order; ``with_cost``: the objective has a cost matrix."""
        ...

    @abstractmethod
    def count_keys(self, *, with_cost: bool = False) -> list[str]:
        """Keys computed from :meth:`statistics` alone (resampled by counts)."""
        ...

    @abstractmethod
    def metrics(
        self, labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray | None, *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, float]:
        ...

    # ---- 5. sufficient statistics --------------------------------------------------------------

    @abstractmethod
    def statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray | None:
        ...

    @abstractmethod
    def statistic_values(
        self, stats: np.ndarray, keys: Sequence[str], *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, np.ndarray]:
        ...

    def resampling_statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray | None:
        """What :meth:`resample` draws from: by default :meth:`statistics` (a confusion matrix is
        resampled as counts); a task whose examples must be drawn whole returns per-example statistics
        (token classification: ``[N, ...]`` per sentence)."""
        return self.statistics(labels, predictions)

    def example_statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray | None:
        """Per-example statistics ``[N, *S]`` whose sum over the examples is :meth:`statistics`
        (``[N, C, C]`` one-hot for a single-label task), so that any resample of examples is a weighted
        sum: what the selection-corrected estimate (:mod:`trainer_ext.estimate`) draws from. None for a
        task without statistics (its keys are then not resampled from counts)."""
        return None

    @abstractmethod
    def score_values(self, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        ...

    @abstractmethod
    def resample(self, stats: np.ndarray, *, resamples: int, rng: np.random.Generator) -> np.ndarray:
        ...

    @abstractmethod
    def resample_paired(
        self, labels: np.ndarray, first: np.ndarray, second: np.ndarray, *, resamples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``(stats_first [R, ...], stats_second [R, ...], (observed_first, observed_second))``: paired
        bootstrap draws, each resample drawing the same examples for both checkpoints."""
        ...

    # ---- 6. decision thresholds ------------------------------------------------------------

    @abstractmethod
    def threshold_cuts(self, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...

    @abstractmethod
    def apply_threshold(self, scores: np.ndarray, threshold: Any) -> np.ndarray:
        ...

    @abstractmethod
    def threshold_config(self, threshold: Any) -> dict[str, Any]:
        ...

    @abstractmethod
    def threshold_from_config(self, setting: Mapping[str, Any]) -> Any:
        ...

    # ---- 7. the task's checks of an objective ------------------------------------------------

    @abstractmethod
    def check_objective(self, objective: Any) -> None:
        ...

    # ---- 8. the statistics as people read them -------------------------------------------------

    def statistics_tables(self, stats: Any) -> list[dict[str, Any]]:
        """How :meth:`statistics` (a record's ``confusion_matrix``) reads for people, as tables the
        trackers and the report show, so that no reader guesses a layout from a shape (a multi-label
        ``[L, 2, 2]`` is no ``C x C`` matrix). Each table is ``{"title", "corner", "columns", "index",
        "data"}``: row ``i`` of ``data`` is named ``index[i]``, its values are under ``columns``, and
        ``corner`` says what the rows (and columns) are. JSON-ready (str and int). Default ``[]``: a task
        without statistics (regression) shows none."""
        return []


class SingleLabel(Task):
    """One class per example out of ``C >= 2`` (``AutoModelForSequenceClassification``, single label).

    Rows: ``[index, prediction, has_scores, p_0 .. p_{C-1}]`` with ``p`` the softmax of the logits
    (float32 precision) and the prediction its argmax (ties to the lowest id); a model that returns
    class ids ``[batch]`` gives ``has_scores = 0`` and NaN probabilities. Statistics: the ``C x C``
    confusion matrix (rows true class, columns predicted, id order). Keys: those of
    :func:`trainer_ext.metrics.metric_keys`, plus ``expected_cost`` when the objective has a cost
    matrix. Threshold (binary only): class id 1 is predicted when its probability is at least the
    threshold; stored in ``config.json`` as ``{"class_id": 1, "threshold": t}``.
    """

    name: ClassVar[str] = "single_label"

    @property
    def num_classes(self) -> int:
        return len(self.slugs)

    @property
    def row_width(self) -> int:  # type: ignore[override]
        return 2 + self.num_classes

    # ---- 1. held-out labels ------------------------------------------------------------------

    def read_labels(self, raw: Sequence[Any], *, argument: str) -> np.ndarray:
        """Class ids (ints, or floats with integer values) or class names (as given or as slugs)
        -> int64 ``[N]``. Anything else, or an id outside ``0..C-1``, is a ConfigurationError."""
        by_name = {name: i for i, name in enumerate(self.label_names)}
        by_slug = {slug: i for i, slug in enumerate(self.slugs)}
        out = np.empty(len(raw), dtype=np.int64)
        bad: list[Any] = []
        for i, value in enumerate(raw):
            class_id = self._class_id(value, by_name, by_slug)
            if class_id is None or not 0 <= class_id < self.num_classes:
                bad.append(value)
            else:
                out[i] = class_id
        if bad:
            shown = sorted({repr(b) for b in bad})[:5]
            raise ConfigurationError(
                f"{argument}: {len(bad)} label(s) are outside the model's classes, e.g. {', '.join(shown)}. "
                f"Allowed: class ids 0..{self.num_classes - 1} or names {self.label_names}."
            )
        return out

    @staticmethod
    def _class_id(value: Any, by_name: Mapping[str, int], by_slug: Mapping[str, int]) -> int | None:
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item") and not isinstance(value, np.bool_):
            value = value.item()  # a 0-d tensor or numpy scalar
        if isinstance(value, (bool, np.bool_)) or value is None:
            return None
        if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        if isinstance(value, str):
            if value in by_name:
                return by_name[value]
            try:
                return by_slug.get(slugify(value))
            except ValueError:
                return None
        return None

    # ---- 2. model outputs to rows (torch) ------------------------------------------------------

    def forward(self, model: Any, inputs: Mapping[str, Any]) -> Any:
        """The model's logits ``[batch, C]`` (or predicted ids ``[batch]``) for one collated batch."""
        return model_logits(
            model, inputs, "trainer_ext needs a sequence classifier returning logits [batch, classes] "
            "(or predicted class ids [batch])",
        )

    def rows(self, index: np.ndarray, scores: Any, batch: Mapping[str, Any] | None = None) -> np.ndarray:
        import torch

        scores = scores.detach()
        out = np.empty((len(index), 1 + self.row_width), dtype=np.float64)
        out[:, 0] = index
        if scores.dim() == 1 and not torch.is_floating_point(scores):  # predicted ids, no scores
            out[:, 1] = scores.cpu().numpy()
            out[:, 2] = 0.0
            out[:, 3:] = math.nan
            return out
        if scores.dim() != 2 or scores.shape[-1] != self.num_classes:
            raise ConfigurationError(
                f"model: logits have shape {tuple(scores.shape)}, expected [batch, {self.num_classes}] for the "
                f"{self.num_classes} classes of the held-out labels. Check num_labels / id2label."
            )
        probabilities = torch.softmax(scores.float(), dim=-1)
        out[:, 1] = probabilities.argmax(dim=-1).cpu().numpy()
        out[:, 2] = 1.0
        out[:, 3:] = probabilities.cpu().numpy().astype(np.float32)
        return out

    # ---- 3. rows to predictions and scores ---------------------------------------------------

    def outputs(self, rows: np.ndarray, num_examples: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions int64 ``[N]`` and probabilities float32 ``[N, C]`` (None for a model giving ids).
        NaN probabilities stay NaN (see :meth:`broken_examples`); their prediction is then meaningless."""
        if rows.shape[0] != num_examples or not np.array_equal(rows[:, 0], np.arange(num_examples)):
            raise RuntimeError(f"internal error: gathered {rows.shape[0]} rows for {num_examples} held-out examples")
        predictions = np.nan_to_num(rows[:, 1]).astype(np.int64)
        gives_scores = num_examples == 0 or bool(rows[:, 2].all())
        return predictions, rows[:, 3:].astype(np.float32) if gives_scores else None

    # ---- 4. keys and metrics ---------------------------------------------------------------

    def sample_outputs(self) -> tuple[list[Any], list[Any]]:
        return [0, 1], [0, 1]

    def metric_keys(self, *, with_scores: bool = True, with_cost: bool = False) -> list[str]:
        return metric_keys(self.slugs, with_scores=with_scores) + (["expected_cost"] if with_cost else [])

    def count_keys(self, *, with_cost: bool = False) -> list[str]:
        return self.metric_keys(with_scores=False, with_cost=with_cost)

    def metrics(
        self, labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray | None, *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, float]:
        """Every key of one held-out set (see :func:`trainer_ext.metrics.compute_metrics`), plus
        ``expected_cost`` when a cost matrix is given."""
        from ..metrics import compute_metrics

        result = compute_metrics(labels, predictions, scores, label_names=self.slugs)
        if cost_matrix is not None:
            stats = self.statistics(labels, predictions)
            cost = self.statistic_values(stats, ["expected_cost"], cost_matrix=cost_matrix, class_prior=class_prior)
            result["expected_cost"] = float(cost["expected_cost"][0])
        return result

    # ---- 5. sufficient statistics --------------------------------------------------------------

    def statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        return confusion_matrix(labels, predictions, self.num_classes)

    def statistic_values(
        self, stats: np.ndarray, keys: Sequence[str], *, cost_matrix: Any = None, class_prior: Any = None
    ) -> dict[str, np.ndarray]:
        """Count-based ``keys`` of confusion matrices ``[B, C, C]`` (or one ``[C, C]``) -> ``{key: [B]}``."""
        cost = None if cost_matrix is None else np.asarray(cost_matrix, dtype=np.float64)
        prior = None if class_prior is None else np.asarray(class_prior, dtype=np.float64)
        return count_metric_values(stats, self.slugs, keys, cost_matrix=cost, class_prior=prior)

    def example_statistics(self, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """One-hot ``[N, C, C]``: example n adds 1 to cell (label, prediction)."""
        labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
        stats = np.zeros((labels.size, self.num_classes, self.num_classes), dtype=np.int64)
        stats[np.arange(labels.size), labels, predictions] = 1
        return stats

    def score_values(self, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        return score_metrics(labels, scores, self.slugs)

    def resample(self, stats: np.ndarray, *, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """Bootstrap resamples of N examples from one confusion matrix: a multinomial draw of N over the
        ``C x C`` cells, ``[R, C, C]``; O(resamples x C^2) whatever N is."""
        cm = np.asarray(stats, dtype=np.int64)
        n = int(cm.sum())
        return rng.multinomial(n, cm.ravel() / n, size=resamples).reshape(resamples, *cm.shape)

    def resample_paired(
        self, labels: np.ndarray, first: np.ndarray, second: np.ndarray, *, resamples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Each example falls in one of C^3 joint cells (true class, first's prediction, second's); one
        multinomial draw over those cells gives both resampled confusion matrices, pairing kept."""
        c = self.num_classes
        labels = np.asarray(labels, dtype=np.int64)
        joint = (labels * c + np.asarray(first, dtype=np.int64)) * c + np.asarray(second, dtype=np.int64)
        counts = np.bincount(joint, minlength=c**3)
        n = int(counts.sum())
        draws = rng.multinomial(n, counts / n, size=resamples).reshape(resamples, c, c, c)
        base = counts.reshape(c, c, c)
        return draws.sum(axis=3), draws.sum(axis=2), (base.sum(axis=2), base.sum(axis=1))

    # ---- 6. decision thresholds ------------------------------------------------------------

    def threshold_cuts(self, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confusion matrices ``[K, 2, 2]`` at every cut between distinct scores, and the threshold of
        each cut, from the highest score down (one cumulative pass, O(N log N)).

        ``scores``: probabilities ``[N, 2]`` or ``[N]`` of class id 1. Cut k predicts class 1 for the k
        highest-scored examples; its threshold is the midpoint between the last score predicted 1 and
        the next one down (so held-out predictions are exactly those of the cut and it does not sit on
        a held-out score); above every score, the next float up; below every score, half the lowest.
        """
        labels = np.asarray(labels, dtype=np.int64)
        scores = self._positive_scores(scores)
        order = np.argsort(-scores, kind="stable")
        sorted_scores = scores[order]
        is_positive = labels[order] == THRESHOLD_CLASS_ID
        distinct_end = np.flatnonzero(np.diff(sorted_scores) != 0) + 1
        cut_sizes = np.concatenate(([0], distinct_end, [scores.size]))
        tp = np.concatenate(([0], np.cumsum(is_positive)))[cut_sizes]
        fp = cut_sizes - tp
        positives, negatives = int(is_positive.sum()), int(scores.size - is_positive.sum())
        cms = np.empty((cut_sizes.size, 2, 2), dtype=np.float64)
        cms[:, 0, 0] = negatives - fp
        cms[:, 0, 1] = fp
        cms[:, 1, 0] = positives - tp
        cms[:, 1, 1] = tp
        upper = np.concatenate(([np.inf], sorted_scores[cut_sizes[1:] - 1]))
        lower = np.concatenate((sorted_scores[cut_sizes[:-1]], [-np.inf]))
        thresholds = np.where(
            np.isinf(upper), np.nextafter(sorted_scores[0], np.inf) if scores.size else 1.0,
            np.where(np.isinf(lower), upper / 2.0, (upper + lower) / 2.0),
        )
        return cms, thresholds

    @staticmethod
    def _positive_scores(scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        return scores[:, THRESHOLD_CLASS_ID] if scores.ndim == 2 else scores

    def apply_threshold(self, scores: np.ndarray, threshold: Any) -> np.ndarray:
        """Class ids: 1 where the probability of class id 1 is at least ``threshold``, else 0.
        ``scores``: probabilities ``[N, 2]`` or ``[N]`` of class id 1."""
        return (self._positive_scores(scores) >= float(threshold)).astype(np.int64)

    @staticmethod
    def probabilities(logits: np.ndarray) -> np.ndarray:
        """Softmax over the classes of logits ``[N, C]`` (numpy, float64)."""
        shifted = np.asarray(logits, dtype=np.float64)
        shifted = shifted - shifted.max(axis=1, keepdims=True)
        return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)

    def predict_tensor(self, logits: Any, setting: Mapping[str, Any] | None) -> Any:
        """Predicted ids of a logits tensor ``[batch, C]`` (torch): argmax, or the stored threshold
        ``setting`` (``config.decision_threshold``) on the probability of its ``class_id``."""
        import torch

        if not setting:
            return logits.argmax(-1)
        probabilities = torch.softmax(logits, dim=-1)[:, int(setting.get("class_id", THRESHOLD_CLASS_ID))]
        return (probabilities >= self.threshold_from_config(setting)).long()

    def threshold_config(self, threshold: Any) -> dict[str, Any]:
        return {"class_id": THRESHOLD_CLASS_ID, "threshold": float(threshold)}

    def threshold_from_config(self, setting: Mapping[str, Any]) -> float:
        return float(setting["threshold"])

    # ---- 7. the task's checks of an objective ------------------------------------------------

    def check_objective(self, objective: Any) -> None:
        """Raise when the cost matrix, prior or threshold tuning does not fit the classes."""
        c = self.num_classes
        cost = objective.cost_matrix
        if cost is not None and (len(cost) != c or any(len(row) != c for row in cost)):
            shape = f"{len(cost)}x{len(cost[0]) if cost else 0}"
            raise ConfigurationError(
                f"cost_matrix: expected {c}x{c} (rows true class, columns predicted, id order); got {shape}."
            )
        if objective.class_prior is not None and len(objective.class_prior) != c:
            raise ConfigurationError(
                f"class_prior: expected {c} shares (one per class, id order); got {len(objective.class_prior)}."
            )
        if objective.tune_threshold and c != 2:
            raise ConfigurationError(
                f"tune_threshold: decision-threshold tuning is binary-only; the model has {c} classes."
            )

    # ---- 8. the statistics as people read them -------------------------------------------------

    def statistics_tables(self, stats: Any) -> list[dict[str, Any]]:
        """The ``C x C`` confusion matrix: rows true class, columns predicted class, id order (``[]`` for
        an empty matrix: a record rebuilt from a leaderboard entry has none)."""
        cm = np.asarray(stats, dtype=np.int64)
        if cm.size == 0:
            return []
        names = list(self.label_names)
        return [{
            "title": "Confusion matrix (rows: true class, columns: predicted class)", "corner": "true \\ predicted",
            "columns": names, "index": names, "data": cm.reshape(len(names), len(names)).tolist(),
        }]


# ---- which task a model is --------------------------------------------------------------------


def model_logits(model: Any, inputs: Mapping[str, Any], needs: str) -> Any:
    """Run ``model`` on one collated batch and return its score tensor: the output itself when it is a
    tensor, its ``logits``, or the first element of a tuple; else a ConfigurationError saying what the
    task ``needs``. Every task's :meth:`Task.forward` reads the model's output through it."""
    import torch

    output = model(**inputs)
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if logits is None:
        raise ConfigurationError(f"model: its output ({type(output).__name__}) has no 'logits'; {needs}.")
    return logits


def label_names_of(model: Any, *, required: bool = True) -> list[str] | None:
    """Class names in id order from ``model.config.id2label``; None (or ConfigurationError when
    ``required``) when the model has none."""
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None)
    if not id2label:
        if not required:
            return None
        raise ConfigurationError(
            "label_names: the model has no config.id2label; pass label_names=['NEGATIVE', 'POSITIVE', ...]."
        )
    return [str(id2label[i]) for i in sorted(int(k) for k in id2label)]


def _generic(names: Sequence[str]) -> bool:
    """transformers' placeholder names LABEL_0, LABEL_1, ..."""
    return all(str(n) == f"LABEL_{i}" for i, n in enumerate(names))


def task_for_model(model: Any, *, label_names: Sequence[str] | None = None, task: str | Task | None = None) -> Task:
    """The task of ``model``: ``task`` when given (a :class:`Task`, or a name of :data:`TASK_NAMES`),
    else read from the model: ``config.problem_type == "multi_label_classification"`` -> multi-label;
    ``problem_type == "regression"`` or ``num_labels == 1`` -> regression; a ``*ForTokenClassification``
    model -> token classification; otherwise single-label.

    Classes: ``label_names`` when given, else ``model.config.id2label``. When both are given and the
    model's names are not transformers' placeholders ``LABEL_i`` but differ, a
    :class:`~trainer_ext.errors.TrainerExtWarning` says that ids are read in ``label_names`` order.
    """
    if isinstance(task, Task):
        return task
    if task is not None and task not in TASK_NAMES:
        raise ConfigurationError(f"task: expected one of {list(TASK_NAMES)} or a trainer_ext Task; got {task!r}.")
    name = task if task is not None else _task_name_of(model)
    if name == "regression":
        from .regression import Regression

        return Regression(list(label_names) if label_names is not None else (label_names_of(model, required=False) or ["value"]))
    names = list(label_names) if label_names is not None else label_names_of(model)
    model_names = label_names_of(model, required=False)
    if label_names is not None and model_names and not _generic(model_names) and [slugify(n) for n in model_names] != [
        slugify(n) for n in label_names
    ]:
        warnings.warn(
            f"BestCheckpointCallback: label_names={list(label_names)} differ from the model's id2label "
            f"{model_names}; class ids are read in label_names order. Check that id i means the same class "
            f"in the held-out labels and in the model.",
            TrainerExtWarning,
            stacklevel=3,
        )
    return _task_class(name)(names)


def _task_name_of(model: Any) -> str:
    """The task name a model's head implies (see :func:`task_for_model`)."""
    config = getattr(model, "config", None)
    problem_type = getattr(config, "problem_type", None)
    if problem_type == "multi_label_classification":
        return "multi_label"
    if problem_type == "regression" or getattr(config, "num_labels", None) == 1:
        return "regression"
    base = getattr(model, "get_base_model", None)  # a PEFT wrapper: the class of the model inside
    inner = base() if callable(base) else model
    if type(inner).__name__.endswith("ForTokenClassification"):
        return "token"
    return "single_label"


def _task_class(name: str | None) -> type[Task]:
    """The class of a task name of :data:`TASK_NAMES` (None: single-label, records before ``task``)."""
    if name in (None, SingleLabel.name, "label_words"):
        # label_words: a record keeps the classes, not the label texts; ranking and reports need only
        # what comes after the forward pass, which is SingleLabel's.
        return SingleLabel
    if name == "multi_label":
        from .multi_label import MultiLabel

        return MultiLabel
    if name == "regression":
        from .regression import Regression

        return Regression
    if name == "token":
        try:
            from .token import TokenClassification
        except ImportError as error:
            raise ConfigurationError(f"task: token classification is not available in this trainer_ext ({error}).") from None
        return TokenClassification
    raise ConfigurationError(f"task: this trainer_ext does not know the task {name!r}; known: {list(TASK_NAMES)}.")


def as_task(task: Task | Sequence[str]) -> Task:
    """``task`` itself, or the single-label task of these class slugs (the first version's calls)."""
    return task if isinstance(task, Task) else SingleLabel(list(task))


def task_from_record(name: str | None, label_names: Sequence[str]) -> Task:
    """The task a record was written with; records written before the ``task`` field are single-label."""
    return _task_class(name)(label_names)
