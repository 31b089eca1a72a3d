"""Pick the best checkpoint for an :class:`~trainer_ext.objectives.Objective`. Pure: no torch.

Rules, in order (each one is a test in ``tests/unit/test_selection.py``):

1. A checkpoint whose objective value is NaN or missing is never best.
2. Feasibility first: a checkpoint meeting every constraint beats one that does not.
3. Among feasible checkpoints, the better objective value wins, by more than ``min_delta``.
4. Exactly equal values: the tie-breakers decide, in order; then the earlier checkpoint stays.
5. When none is feasible, ``on_infeasible`` decides: ``least_violation`` (smallest summed scaled
   violation, then rules 3-4), ``keep_incumbent`` (the first checkpoint stays until a feasible one
   appears), or ``raise`` (when ``final=True``; before that it behaves like ``least_violation``,
   since early checkpoints of a run are rarely feasible).

The best is found by walking the checkpoints in global-step order with an incumbent, so the order of
the input never changes the choice, and ``min_delta`` means "a later checkpoint must beat the current
best by this much".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InfeasibleObjectiveError
from .objectives import Objective, known_direction

if TYPE_CHECKING:
    from .uncertainty import PairedComparison

__all__ = [
    "Candidate",
    "RankedCandidate",
    "Selection",
    "select_best",
    "BatchedChoice",
    "choose_best",
    "RankResult",
    "rank",
    "p_value_of",
    "candidates_of",
    "compare_predictions",
    "resampled_key",
]


@dataclass(frozen=True)
class Candidate:
    """One evaluated checkpoint: its folder name, global step and flat metric dict."""

    checkpoint: str
    global_step: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class RankedCandidate:
    checkpoint: str
    global_step: int
    rank: int
    objective_value: float | None  # None when NaN or missing
    feasible: bool
    violations: Mapping[str, float]  # constraint text -> scaled miss (0.0 when met)
    total_violation: float


@dataclass(frozen=True)
class Selection:
    """The result of :func:`select_best`: the best (or None when no value is finite) and the ranking."""

    objective: Objective
    best: RankedCandidate | None
    ranking: tuple[RankedCandidate, ...]  # best first, then the rest by the same rules
    reason: str

    @property
    def best_checkpoint(self) -> str | None:
        return None if self.best is None else self.best.checkpoint


def _value(metrics: Mapping[str, float], key: str) -> float | None:
    value = metrics.get(key)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _nan_if_missing(metrics: Mapping[str, float], key: str) -> float:
    value = _value(metrics, key)
    return math.nan if value is None else value


def _column(values: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    """``values[key]`` as float64 of ``shape``; a missing key is all NaN (missing counts as NaN)."""
    if key not in values:
        return np.full(shape, np.nan)
    return np.broadcast_to(np.asarray(values[key], dtype=np.float64), shape)


def _feasibility(
    values: Mapping[str, np.ndarray], objective: Objective, shape: tuple[int, ...]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per constraint text its scaled violation (:meth:`Constraint.violation`, which takes arrays), their
    sum and "every constraint met", for metric values of any ``shape`` (NaN: missing)."""
    violations = {
        str(c): np.asarray(c.violation(_column(values, c.metric, shape)), dtype=np.float64).reshape(shape)
        for c in objective.constraints
    }
    parts = list(violations.values())
    if len(parts) > 2:  # math.fsum, as for one checkpoint; with one or two terms "+" is the same rounding
        with np.errstate(invalid="ignore"):  # fsum of several infinities sets the FPU's flag; it returns inf
            total = np.vectorize(lambda *v: math.fsum(v), otypes=[np.float64])(*parts)
    else:
        total = sum(parts, np.zeros(shape))
    feasible = np.logical_and.reduce([p == 0.0 for p in parts]) if parts else np.ones(shape, dtype=bool)
    return violations, total, feasible


def _signed(value: float | None, greater_is_better: bool) -> float:
    """Map a value to "larger is better", NaN/missing to -inf."""
    if value is None:
        return -math.inf
    return value if greater_is_better else -value


def _order_key(r: RankedCandidate, metrics: Mapping[str, float], objective: Objective) -> tuple:
    """Sort key for the displayed ranking: smaller sorts first (better)."""
    infeasible_cost = 0.0 if r.feasible else r.total_violation
    tie = tuple(-_signed(_value(metrics, k), bool(known_direction(k))) for k in objective.tie_breakers)
    return (
        r.objective_value is None,
        not r.feasible,
        infeasible_cost,
        -_signed(r.objective_value, objective.greater_is_better),
        tie,
        r.global_step,
    )


# Why the best is the best (or stayed best), as codes; tie-breaker i is _TIE_BREAKER + i.
_REASONS = (
    "no checkpoint has a finite objective value",
    "first",
    "feasible",
    "infeasible",
    "keep_incumbent",
    "least_violation",
    "objective",
    "min_delta",
    "not_significant",
    "tie_earlier",
)
_NONE, _FIRST, _FEASIBLE, _INFEASIBLE, _KEEP, _LEAST, _OBJECTIVE, _MIN_DELTA, _NOT_SIGNIFICANT, _TIE_EARLIER = range(10)
_TIE_BREAKER = len(_REASONS)


@dataclass(frozen=True)
class BatchedChoice:
    """:func:`choose_best` over R batches of the same K checkpoints (for example R bootstrap resamples).

    ``best[r]``: index (in walk order) of the best checkpoint of batch r, -1 when no value is finite.
    ``why[r]``: how it won or stayed (``"first"``, ``"feasible"``, ``"least_violation"``,
    ``"objective"``, ``"min_delta"``, ``"tie_breaker:<key>"``, ``"tie_earlier"``, ...).
    ``not_significant[r]``: indices kept out by ``require_significance``. ``feasible``,
    ``total_violation`` and each of ``violations`` (by constraint text): ``[R, K]``, as in
    :class:`RankedCandidate`.
    """

    best: np.ndarray
    why: tuple[str, ...]
    not_significant: tuple[tuple[int, ...], ...]
    feasible: np.ndarray
    total_violation: np.ndarray
    violations: Mapping[str, np.ndarray]


def choose_best(
    values: Mapping[str, np.ndarray],
    objective: Objective,
    *,
    checkpoints: Sequence[str] = (),
    p_value: Callable[[str, str], float] | None = None,
) -> BatchedChoice:
    """The best of K checkpoints by every rule of the module docstring, for R batches at once.

    THE implementation of the rules: :func:`select_best` is the batch of one; the selection-corrected
    estimate (:mod:`trainer_ext.estimate`) runs it over thousands of bootstrap resamples.

    Args:
        values: ``{key: array [R, K]}`` for the keys of ``objective.keys`` (a missing key is NaN),
            checkpoints in walk order: global step, then name (:func:`select_best` sorts them so).
        objective: the objective.
        checkpoints: the K names, for ``p_value``.
        p_value: as in :func:`select_best`; called for each batch and challenger that beats the
            current best by value, only with ``objective.require_significance``.
    """
    value = np.asarray(values[objective.metric], dtype=np.float64) if objective.metric in values else None
    if value is None or value.ndim != 2:
        raise ValueError(f"values: expected {objective.metric!r} -> an array [batches, checkpoints]")
    shape = value.shape
    violations, total, feasible = _feasibility(values, objective, shape)
    signed = _signed_array(value, objective.greater_is_better)
    ties = [_signed_array(_column(values, k, shape), bool(known_direction(k))) for k in objective.tie_breakers]
    finite = ~np.isnan(value)
    best = np.full(shape[0], -1, dtype=np.int64)
    why = np.full(shape[0], _NONE, dtype=np.int64)
    not_significant: list[list[int]] = [[] for _ in range(shape[0])]
    for k in range(shape[1]):
        rows = np.flatnonzero(finite[:, k])  # rule 1: a NaN value never competes
        first = best[rows] < 0
        best[rows[first]], why[rows[first]] = k, _FIRST
        rows = rows[~first]
        if rows.size == 0:
            continue
        state = (value, signed, total, feasible, ties)
        take, reason = _beats(k, rows, best[rows], state, objective, checkpoints, p_value)
        best[rows[take]], why[rows[take]] = k, reason[take]
        kept, held = rows[~take], reason[~take]
        for r in kept[held == _NOT_SIGNIFICANT]:
            not_significant[r].append(k)
        # The best stayed through a tie: the reason says how it was broken (a tie-breaker's win stays).
        tie = (held >= _TIE_BREAKER) | ((held == _TIE_EARLIER) & (why[kept] < _TIE_BREAKER))
        why[kept[tie]] = held[tie]
    names = list(_REASONS) + [f"tie_breaker:{k}" for k in objective.tie_breakers]
    return BatchedChoice(
        best=best,
        why=tuple(names[c] for c in why),
        not_significant=tuple(tuple(n) for n in not_significant),
        feasible=feasible,
        total_violation=total,
        violations=violations,
    )


def _signed_array(values: np.ndarray, greater_is_better: bool) -> np.ndarray:
    """:func:`_signed` element-wise: "larger is better", NaN (missing) to -inf."""
    signed = values if greater_is_better else -values
    return np.where(np.isnan(values), -np.inf, signed)


def _beats(
    k: int,
    rows: np.ndarray,
    incumbent: np.ndarray,
    state: tuple,
    objective: Objective,
    checkpoints: Sequence[str],
    p_value: Callable[[str, str], float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Does checkpoint ``k`` take over from the current best ``incumbent[i]`` in batch ``rows[i]``?
    Returns (decision, reason code) per batch; both have finite objective values."""
    value, signed, total, feasible, ties = state
    take = np.zeros(rows.size, dtype=bool)
    reason = np.full(rows.size, _TIE_EARLIER, dtype=np.int64)
    open_ = np.ones(rows.size, dtype=bool)  # not decided yet

    def decide(mask: np.ndarray, decision: np.ndarray | bool, code: np.ndarray | int) -> None:
        take[mask] = decision if np.ndim(decision) == 0 else decision[mask]
        reason[mask] = code if np.ndim(code) == 0 else code[mask]
        open_[mask] = False

    ours, theirs = feasible[rows, k], feasible[rows, incumbent]
    decide(ours != theirs, ours, np.where(ours, _FEASIBLE, _INFEASIBLE))
    both_infeasible = open_ & ~ours
    if objective.on_infeasible == "keep_incumbent":
        decide(both_infeasible, False, _KEEP)
    else:
        mine, best_total = total[rows, k], total[rows, incumbent]
        decide(both_infeasible & (mine != best_total), mine < best_total, _LEAST)
    with np.errstate(invalid="ignore"):  # equal infinities give NaN: that is a tie
        gain = signed[rows, k] - signed[rows, incumbent]
    by_value = open_ & (gain != 0.0) & ~np.isnan(gain)
    needed = np.full(rows.size, objective.min_delta)
    if objective.min_delta_mode == "relative":
        # A fraction of an infinite best is NaN or inf and would block every later value; the gain
        # over an infinite best is itself infinite, so the plain min_delta decides there.
        best_value = value[rows, incumbent]
        finite = np.isfinite(best_value)
        needed[finite] = objective.min_delta * np.abs(best_value[finite])
    wins = by_value & (gain > 0) & (gain > needed)
    decide(by_value, wins, np.where(gain < 0, _OBJECTIVE, np.where(wins, _OBJECTIVE, _MIN_DELTA)))
    if objective.require_significance:  # feasibility is equal here: a feasible newcomer needs no test
        for i in np.flatnonzero(wins):
            if p_value is None:
                raise ValueError("require_significance needs p_value= (paired per-example predictions)")
            if not p_value(checkpoints[k], checkpoints[incumbent[i]]) <= objective.alpha:
                take[i], reason[i] = False, _NOT_SIGNIFICANT
    for i, tie in enumerate(ties):
        with np.errstate(invalid="ignore"):
            diff = tie[rows, k] - tie[rows, incumbent]
        decide(open_ & (diff != 0.0) & ~np.isnan(diff), diff > 0, _TIE_BREAKER + i)
    return take, reason


def select_best(
    candidates: Iterable[Candidate],
    objective: Objective,
    *,
    final: bool = False,
    p_value: Callable[[str, str], float] | None = None,
) -> Selection:
    """Rank ``candidates`` by ``objective`` and pick the best.

    Args:
        candidates: evaluated checkpoints, in any order; folder names must be unique.
        objective: the objective (its keys are read from each candidate's metrics; a missing key
            counts as NaN).
        final: the selection ends a run or an offline ranking. Only then does
            ``on_infeasible="raise"`` raise :class:`InfeasibleObjectiveError`.
        p_value: with ``objective.require_significance``, ``p_value(challenger, incumbent)`` is the
            one-sided p-value that the challenger is better (e.g. 1 - win share of a paired bootstrap,
            :func:`trainer_ext.uncertainty.paired_bootstrap`); it takes over only when <= ``alpha``.

    Returns:
        A :class:`Selection`; ``best`` is None only when no candidate has a finite objective value.
    """
    candidates = sorted(candidates, key=lambda c: (int(c.global_step), c.checkpoint))
    metrics = {c.checkpoint: c.metrics for c in candidates}
    if len(metrics) != len(candidates):
        raise ValueError("candidates: checkpoint names must be unique")
    names = [c.checkpoint for c in candidates]
    # One batch of every candidate: the same walk that choose_best runs over bootstrap resamples.
    values = {
        key: np.array([[_nan_if_missing(c.metrics, key) for c in candidates]], dtype=np.float64).reshape(1, -1)
        for key in objective.keys
    }
    choice = choose_best(values, objective, checkpoints=names, p_value=p_value)
    ranked = [
        RankedCandidate(
            checkpoint=c.checkpoint,
            global_step=int(c.global_step),
            rank=0,
            objective_value=_value(c.metrics, objective.metric),
            feasible=bool(choice.feasible[0, i]),
            violations={text: float(v[0, i]) for text, v in choice.violations.items()},
            total_violation=float(choice.total_violation[0, i]),
        )
        for i, c in enumerate(candidates)
    ]
    best = ranked[choice.best[0]] if choice.best[0] >= 0 else None
    why = choice.why[0]
    not_significant = [names[i] for i in choice.not_significant[0]]

    if best is not None and not best.feasible and final and objective.on_infeasible == "raise":
        _raise_infeasible(best, objective)

    rest = sorted((r for r in ranked if r is not best), key=lambda r: _order_key(r, metrics[r.checkpoint], objective))
    ordered = ([best] if best is not None else []) + rest
    ranking = tuple(
        RankedCandidate(**{**r.__dict__, "rank": i + 1}) for i, r in enumerate(ordered)  # type: ignore[arg-type]
    )
    return Selection(
        objective=objective,
        best=ranking[0] if best is not None else None,
        ranking=ranking,
        reason=_explain(ranking[0] if best is not None else None, ranked, why, objective, not_significant),
    )


def _raise_infeasible(best: RankedCandidate, objective: Objective) -> None:
    raise InfeasibleObjectiveError(
        f"objective: no checkpoint meets every constraint of {objective.metric!r}; the closest, "
        f"{best.checkpoint}, misses {dict((k, v) for k, v in best.violations.items() if v > 0)} "
        f"(scaled by each bound). Relax the constraints or use on_infeasible='least_violation'."
    )


def _explain(
    best: RankedCandidate | None,
    ranked: list[RankedCandidate],
    why: str,
    objective: Objective,
    not_significant: list[str] = (),  # type: ignore[assignment]
) -> str:
    if best is None:
        return why
    direction = "highest" if objective.greater_is_better else "lowest"
    feasible = sum(r.feasible for r in ranked)
    rivals = [r.objective_value for r in ranked if r.objective_value is not None and r.feasible == best.feasible]
    extreme = max(rivals) if objective.greater_is_better else min(rivals)
    if best.objective_value != extreme:  # kept by min_delta or significance, not the top value
        direction = "chosen by"
    value = f"{best.objective_value:.6g}"
    if not objective.constraints:
        text = f"{best.checkpoint}: {direction} {objective.metric} ({value}) of {len(ranked)} checkpoints"
    elif best.feasible:
        text = (
            f"{best.checkpoint}: {direction} {objective.metric} ({value}) among {feasible} of {len(ranked)} "
            f"checkpoints meeting {', '.join(str(c) for c in objective.constraints)}"
        )
    else:
        policy = objective.on_infeasible
        text = (
            f"{best.checkpoint}: no checkpoint meets {', '.join(str(c) for c in objective.constraints)}; "
            f"chosen by {policy} ({objective.metric} = {value}, total scaled violation {best.total_violation:.4g})"
        )
    if why.startswith("tie_breaker:"):
        text += f"; a tie on {objective.metric} was broken by {why.split(':', 1)[1]}"
    elif why == "tie_earlier":
        text += "; ties keep the earlier checkpoint"
    if not_significant:
        text += (
            f"; kept over {', '.join(not_significant)}, better on the held-out set but not significantly "
            f"(paired bootstrap, alpha {objective.alpha:g})"
        )
    if objective.min_delta > 0:
        text += f"; a later checkpoint must improve by more than {objective.min_delta:g} ({objective.min_delta_mode})"
    return text


# ---- ranking with significance: the one loop the callback and `trainer-ext rank` share ----------------

Compare = Callable[[str, str], "PairedComparison | None"]


@dataclass(frozen=True)
class RankResult:
    """What :func:`rank` returns: the selection, and the paired comparison of the best with the
    runner-up (None when ``objective.bootstrap_resamples == 0``, with fewer than two ranked checkpoints,
    without a best, or when ``compare`` could not compare them)."""

    selection: Selection
    comparison: PairedComparison | None

    @property
    def comparison_dict(self) -> dict[str, Any] | None:
        """The comparison as stored in the leaderboard's ``comparison`` field."""
        return None if self.comparison is None else self.comparison.to_dict()


def candidates_of(records: Iterable[Any]) -> list[Candidate]:
    """Candidates from checkpoint records (anything with ``checkpoint``, ``global_step``, ``metrics``)."""
    return [Candidate(r.checkpoint, r.global_step, r.metrics) for r in records]


def p_value_of(compare: Compare) -> Callable[[str, str], float]:
    """The ``p_value(challenger, incumbent)`` of :func:`select_best` from a paired comparison: one minus
    the challenger's win share. Where ``compare`` gives None (no saved predictions for one of them, e.g. a
    checkpoint rotated away before a resume) the p-value is 0: the values alone decide."""

    def p_value(challenger: str, incumbent: str) -> float:
        comparison = compare(challenger, incumbent)
        return 0.0 if comparison is None else 1.0 - comparison.win_share

    return p_value


def rank(candidates: Iterable[Candidate], objective: Objective, *, compare: Compare, final: bool = False) -> RankResult:
    """:func:`select_best` with significance, then the best compared with the runner-up.

    ``compare(first, second)`` is a paired comparison of two checkpoints on the same examples, signed so
    that a positive difference favours ``first`` (for example :func:`compare_predictions` on their saved
    predictions), or None when it cannot be made. It is called only with ``objective.require_significance``
    (for each challenger that beats the current best by value) and, when ``bootstrap_resamples > 0``, once
    for the best and the runner-up. Pure: ``compare`` does any reading.
    """
    significance = {"p_value": p_value_of(compare)} if objective.require_significance else {}
    selection = select_best(candidates, objective, final=final, **significance)
    comparison = None
    if objective.bootstrap_resamples > 0 and selection.best is not None and len(selection.ranking) >= 2:
        comparison = compare(selection.ranking[0].checkpoint, selection.ranking[1].checkpoint)
    return RankResult(selection, comparison)


def resampled_key(objective: Objective, slugs: Sequence[str], target: str | None = None) -> str | None:
    """The objective's key as the bootstrap resamples it (without the ``<set>_`` prefix of held-out set
    ``target``), or None when it cannot be resampled from confusion counts: a key computed from scores
    (``log_loss``, ``roc_auc_*``) or one trainer_ext does not compute (a custom metric)."""
    from .tasks import as_task  # a task (token classification, ...) or a single-label task's slugs

    key = objective.metric
    if target and key.startswith(f"{target}_"):
        key = key[len(target) + 1 :]
    if key in as_task(slugs).count_keys(with_cost=True):
        return key
    return None


def compare_predictions(
    objective: Objective,
    slugs: Sequence[str],
    labels: Any,
    first: Any,
    second: Any,
    *,
    names: tuple[str, str],
    target: str | None = None,
) -> PairedComparison | None:
    """Paired bootstrap of the objective's key, ``first`` minus ``second`` (signed so that positive favours
    ``first``), on the same examples of held-out set ``target``; None when the key cannot be resampled
    from predictions (:func:`resampled_key`)."""
    import numpy as np

    from .tasks import as_task
    from .uncertainty import paired_bootstrap

    key = resampled_key(objective, slugs, target)
    if key is None:
        return None
    return paired_bootstrap(
        np.asarray(labels),
        np.asarray(first),
        np.asarray(second),
        key,
        as_task(slugs),
        greater_is_better=bool(objective.greater_is_better),
        names=names,
        resamples=objective.bootstrap_resamples,
        confidence=objective.confidence,
        seed=objective.seed,
        cost_matrix=None if objective.cost_matrix is None else np.asarray(objective.cost_matrix),
        class_prior=None if objective.class_prior is None else np.asarray(objective.class_prior),
    )
