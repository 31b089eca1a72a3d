"""What "best" means: an :class:`Objective` and the :class:`Constraint` s it must respect.

Pure: no torch, no transformers. An objective names one metric key (see :mod:`trainer_ext.metrics`)
and its direction. Built-in keys know their direction (``recall_negative``: higher is better,
``log_loss``: lower is better); a key the library does not know needs ``greater_is_better``.

>>> Objective("recall_negative", constraints=["precision_negative >= 0.80"]).constraints[0].bound
0.8
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError

__all__ = ["Constraint", "Objective", "known_direction", "is_score_based", "as_objective"]

ON_INFEASIBLE = ("least_violation", "keep_incumbent", "raise")
MIN_DELTA_MODES = ("absolute", "relative")

# Built-in key shapes and their direction. `support_<c>` is a count: it has no direction.
# A key may carry a held-out set's name in front ("reviews_2025_recall_negative"): same direction.
_HIGHER = re.compile(
    r"(^|_)(accuracy|balanced_accuracy|mcc|precision_macro|recall_macro|f1_macro|f1_weighted"
    r"|(precision|recall|f1|roc_auc|average_precision)_[^\W_]+(_[^\W_]+)*)$"
)
_LOWER = re.compile(r"(^|_)(log_loss|expected_cost)$")
_SCORE_BASED = re.compile(r"(^|_)(log_loss|(roc_auc|average_precision)_[^\W_]+(_[^\W_]+)*)$")
ACROSS_SETS = ("mean", "worst")

_OPS = (">=", "<=", ">", "<")
_CONSTRAINT = re.compile(
    r"^\s*(?P<metric>[\w./-]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<bound>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$"
)


def known_direction(key: str) -> bool | None:
    """Whether higher is better for a built-in key (True/False), or None when the key is not built in.

    Decided by the key's shape alone, so it works before the model's class names are known; whether
    ``recall_<c>`` names a real class is checked later, against the model (:meth:`Objective.check_keys`).
    """
    if _LOWER.search(key):
        return False
    if _HIGHER.search(key):
        return True
    return None


def is_score_based(key: str) -> bool:
    """Keys computed from probabilities (they cannot be re-derived from a confusion matrix)."""
    return bool(_SCORE_BASED.search(key))


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``, for example ``precision_negative >= 0.80``.

    ``violation(value)`` is 0.0 when met, else how far the value misses the bound, scaled by the
    bound (``|value - bound| / |bound|``; by 1 when the bound is 0). A NaN value misses by ``inf``.
    For a strict operator (``>``, ``<``) a value equal to the bound misses by the smallest positive
    amount (``math.ulp(1.0)``), so "met" and "violation == 0" always agree.
    """

    metric: str
    op: str
    bound: float

    def __post_init__(self) -> None:
        # Objective accepts Constraint instances as given, so the dataclass checks itself.
        if not isinstance(self.metric, str) or not self.metric:
            raise ConfigurationError(
                f"constraints: metric must be a metric key such as 'precision_negative'; got {self.metric!r}."
            )
        if self.op not in _OPS:
            raise ConfigurationError(
                f"constraints: op must be one of {list(_OPS)}; got {self.op!r} in {self.metric!r}."
            )
        if isinstance(self.bound, bool) or not isinstance(self.bound, numbers.Real) or not math.isfinite(self.bound):
            raise ConfigurationError(
                f"constraints: bound must be a finite number; got {self.bound!r} in '{self.metric} {self.op} ...'."
            )
        object.__setattr__(self, "bound", float(self.bound))

    @classmethod
    def parse(cls, text: str | Constraint) -> Constraint:
        if isinstance(text, Constraint):
            return text
        if not isinstance(text, str):
            raise ConfigurationError(
                f"constraints: each constraint must be a string like 'precision_negative >= 0.80'; "
                f"got {text!r} ({type(text).__name__})."
            )
        match = _CONSTRAINT.match(text)
        if match is None:
            raise ConfigurationError(
                f"constraints: cannot parse {text!r}. Expected '<metric key> <op> <number>' with op one of "
                f">=, <=, >, <, for example 'precision_negative >= 0.80'."
            )
        return cls(match["metric"], match["op"], float(match["bound"]))

    def violation(self, value: float | None) -> float:
        if value is None or math.isnan(value):
            return math.inf
        scale = abs(self.bound) if self.bound != 0 else 1.0
        if self.op in (">=", ">"):
            miss = self.bound - value
        else:
            miss = value - self.bound
        if miss > 0:
            return miss / scale
        if miss == 0 and self.op in (">", "<"):
            return math.ulp(1.0)  # equal is not met for a strict bound
        return 0.0

    def __str__(self) -> str:
        bound = f"{self.bound:g}"
        if float(bound) != self.bound:  # :g keeps 6 digits; the text must parse back to the same bound
            bound = repr(self.bound)
        return f"{self.metric} {self.op} {bound}"


@dataclass(frozen=True)
class Objective:
    """The business objective that ranks checkpoints.

    Args:
        metric: the key to optimise, e.g. ``"recall_negative"`` or ``"f1_macro"``.
        greater_is_better: direction. Built-in keys know theirs (giving the opposite one raises);
            a key the library does not know must say.
        constraints: strings like ``"precision_negative >= 0.80"``; only checkpoints meeting every
            constraint compete. A NaN metric never meets a constraint.
        tie_breakers: built-in keys compared in order when objective values are exactly equal; when
            they are equal too, the earlier checkpoint (lower global step) stays best.
        on_infeasible: when no checkpoint meets every constraint: ``"least_violation"`` (default, the
            smallest sum of scaled violations, see :class:`Constraint`), ``"keep_incumbent"`` (the first
            checkpoint evaluated stays best until a feasible one appears) or ``"raise"``
            (:class:`~trainer_ext.errors.InfeasibleObjectiveError` when selection is final).
        min_delta: how much a later checkpoint must beat the current best by (>= 0). Absolute in the
            metric's units, or a fraction of the current best's value with ``min_delta_mode="relative"``.
        cost_matrix: classes x classes (rows true, columns predicted, id order) of the cost of each
            outcome; adds the key ``expected_cost`` (mean cost per example, lower is better).
        class_prior: the class mix expected in production (sums to 1); ``expected_cost`` is then
            re-weighted from the held-out mix to it.
        tune_threshold: binary only. Per checkpoint, choose the decision threshold on the
            probability of class id 1 that optimises this objective under its constraints; that
            checkpoint's count-based metrics are then the ones at that threshold.
        bootstrap_resamples: resamples for the percentile interval of each checkpoint's objective
            value and for the paired comparison of the best with the runner-up (0 turns both off).
        confidence: the interval's coverage (default 0.95). ``seed``: the bootstrap's seed.
        require_significance: a later checkpoint replaces the current best only if the paired
            bootstrap says it is better with one-sided p-value <= ``alpha`` (count-based keys only).
        across_sets: with several held-out sets, how an unprefixed key combines the sets' values:
            ``"mean"`` (weighted by ``set_weights``, equal by default) or ``"worst"``.

    A NaN objective value is never best.
    """

    metric: str
    greater_is_better: bool | None = None
    constraints: tuple[Constraint, ...] = field(default_factory=tuple)
    tie_breakers: tuple[str, ...] = field(default_factory=tuple)
    on_infeasible: str = "least_violation"
    min_delta: float = 0.0
    min_delta_mode: str = "absolute"
    cost_matrix: tuple[tuple[float, ...], ...] | None = None
    class_prior: tuple[float, ...] | None = None
    tune_threshold: bool = False
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    require_significance: bool = False
    alpha: float = 0.05
    across_sets: str = "mean"
    set_weights: tuple[tuple[str, float], ...] | None = None

    def __init__(
        self,
        metric: str,
        greater_is_better: bool | None = None,
        *,
        constraints: Iterable[str | Constraint] = (),
        tie_breakers: Iterable[str] = (),
        on_infeasible: str = "least_violation",
        min_delta: float = 0.0,
        min_delta_mode: str = "absolute",
        cost_matrix: Sequence[Sequence[float]] | None = None,
        class_prior: Sequence[float] | None = None,
        tune_threshold: bool = False,
        bootstrap_resamples: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
        require_significance: bool = False,
        alpha: float = 0.05,
        across_sets: str = "mean",
        set_weights: Mapping[str, float] | None = None,
    ) -> None:
        if not isinstance(metric, str) or not metric:
            raise ConfigurationError(f"metric: expected a metric key such as 'recall_negative'; got {metric!r}.")
        known = known_direction(metric)
        if greater_is_better is None:
            if known is None:
                raise ConfigurationError(
                    f"greater_is_better: {metric!r} is not a built-in metric key, so its direction is unknown. "
                    f"Pass Objective({metric!r}, greater_is_better=True) or greater_is_better=False."
                )
            greater_is_better = known
        elif not isinstance(greater_is_better, bool):
            raise ConfigurationError(f"greater_is_better: expected True or False; got {greater_is_better!r}.")
        elif known is not None and greater_is_better != known:
            raise ConfigurationError(
                f"greater_is_better: {metric!r} is built in and {'higher' if known else 'lower'} is better; "
                f"got greater_is_better={greater_is_better}. Drop the argument."
            )
        if isinstance(constraints, str):
            constraints = [constraints]
        if isinstance(tie_breakers, str):
            tie_breakers = [tie_breakers]
        parsed = tuple(Constraint.parse(c) for c in constraints)
        tie_breakers = tuple(tie_breakers)
        for key in tie_breakers:
            if not isinstance(key, str) or known_direction(key) is None:
                raise ConfigurationError(
                    f"tie_breakers: {key!r} is not a built-in metric key with a known direction; tie-breakers "
                    f"must be keys such as 'f1_negative', 'recall_macro' or 'log_loss'."
                )
        if on_infeasible not in ON_INFEASIBLE:
            raise ConfigurationError(f"on_infeasible: expected one of {list(ON_INFEASIBLE)}; got {on_infeasible!r}.")
        if not isinstance(min_delta, (int, float)) or isinstance(min_delta, bool) or not min_delta >= 0:
            raise ConfigurationError(f"min_delta: expected a number >= 0; got {min_delta!r}.")
        if min_delta_mode not in MIN_DELTA_MODES:
            raise ConfigurationError(f"min_delta_mode: expected one of {list(MIN_DELTA_MODES)}; got {min_delta_mode!r}.")
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "greater_is_better", greater_is_better)
        object.__setattr__(self, "constraints", parsed)
        object.__setattr__(self, "tie_breakers", tie_breakers)
        object.__setattr__(self, "on_infeasible", on_infeasible)
        object.__setattr__(self, "min_delta", float(min_delta))
        object.__setattr__(self, "min_delta_mode", min_delta_mode)
        object.__setattr__(self, "cost_matrix", _matrix(cost_matrix))
        object.__setattr__(self, "class_prior", _prior(class_prior))
        for arg, value in (("tune_threshold", tune_threshold), ("require_significance", require_significance)):
            if not isinstance(value, bool):
                raise ConfigurationError(f"{arg}: expected True or False; got {value!r}.")
        if not isinstance(bootstrap_resamples, int) or isinstance(bootstrap_resamples, bool) or bootstrap_resamples < 0:
            raise ConfigurationError(f"bootstrap_resamples: expected an int >= 0; got {bootstrap_resamples!r}.")
        if require_significance and bootstrap_resamples < 100:
            raise ConfigurationError(
                f"require_significance: needs bootstrap_resamples >= 100; got bootstrap_resamples={bootstrap_resamples}."
            )
        if require_significance and is_score_based(metric):
            raise ConfigurationError(
                f"require_significance: the paired bootstrap resamples confusion-matrix counts, so it needs a "
                f"count-based metric; {metric!r} is computed from scores."
            )
        for arg, value in (("confidence", confidence), ("alpha", alpha)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ConfigurationError(f"{arg}: expected a number strictly between 0 and 1; got {value!r}.")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigurationError(f"seed: expected an int; got {seed!r}.")
        if tune_threshold and is_score_based(metric):
            raise ConfigurationError(
                f"tune_threshold: {metric!r} is computed from scores and does not change with the threshold; "
                f"tune a count-based key such as 'f1_positive', 'recall_negative' or 'expected_cost'."
            )
        if across_sets not in ACROSS_SETS:
            raise ConfigurationError(f"across_sets: expected one of {list(ACROSS_SETS)}; got {across_sets!r}.")
        if set_weights is not None:
            if not isinstance(set_weights, Mapping) or not set_weights or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 for w in set_weights.values()
            ) or sum(set_weights.values()) <= 0:
                raise ConfigurationError(
                    f"set_weights: expected a dict of held-out set name -> weight >= 0 (not all 0); got {set_weights!r}."
                )
            set_weights = tuple(sorted((str(k), float(v)) for k, v in set_weights.items()))
        if metric == "expected_cost" and cost_matrix is None:
            raise ConfigurationError("cost_matrix: the objective 'expected_cost' needs cost_matrix=[[...], ...].")
        object.__setattr__(self, "tune_threshold", tune_threshold)
        object.__setattr__(self, "bootstrap_resamples", bootstrap_resamples)
        object.__setattr__(self, "confidence", float(confidence))
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "require_significance", require_significance)
        object.__setattr__(self, "alpha", float(alpha))
        object.__setattr__(self, "across_sets", across_sets)
        object.__setattr__(self, "set_weights", set_weights)

    def check_classes(self, num_classes: int) -> None:
        """Raise when the cost matrix, prior or threshold tuning does not fit ``num_classes``."""
        if self.cost_matrix is not None and (
            len(self.cost_matrix) != num_classes or any(len(row) != num_classes for row in self.cost_matrix)
        ):
            shape = f"{len(self.cost_matrix)}x{len(self.cost_matrix[0]) if self.cost_matrix else 0}"
            raise ConfigurationError(
                f"cost_matrix: expected {num_classes}x{num_classes} (rows true class, columns predicted, id order); "
                f"got {shape}."
            )
        if self.class_prior is not None and len(self.class_prior) != num_classes:
            raise ConfigurationError(
                f"class_prior: expected {num_classes} shares (one per class, id order); got {len(self.class_prior)}."
            )
        if self.tune_threshold and num_classes != 2:
            raise ConfigurationError(
                f"tune_threshold: decision-threshold tuning is binary-only; the model has {num_classes} classes."
            )

    @property
    def keys(self) -> tuple[str, ...]:
        """Every metric key this objective reads: the metric, constraint keys, tie-breakers."""
        seen: dict[str, None] = {self.metric: None}
        for c in self.constraints:
            seen[c.metric] = None
        for t in self.tie_breakers:
            seen[t] = None
        return tuple(seen)

    def check_keys(self, available: Collection[str], *, argument: str = "objective") -> None:
        """Raise :class:`ConfigurationError` naming every key this objective reads that is not available."""
        missing = [k for k in self.keys if k not in available]
        if missing:
            raise ConfigurationError(
                f"{argument}: unknown metric key(s) {missing}. Keys available for this model's classes: "
                f"{sorted(available)}."
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "greater_is_better": self.greater_is_better,
            "constraints": [str(c) for c in self.constraints],
            "tie_breakers": list(self.tie_breakers),
            "on_infeasible": self.on_infeasible,
            "min_delta": self.min_delta,
            "min_delta_mode": self.min_delta_mode,
            "cost_matrix": [list(row) for row in self.cost_matrix] if self.cost_matrix is not None else None,
            "class_prior": list(self.class_prior) if self.class_prior is not None else None,
            "tune_threshold": self.tune_threshold,
            "bootstrap_resamples": self.bootstrap_resamples,
            "confidence": self.confidence,
            "seed": self.seed,
            "require_significance": self.require_significance,
            "alpha": self.alpha,
            "across_sets": self.across_sets,
            "set_weights": dict(self.set_weights) if self.set_weights is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objective:
        return cls(
            data["metric"],
            data.get("greater_is_better"),
            constraints=data.get("constraints", ()),
            tie_breakers=data.get("tie_breakers", ()),
            on_infeasible=data.get("on_infeasible", "least_violation"),
            min_delta=data.get("min_delta", 0.0),
            min_delta_mode=data.get("min_delta_mode", "absolute"),
            cost_matrix=data.get("cost_matrix"),
            class_prior=data.get("class_prior"),
            tune_threshold=data.get("tune_threshold", False),
            bootstrap_resamples=data.get("bootstrap_resamples", 1000),
            confidence=data.get("confidence", 0.95),
            seed=data.get("seed", 0),
            require_significance=data.get("require_significance", False),
            alpha=data.get("alpha", 0.05),
            across_sets=data.get("across_sets", "mean"),
            set_weights=data.get("set_weights"),
        )

    def replace(self, **changes: Any) -> Objective:
        data = self.to_dict()
        data.update(changes)
        return Objective.from_dict(data)


def _matrix(value: Sequence[Sequence[float]] | None) -> tuple[tuple[float, ...], ...] | None:
    if value is None:
        return None
    try:
        rows = tuple(tuple(float(x) for x in row) for row in value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"cost_matrix: expected a square list of lists of numbers; got {value!r}.") from None
    if not rows or any(len(r) != len(rows) for r in rows) or not all(math.isfinite(x) for r in rows for x in r):
        raise ConfigurationError(f"cost_matrix: expected a square matrix of finite numbers; got {value!r}.")
    return rows


def _prior(value: Sequence[float] | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        shares = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"class_prior: expected a list of class shares; got {value!r}.") from None
    if not shares or any(not (x >= 0) for x in shares) or abs(sum(shares) - 1.0) > 1e-6:
        raise ConfigurationError(f"class_prior: expected shares >= 0 summing to 1, one per class; got {value!r}.")
    return shares


def as_objective(objective: str | Objective) -> Objective:
    """Accept a metric key or an :class:`Objective`; anything else raises ConfigurationError."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        return Objective(objective)
    raise ConfigurationError(
        f"objective: expected a metric key (str) such as 'recall_negative' or an Objective; "
        f"got {objective!r} ({type(objective).__name__})."
    )
