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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .errors import InfeasibleObjectiveError
from .objectives import Objective, known_direction

__all__ = ["Candidate", "RankedCandidate", "Selection", "select_best"]


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


def _rank(candidate: Candidate, objective: Objective) -> RankedCandidate:
    violations = {str(c): c.violation(_value(candidate.metrics, c.metric)) for c in objective.constraints}
    total = math.fsum(violations.values())
    return RankedCandidate(
        checkpoint=candidate.checkpoint,
        global_step=int(candidate.global_step),
        rank=0,
        objective_value=_value(candidate.metrics, objective.metric),
        feasible=all(v == 0.0 for v in violations.values()),
        violations=violations,
        total_violation=total,
    )


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


def _beats(
    challenger: RankedCandidate,
    incumbent: RankedCandidate,
    metrics: Mapping[str, Mapping[str, float]],
    objective: Objective,
    p_value: Callable[[str, str], float] | None = None,
) -> tuple[bool, str]:
    """Does a later checkpoint take over from the current best? Returns (decision, why)."""
    if challenger.feasible != incumbent.feasible:
        return challenger.feasible, "feasible" if challenger.feasible else "infeasible"
    if not challenger.feasible:
        if objective.on_infeasible == "keep_incumbent":
            return False, "keep_incumbent"
        if challenger.total_violation != incumbent.total_violation:
            return challenger.total_violation < incumbent.total_violation, "least_violation"
    gain = _signed(challenger.objective_value, objective.greater_is_better) - _signed(
        incumbent.objective_value, objective.greater_is_better
    )
    if gain != 0.0 and not math.isnan(gain):  # equal infinities give NaN: that is a tie
        needed = objective.min_delta
        # A fraction of an infinite best is NaN or inf and would block every later value; the gain
        # over an infinite best is itself infinite, so the plain min_delta decides there.
        best_value = incumbent.objective_value
        if objective.min_delta_mode == "relative" and best_value is not None and math.isfinite(best_value):
            needed = objective.min_delta * abs(incumbent.objective_value)
        if gain > 0 and gain > needed:
            if objective.require_significance and challenger.feasible == incumbent.feasible:
                if p_value is None:
                    raise ValueError("require_significance needs p_value= (paired per-example predictions)")
                if not p_value(challenger.checkpoint, incumbent.checkpoint) <= objective.alpha:
                    return False, "not_significant"
            return True, "objective"
        return False, "objective" if gain < 0 else "min_delta"
    for key in objective.tie_breakers:
        greater = bool(known_direction(key))
        diff = _signed(_value(metrics[challenger.checkpoint], key), greater) - _signed(
            _value(metrics[incumbent.checkpoint], key), greater
        )
        if diff != 0.0 and not math.isnan(diff):
            return diff > 0, f"tie_breaker:{key}"
    return False, "tie_earlier"


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
    ranked = [_rank(c, objective) for c in candidates]

    best: RankedCandidate | None = None
    why = "no checkpoint has a finite objective value"
    not_significant: list[str] = []
    for r in ranked:
        if r.objective_value is None:
            continue
        if best is None:
            best, why = r, "first"
            continue
        takes_over, reason = _beats(r, best, metrics, objective, p_value)
        if takes_over:
            best, why = r, reason
        elif reason == "not_significant":
            not_significant.append(r.checkpoint)
        elif reason.startswith("tie_breaker:") or (reason == "tie_earlier" and not why.startswith("tie_breaker:")):
            why = reason  # the best stayed through a tie: the reason says how it was broken

    if best is not None and not best.feasible and final and objective.on_infeasible == "raise":
        raise InfeasibleObjectiveError(
            f"objective: no checkpoint meets every constraint of {objective.metric!r}; the closest, "
            f"{best.checkpoint}, misses {dict((k, v) for k, v in best.violations.items() if v > 0)} "
            f"(scaled by each bound). Relax the constraints or use on_infeasible='least_violation'."
        )

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
