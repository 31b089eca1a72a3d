"""How will the chosen checkpoint do on new data? A selection-corrected estimate. Pure: numpy only.

The value the leaderboard reports for the chosen checkpoint is the best of several noisy measurements
on the same held-out set, so on average it is too high (the winner's curse): with 20 checkpoints whose
true ``recall_negative`` lies within 0.04 of each other and 400 negative reviews, the pick's reported
value was 0.043 above its true value on average (the estimate: 0.000). The bootstrap bias correction of Tsamardinos,
Greasidou and Borboudakis ("Bootstrapping the out-of-sample predictions for efficient and accurate
cross-validation", Machine Learning 107, 2018) estimates the pick's value without new data:

1. draw N examples with replacement from each held-out set (its own N, one draw per set);
2. choose the best checkpoint on those in-bag examples by every rule of the objective
   (:func:`trainer_ext.selection.choose_best`: NaN never best, constraints first, ``on_infeasible``,
   ``min_delta``, tie-breakers, the earlier checkpoint on a full tie);
3. score that choice on the out-of-bag examples (those not drawn, about 36.8 % of each set) with the
   objective's key;

``value`` is the mean of the out-of-bag scores over the resamples. Not used: ``require_significance``
(a paired test inside each of a thousand resamples would cost a thousand paired bootstraps each; the
resamples choose by value), and ``on_infeasible="raise"``, which in a resample chooses like
``least_violation`` (a resample without a feasible checkpoint still needs a choice). A tuned decision
threshold is taken as given: each checkpoint's predictions are those at its threshold, and the optimism
of tuning the threshold on the same held-out set is not corrected.

The interval. One resample's out-of-bag set holds about N / e examples, so the out-of-bag scores
spread like measurements on a set e times smaller than the held-out set: their plain percentiles
covered the pick's true value in 100 % of simulated held-out sets at 95 % (the paper calls them
conservative). ``low``/``high`` are therefore ``value`` plus the percentiles (at ``confidence``) of each
resample's deviation from ``value`` rescaled to the held-out set's size, ``(score_b - value) *
sqrt(n_oob_b / N)`` (N and n_oob_b summed over the sets the key reads); this covered the true value in
0.95-0.98 of simulated sets at 95 % (``tests/unit/test_estimate.py``).

A known limit: when many checkpoints sit close to a constraint's bound, each with a little more of the
objective the further it misses (precision falling slowly through the bound as recall rises), the
resamples, choosing on noisier data, pick further into the infeasible side than the held-out set does,
and the estimate keeps about half of the optimism (simulated: reported +0.027, estimate +0.015).

Every task with count-based keys: the resample draws examples (sentences for token classification)
and the keys are the task's own count formulas (:meth:`Task.statistic_values`) of the drawn examples'
statistics: the ``C x C`` confusion matrix of a single-label task (and label words), the per-label
``2 x 2`` matrices of a multi-label one (the labels of one example stay together), the per-type
``[TP, FP, FN]`` of a token-classification one. Every key the objective reads (its metric, each
constraint's, each tie-breaker) must be one of :meth:`Task.count_keys` (``expected_cost`` with a cost
matrix), with or without a held-out set's prefix. Not count-based, so refused: regression's keys and
multi-label's ``f1_samples`` / ``subset_accuracy`` (computed from each row). A key computed
from scores (``log_loss``, ``roc_auc_<c>``, ``average_precision_<c>``) would have to be recomputed from
every row, for every checkpoint, in every resample (resamples x checkpoints x N log N operations: for
1,000 x 50 x 100,000 about an hour in numpy), and a custom metric is a Python function of the rows:
both are refused with :class:`EstimateUnavailable`.

Speed: the examples of a held-out set are grouped by their joint pattern (label and the prediction of
every checkpoint; for the other tasks, every checkpoint's per-example statistics,
:meth:`Task.example_statistics`), resample indices are drawn one resample at a time and counted with
one ``np.bincount``, and each chunk of resamples' in-bag and out-of-bag counts of every checkpoint are
one matrix product per class (single-label, :class:`_ClassResampler`; multi-label as one binary set
per label sharing the draws, :class:`_PerLabelResampler`) or one product with the table of the
patterns' statistics (token classification, :class:`_StatisticResampler`). 50 checkpoints x 100,000
examples x 1,000 resamples: see ``scripts/bench_bootstrap.py`` (``--tasks`` for the other tasks).

Determinism: ``rng = np.random.default_rng(objective.seed)``; resample b draws, for each held-out set
in the order given, the indices ``floor(rng.random(N) * N)`` (held-out order; float64 uniforms, about
twice as fast as ``rng.integers`` and uniform to within N / 2**53). The same inputs and seed give the
same numbers on any machine and any number of processes (every process holds the same gathered
predictions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .objectives import Objective, is_score_based, known_direction
from .selection import choose_best
from .tasks import SingleLabel, Task, as_task
from .tasks.multi_label import MultiLabel
from .uncertainty import Interval, percentile_interval

__all__ = [
    "METHOD",
    "BestEstimate",
    "CheckpointPredictions",
    "EstimateUnavailable",
    "estimate_best",
    "estimate_for_leaderboard",
]

METHOD = "bootstrap_bias_corrected"

# Group examples by joint pattern only when that at least halves the rows of the matrix products.
_GROUP_WHEN_PATTERNS_BELOW = 0.5
# Rows x patterns per chunk of resamples (float32: 4 bytes each; in-bag and out-of-bag rows together).
_CHUNK_CELLS = 1 << 23
# float32 sums of whole numbers are exact below 2**24: larger sets count in float64.
_FLOAT32_EXACT_BELOW = 1 << 24


class EstimateUnavailable(ValueError):
    """The selection-corrected estimate cannot be computed for these inputs; the message says why
    (for the leaderboard's ``reason``: ``best_estimate`` is then ``null``)."""


@dataclass(frozen=True)
class CheckpointPredictions:
    """One checkpoint's per-example predictions on each held-out set (as the task gives them: class ids,
    multi-hot rows, per-token tag ids; held-out order, after its tuned threshold if it has one). The
    single held-out set is ``None``."""

    checkpoint: str
    global_step: int
    predictions: Mapping[str | None, np.ndarray]


@dataclass(frozen=True)
class BestEstimate(Interval):
    """The chosen checkpoint's expected objective value on new data from the held-out distribution.

    ``value``: mean out-of-bag score of the resamples' choices (the objective's units and direction).
    ``low``/``high``: interval at ``confidence`` (see the module docstring). ``resamples``: resamples
    drawn (``objective.bootstrap_resamples``); ``seed``: ``objective.seed``. ``optimism``: the reported
    value minus ``value``, so positive when the report is too high for a higher-is-better key and
    negative when it is too optimistic for a lower-is-better one (``expected_cost``). ``to_dict()`` is
    the leaderboard's ``best_estimate`` object (exactly these eight keys).
    """

    optimism: float = math.nan
    method: str = METHOD


def estimate_best(
    labels: Mapping[str | None, np.ndarray],
    checkpoints: Iterable[CheckpointPredictions],
    objective: Objective,
    task: Task | Sequence[str],
    *,
    reported_value: float | None,
    min_checkpoints: int = 2,
) -> BestEstimate:
    """The selection-corrected estimate of the chosen checkpoint (see the module docstring).

    Args:
        labels: each held-out set's labels as the task reads them (class ids for a single-label task,
            multi-hot ``[N, L]``, per-token tag ids ``[N, W]``), ``{None: labels}`` for the only set; with
            several, the set names of the metric keys (``{"reviews_2024": ..., "reviews_2025": ...}``,
            keys ``reviews_2024_recall_negative`` and the combined ``recall_negative``, combined as
            :mod:`trainer_ext.scoring` does: ``across_sets`` and ``set_weights``).
        checkpoints: every checkpoint the selection chose among. One without predictions for every set
            is left out (the estimate then corrects for a choice among fewer and understates the
            optimism); names must be unique.
        objective: the objective of the selection; ``bootstrap_resamples``, ``confidence`` and ``seed``
            set the bootstrap.
        task: the task (:mod:`trainer_ext.tasks`), or the class slugs of a single-label task in class-id
            order (:func:`trainer_ext.metrics.class_slugs`).
        reported_value: the objective value the leaderboard reports for the chosen checkpoint.
        min_checkpoints: fewer checkpoints with predictions raise :class:`EstimateUnavailable`; with one
            there is no selection to correct, and the estimate is that checkpoint's out-of-bag
            bootstrap value.

    Raises:
        EstimateUnavailable: ``bootstrap_resamples`` is 0, no reported value, fewer than
            ``min_checkpoints`` checkpoints with predictions, a key that is not count-based, or no
            resample with a choice and an out-of-bag example.
        ValueError: malformed inputs (lengths, class ids out of range, duplicate names).
    """
    task = as_task(task)
    plan = _key_plan(objective, list(labels), task)
    if objective.bootstrap_resamples == 0:
        raise EstimateUnavailable("bootstrap_resamples=0 turns the bootstrap, and so the estimate, off")
    if reported_value is None or math.isnan(float(reported_value)):
        raise EstimateUnavailable("no checkpoint has a finite objective value")
    resamplers = _resamplers(labels, checkpoints, task, min_checkpoints)
    walk_objective = objective.replace(require_significance=False) if objective.require_significance else objective
    resamples = objective.bootstrap_resamples
    inbag, oob, n_oob = _resample_counts(resamplers, resamples, np.random.default_rng(objective.seed))
    counts = _Counts(objective, task, plan)
    counts.shape = next(iter(resamplers.values())).shape
    chosen = choose_best({key: counts.values(key, inbag) for key in objective.keys}, walk_objective).best

    scores, out_of_bag, size = _out_of_bag_scores(counts, objective.metric, plan, chosen, oob, n_oob, resamplers)
    valid = ~np.isnan(scores)
    if not valid.any():
        raise EstimateUnavailable(
            "no resample had both a checkpoint with a finite value in-bag and an out-of-bag example"
        )
    value = float(scores[valid].mean())
    deviations = (scores[valid] - value) * np.sqrt(out_of_bag[valid] / size)
    low, high = percentile_interval(deviations, objective.confidence)
    return BestEstimate(
        value=value,
        low=value + low,
        high=value + high,
        confidence=objective.confidence,
        resamples=resamples,
        seed=objective.seed,
        optimism=float(reported_value) - value,
    )


def _resamplers(
    labels: Mapping[str | None, np.ndarray], checkpoints: Iterable[CheckpointPredictions], task: Task,
    min_checkpoints: int,
) -> dict[str | None, _Resampler]:
    """One resampler per held-out set over the checkpoints with predictions on every set (walk order):
    class ids for a single-label task, per-example statistics (:meth:`Task.example_statistics`) else."""
    class_ids = isinstance(task, SingleLabel)
    sets = {name: _class_ids(y, f"labels[{name!r}]", len(task.slugs)) if class_ids else np.asarray(y) for name, y in labels.items()}
    if not sets:
        raise ValueError("labels: expected at least one held-out set; got none")
    given = sorted(checkpoints, key=lambda c: (int(c.global_step), c.checkpoint))  # the walk's order
    if len({c.checkpoint for c in given}) != len(given):
        raise ValueError("checkpoints: checkpoint names must be unique")
    usable = [c for c in given if all(c.predictions.get(name) is not None for name in sets)]
    if len(usable) < min_checkpoints:
        raise EstimateUnavailable(
            f"{len(usable)} of {len(given)} checkpoints have predictions on every held-out set; the "
            f"selection-corrected estimate needs at least {min_checkpoints}"
        )
    resamplers: dict[str | None, _Resampler] = {}
    for name, y in sets.items():
        predictions = []
        for c in usable:
            what = f"predictions of {c.checkpoint} on {name!r}"
            p = _class_ids(c.predictions[name], what, len(task.slugs)) if class_ids else np.asarray(c.predictions[name])
            if p.shape[:1] != y.shape[:1] or (class_ids and p.shape != y.shape):
                raise ValueError(f"{what}: expected {y.shape[0]} (one per held-out example); got {p.shape[0] if p.ndim else p.size}")
            predictions.append(p)
        if class_ids:
            resamplers[name] = _ClassResampler(y, np.stack(predictions), len(task.slugs))
        elif isinstance(task, MultiLabel):
            resamplers[name] = _PerLabelResampler(y.astype(np.int64), np.stack(predictions).astype(np.int64))
        else:
            resamplers[name] = _StatisticResampler(_example_statistics(task, y, predictions, name))
    return resamplers


def _example_statistics(task: Task, labels: np.ndarray, predictions: list[np.ndarray], name: str | None) -> np.ndarray:
    """``[N, K, *S]``: each example's additive statistics under each checkpoint's predictions."""
    per_checkpoint = [task.example_statistics(labels, p) for p in predictions]
    if any(stats is None for stats in per_checkpoint):
        raise EstimateUnavailable(
            f"the {task.name} task keeps no per-example statistics, so its keys cannot be resampled from "
            f"counts (every key of a {task.name} task is computed from the rows)"
        )
    stats = np.stack(per_checkpoint, axis=1)
    if stats.shape[0] != labels.shape[0]:
        raise ValueError(f"statistics of held-out set {name!r}: expected {labels.shape[0]} examples; got {stats.shape[0]}")
    return stats


def _out_of_bag_scores(counts, metric, plan, chosen, oob, n_oob, resamplers) -> tuple[np.ndarray, np.ndarray, int]:
    """Each resample's out-of-bag score of its choice (NaN without a choice or without an out-of-bag
    example), the out-of-bag sizes and the held-out size of the sets the key reads."""
    rows = np.arange(chosen.size)
    picked = {name: cms[rows, np.maximum(chosen, 0)] for name, cms in oob.items()}  # [R, C, C]
    scores = counts.values(metric, picked)
    read = plan[metric].sets  # the sets the objective's score reads
    out_of_bag = sum(n_oob[name] for name in read)
    scores[chosen < 0] = np.nan  # no finite in-bag value: no choice
    for name in read:
        scores[n_oob[name] == 0] = np.nan  # nothing left out (a handful of examples)
    return scores, out_of_bag, sum(resamplers[name].n for name in read)


# ---- keys ------------------------------------------------------------------------------------------


def _key_plan(objective: Objective, set_names: list[str | None], task: Task) -> dict[str, _Key]:
    """How each key the objective reads is computed from per-set counts; refuses keys that are not
    count-based (see the module docstring)."""
    count_keys = set(task.count_keys(with_cost=objective.cost_matrix is not None))
    plan: dict[str, _Key] = {}
    for key in objective.keys:
        named = [n for n in set_names if n is not None and key.startswith(f"{n}_") and key[len(n) + 1 :] in count_keys]
        if set_names == [None]:
            plan[key] = _Key(key, [None], combined=False)
        elif named:  # <set>_<key>: that set alone
            plan[key] = _Key(key[len(named[0]) + 1 :], named[:1], combined=False)
        else:  # the unprefixed key combines the sets, as scoring does (even a single named set)
            plan[key] = _Key(key, list(set_names), combined=True)
        base = plan[key].base
        if base in count_keys:
            continue
        if is_score_based(base):
            raise EstimateUnavailable(
                f"{key!r} is computed from scores or rows; the selection-corrected estimate resamples confusion "
                f"counts, and a score-based key would be recomputed from every row for every checkpoint in "
                f"every resample (resamples x checkpoints x N log N: about an hour for 1,000 x 50 x 100,000). "
                f"Use count-based keys in the objective's metric, constraints and tie-breakers."
            )
        raise EstimateUnavailable(
            f"{key!r} is not a count-based key trainer_ext computes for this {task.name} task (a custom "
            f"metric, or a class not in {task.slugs}); the selection-corrected estimate recomputes every key of the objective from "
            f"resampled confusion counts"
        )
    return plan


@dataclass(frozen=True)
class _Key:
    """A key as computed from counts: its count-based ``base`` key on ``sets``, combined across them
    (``combined``) or read from the one set."""

    base: str
    sets: list[str | None]
    combined: bool


class _Counts:
    """Values of the objective's keys from per-set statistics ``[R, K, *S]`` (the task's own
    :meth:`~trainer_ext.tasks.Task.statistic_values`: one count implementation per task)."""

    def __init__(self, objective: Objective, task: Task, plan: Mapping[str, _Key]) -> None:
        self.objective, self.task, self.plan = objective, task, plan
        self.cost = None if objective.cost_matrix is None else np.asarray(objective.cost_matrix, dtype=np.float64)
        self.prior = None if objective.class_prior is None else np.asarray(objective.class_prior, dtype=np.float64)
        self.shape: tuple[int, ...] = ()  # the task's statistics of one set, set from the resamplers

    def _one(self, stats: np.ndarray, base: str) -> np.ndarray:
        lead = stats.shape[: stats.ndim - len(self.shape)]
        flat = self.task.statistic_values(stats.reshape(-1, *self.shape), [base], cost_matrix=self.cost, class_prior=self.prior)[base]
        return np.asarray(flat, dtype=np.float64).reshape(lead)

    def values(self, key: str, cms_by_set: Mapping[str | None, np.ndarray]) -> np.ndarray:
        plan = self.plan[key]
        if not plan.combined:
            return self._one(cms_by_set[plan.sets[0]], plan.base)
        per_set = [self._one(cms_by_set[n], plan.base) for n in plan.sets]
        return _combine_sets(per_set, plan.sets, plan.base, self.objective)


def _combine_sets(values: list[np.ndarray], names: list[str | None], key: str, objective: Objective) -> np.ndarray:
    """The unprefixed key over several sets, as :mod:`trainer_ext.scoring` combines a checkpoint's sets
    (``tests/unit/test_estimate.py`` checks the two agree): ``support_<c>`` adds up; ``"worst"`` is the
    lowest value of a higher-is-better key (the highest of a lower-is-better one); ``"mean"`` is weighted
    by ``set_weights`` (a set it does not name weighs 0; equal weights without it)."""
    stacked = np.stack(values)
    if key.startswith("support_"):
        return stacked.sum(axis=0)
    if objective.across_sets == "worst":
        return stacked.min(axis=0) if known_direction(key) is not False else stacked.max(axis=0)
    by_set = dict(objective.set_weights or ())
    weights = np.array([by_set.get(str(n), 1.0 if not by_set else 0.0) for n in names], dtype=np.float64)
    return np.tensordot(weights, stacked, axes=1) / weights.sum()


def _class_ids(values: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected a 1-D array of integer class ids; got shape {array.shape}, dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{name}: class ids must lie in [0, {num_classes}); got values from {array.min()} to {array.max()}")
    return array.astype(np.int64, copy=False)


# ---- resampling --------------------------------------------------------------------------------------


class _Resampler:
    """One held-out set's examples grouped into rows for resampling: what every resampler shares.

    ``rank[n]``: position of example n in the row order; ``starts``: first position of each row when
    rows group several examples with the same joint pattern (None when every example is its own row).
    ``shape``: the task's statistics of one checkpoint (``[C, C]``, ``[L, 2, 2]``, ``[T + 1, 3]``).
    """

    n: int
    rows: int
    num_checkpoints: int
    shape: tuple[int, ...]
    dtype: type
    rank: np.ndarray
    starts: np.ndarray | None

    def _order(self, pattern: np.ndarray, grouped: bool, num_rows: int) -> np.ndarray:
        """Set ``rank`` and ``starts`` for row ids ``pattern`` (one per example); the examples in row order."""
        self.index_dtype = np.int32 if self.n < 2**31 else np.int64
        order = np.argsort(pattern, kind="stable")
        self.order = order
        self.rank = np.empty(self.n, dtype=self.index_dtype)
        self.rank[order] = np.arange(self.n, dtype=self.index_dtype)
        self.starts = None
        if grouped:
            sizes = np.bincount(pattern, minlength=num_rows)
            self.starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        return order

    def draw(self, rng: np.random.Generator, inbag: np.ndarray, out_of_bag: np.ndarray) -> None:
        """One resample: its in-bag count and out-of-bag count of every row, written into the two rows."""
        drawn = np.bincount(np.take(self.rank, _indices(rng, self.n, self.index_dtype)), minlength=self.n)
        self._rows(drawn, inbag, out_of_bag)

    def draw_from(self, drawn: np.ndarray, inbag: np.ndarray, out_of_bag: np.ndarray) -> None:
        """The same for a resample already drawn: ``drawn[n]`` the times example n was drawn."""
        self._rows(drawn[self.order], inbag, out_of_bag)

    def _rows(self, drawn: np.ndarray, inbag: np.ndarray, out_of_bag: np.ndarray) -> None:
        """Row counts from the counts of the examples in row order."""
        if self.starts is None:
            inbag[:] = drawn
            out_of_bag[:] = drawn == 0
        else:
            inbag[:] = np.add.reduceat(drawn, self.starts)
            out_of_bag[:] = np.add.reduceat((drawn == 0).view(np.uint8), self.starts, dtype=np.int64)

    def confusion(self, weights: np.ndarray) -> np.ndarray:
        """Statistics ``[R, K, *shape]`` of every checkpoint for rows of example weights ``[R, rows]``."""
        raise NotImplementedError

    def examples(self, weights: np.ndarray) -> np.ndarray:
        """Examples ``[R]`` in rows of example weights ``[R, rows]`` (out-of-bag sizes)."""
        return weights.sum(axis=1)


class _ClassResampler(_Resampler):
    """A single-label held-out set: class ids, the fast path. Rows sorted by label, so that the
    confusion counts of a resample are one product per class.

    ``blocks[i]``: the rows of class i; ``onehot[i]``: ``[rows of class i, K * (C - 1) + 1]``, 1 where
    checkpoint k predicts class j < C - 1 (column ``k * (C - 1) + j``), and a last column of ones (the
    support); the count of class C - 1 is the support minus the others. About C times fewer
    multiply-adds than the generic :class:`_StatisticResampler` on one-hot ``C x C`` statistics.
    """

    def __init__(self, labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> None:
        self.n = labels.size
        self.num_checkpoints = predictions.shape[0]
        self.num_classes = num_classes
        self.shape = (num_classes, num_classes)
        self.dtype = np.float32 if self.n < _FLOAT32_EXACT_BELOW else np.float64
        pattern, first = _patterns([labels, *predictions])
        grouped = first.size <= _GROUP_WHEN_PATTERNS_BELOW * self.n
        if grouped:
            by_label = np.argsort(labels[first], kind="stable")  # patterns in label order
            new_id = np.empty_like(by_label)
            new_id[by_label] = np.arange(by_label.size)
            pattern, first = new_id[pattern], first[by_label]
        else:
            pattern = labels  # every example is its own row, rows in label order
        order = self._order(pattern, grouped, first.size)
        members = first if grouped else order
        rows_label, rows_predictions = labels[members], predictions[:, members]
        self.rows = rows_label.size
        edges = np.searchsorted(rows_label, np.arange(num_classes + 1))
        self.blocks = [(int(edges[i]), int(edges[i + 1])) for i in range(num_classes)]
        self.onehot = [
            np.concatenate(
                (
                    (rows_predictions[:, lo:hi].T[:, :, None] == np.arange(num_classes - 1)).reshape(
                        hi - lo, rows_predictions.shape[0] * (num_classes - 1)  # explicit: a class may have no rows
                    ),
                    np.ones((hi - lo, 1), dtype=bool),
                ),
                axis=1,
            ).astype(self.dtype)
            for lo, hi in self.blocks
        ]

    def confusion(self, weights: np.ndarray) -> np.ndarray:
        c, k = self.num_classes, self.num_checkpoints
        cms = np.zeros((weights.shape[0], k, c, c), dtype=np.float64)
        for i, (lo, hi) in enumerate(self.blocks):
            if hi == lo:
                continue
            product = (weights[:, lo:hi] @ self.onehot[i]).astype(np.float64)
            counts = product[:, :-1].reshape(weights.shape[0], k, c - 1)
            cms[:, :, i, : c - 1] = counts
            cms[:, :, i, c - 1] = product[:, -1:] - counts.sum(axis=2)
        return cms


class _PerLabelResampler(_Resampler):
    """A multi-label held-out set as L binary single-label sets that share the examples: one draw of
    the examples per resample, and each label's ``2 x 2`` counts from its own :class:`_ClassResampler`
    (grouped by that label and every checkpoint's prediction of it, so checkpoints that agree on most
    examples group well). Statistics ``[L, 2, 2]``, as :meth:`MultiLabel.statistics`. About four times
    fewer multiply-adds than :class:`_StatisticResampler` on the one-hot ``[L, 2, 2]`` of each example."""

    def __init__(self, labels: np.ndarray, predictions: np.ndarray) -> None:
        self.n, self.num_checkpoints = labels.shape[0], predictions.shape[0]
        self.shape = (labels.shape[1], 2, 2)
        self.index_dtype = np.int32 if self.n < 2**31 else np.int64
        self.parts = [_ClassResampler(labels[:, l], predictions[:, :, l], 2) for l in range(labels.shape[1])]
        self.dtype = self.parts[0].dtype
        self.edges = np.concatenate(([0], np.cumsum([part.rows for part in self.parts])))
        self.rows = int(self.edges[-1])

    def draw(self, rng: np.random.Generator, inbag: np.ndarray, out_of_bag: np.ndarray) -> None:
        drawn = np.bincount(_indices(rng, self.n, self.index_dtype), minlength=self.n)
        for part, lo, hi in zip(self.parts, self.edges[:-1], self.edges[1:]):
            part.draw_from(drawn, inbag[lo:hi], out_of_bag[lo:hi])

    def examples(self, weights: np.ndarray) -> np.ndarray:
        return weights[:, : self.edges[1]].sum(axis=1)  # every label's rows hold every example: the first's

    def confusion(self, weights: np.ndarray) -> np.ndarray:
        parts = zip(self.parts, self.edges[:-1], self.edges[1:])
        return np.stack([part.confusion(weights[:, lo:hi]) for part, lo, hi in parts], axis=2)


def _indices(rng: np.random.Generator, n: int, dtype: type) -> np.ndarray:
    """One resample's N indices of N: ``floor(rng.random(N) * N)`` (see the module docstring)."""
    uniform = rng.random(n)
    np.multiply(uniform, n, out=uniform)
    index = uniform.astype(dtype)  # floor: the uniforms are >= 0
    np.minimum(index, n - 1, out=index)  # a product rounded up to N
    return index


class _StatisticResampler(_Resampler):
    """Any task with per-example additive statistics ``[N, K, *S]`` (multi-label ``[L, 2, 2]`` per
    example, token classification ``[T + 1, 3]`` per sentence): examples with the same statistics under
    every checkpoint share a row, and a resample's statistics are one product
    ``weights [R, rows] @ statistics [rows, K * prod(S)]``."""

    def __init__(self, stats: np.ndarray) -> None:
        self.n, self.num_checkpoints = stats.shape[:2]
        self.shape = tuple(stats.shape[2:])
        flat = stats.reshape(self.n, -1)
        largest = float(np.abs(flat).max()) if flat.size else 0.0
        self.dtype = np.float32 if self.n * max(largest, 1.0) < _FLOAT32_EXACT_BELOW else np.float64
        pattern, first = _patterns(list(flat.T))
        grouped = first.size <= _GROUP_WHEN_PATTERNS_BELOW * self.n
        order = self._order(pattern if grouped else np.arange(self.n), grouped, first.size)
        self.table = flat[first if grouped else order].astype(self.dtype)
        self.rows = self.table.shape[0]

    def confusion(self, weights: np.ndarray) -> np.ndarray:
        product = (weights @ self.table).astype(np.float64)
        return product.reshape(weights.shape[0], self.num_checkpoints, *self.shape)


def _patterns(columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each example's pattern id and each pattern's first example, for integer ``columns`` (one value per
    example each: the label and every checkpoint's prediction, or every statistic). A 64-bit polynomial
    hash groups them; the grouping is then checked column by column and, on a collision, redone exactly
    with ``np.unique(axis=0)``."""
    digest = np.zeros(columns[0].size, dtype=np.uint64)
    for column in columns:
        digest = digest * np.uint64(0x9E3779B97F4A7C15) + column.astype(np.uint64) + np.uint64(1)
    _, first, pattern = np.unique(digest, return_index=True, return_inverse=True)
    pattern = pattern.reshape(-1)
    representative = first[pattern]
    if all(np.array_equal(column, column[representative]) for column in columns):
        return pattern, first
    _, first, pattern = np.unique(np.stack(columns, axis=1), axis=0, return_index=True, return_inverse=True)
    return pattern.reshape(-1), first


def _resample_counts(
    resamplers: Mapping[str | None, _Resampler], resamples: int, rng: np.random.Generator
) -> tuple[dict, dict, dict]:
    """In-bag and out-of-bag statistics ``[R, K, *S]`` per set, and out-of-bag sizes ``[R]``."""
    widest = max(r.rows for r in resamplers.values())
    chunk = max(1, min(resamples, _CHUNK_CELLS // (2 * widest)))
    inbag = {name: np.empty((resamples, r.num_checkpoints, *r.shape)) for name, r in resamplers.items()}
    oob = {name: np.empty_like(cms) for name, cms in inbag.items()}
    n_oob = {name: np.empty(resamples) for name in resamplers}
    buffers = {name: np.empty((2 * chunk, r.rows), dtype=r.dtype) for name, r in resamplers.items()}
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        for b in range(size):  # resample by resample, set by set: the stream does not depend on the chunk
            for name, resampler in resamplers.items():
                resampler.draw(rng, buffers[name][b], buffers[name][chunk + b])
        for name, resampler in resamplers.items():
            weights = buffers[name]
            if size < chunk:  # the last chunk: its rows, in-bag then out-of-bag, together
                weights = np.concatenate((weights[:size], weights[chunk : chunk + size]))
            both = resampler.confusion(weights)
            inbag[name][start : start + size] = both[:size]
            oob[name][start : start + size] = both[size:]
            n_oob[name][start : start + size] = resampler.examples(weights[size:])
    return inbag, oob, n_oob


def estimate_for_leaderboard(
    labels: Mapping[str | None, np.ndarray] | None,
    predictions: Mapping[str, Mapping[str | None, np.ndarray]],
    steps: Mapping[str, int],
    objective: Objective,
    task: Task | Sequence[str],
    reported_value: float | None,
) -> tuple[dict | None, str | None]:
    """``(best_estimate, None)`` for the leaderboard, or ``(None, why)`` when it cannot be computed.

    ``labels``: each set's labels as the task reads them, None when they were not kept (the estimate is
    then None); ``task``: the task, or a single-label task's class slugs; ``predictions``: ``{checkpoint: {set: predictions}}`` of the checkpoints that still have them;
    ``steps``: the global step of every ranked checkpoint (those without predictions are named in the
    reason when they are left out). Used by the callback at each save and by ``trainer-ext rank`` /
    ``evaluate`` from the saved scores files.
    """
    if labels is None:
        return None, "no selection-corrected estimate: the held-out labels of the checkpoints' predictions are not available"
    with_predictions = [name for name in steps if name in predictions]
    checkpoints = [CheckpointPredictions(name, int(steps[name]), predictions[name]) for name in with_predictions]
    try:
        estimate = estimate_best(labels, checkpoints, objective, task, reported_value=reported_value)
    except EstimateUnavailable as why:
        return None, f"no selection-corrected estimate: {why}"
    left_out = len(steps) - len(with_predictions)
    note = None
    if left_out:
        note = (f"the selection-corrected estimate covers the {len(with_predictions)} checkpoints with saved "
                f"predictions ({left_out} without them are left out, so it understates the correction)")
    return estimate.to_dict(), note
