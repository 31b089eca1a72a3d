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
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any

import numpy as np

from .errors import ConfigurationError
from .metrics import metric_direction, metric_kind

__all__ = [
    "Constraint",
    "Objective",
    "as_objective",
    "constraint_violation",
    "is_score_based",
    "known_direction",
    "total_violation",
]

ON_INFEASIBLE = ("least_violation", "keep_incumbent", "raise")
MIN_DELTA_MODES = ("absolute", "relative")
ACROSS_SETS = ("mean", "worst")

_OPS = (">=", "<=", ">", "<")
_CONSTRAINT = re.compile(
    r"^\s*(?P<metric>[\w./-]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<bound>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$"
)


def known_direction(key: str) -> bool | None:
    """Whether higher is better for a built-in key (True/False), or None when the key is not built in.

    :func:`trainer_ext.metrics.metric_direction` by the key's shape alone, so it works before the
    model's class names are known (a held-out set's name may come first); whether ``recall_<c>``
    names a real class is checked later, against the model (:meth:`Objective.check_keys`).
    """
    return metric_direction(key)


def is_score_based(key: str) -> bool:
    """Keys computed from probabilities (they cannot be re-derived from a confusion matrix)."""
    return metric_kind(key) == "score"


def constraint_violation(values: Any, op: str, bound: float) -> Any:
    """How far ``values`` miss ``op bound``, scaled by the bound: THE violation rule, vectorised.

    0.0 when met; else ``|value - bound| / |bound|`` (divided by 1 when the bound is 0); ``inf`` for
    NaN (and None); for a strict operator (``>``, ``<``) a value equal to the bound misses by the
    smallest positive amount (``math.ulp(1.0)``), so "met" and "violation == 0" always agree.
    A scalar (or None) gives a Python float; an array gives an array of the same shape.
    """
    scalar = values is None or np.ndim(values) == 0
    array = np.asarray(np.nan if values is None else values, dtype=np.float64)
    scale = abs(bound) if bound != 0 else 1.0
    miss = (bound - array) if op in (">=", ">") else (array - bound)
    out = np.where(miss > 0, miss / scale, 0.0)
    if op in (">", "<"):
        out = np.where(miss == 0, math.ulp(1.0), out)  # equal is not met for a strict bound
    out = np.where(np.isnan(array), np.inf, out)
    return float(out) if scalar else out


def total_violation(constraints: Iterable[Constraint], values: Mapping[str, Any]) -> Any:
    """Sum of every constraint's violation, ``values[c.metric]`` scalar or array (vectorised)."""
    total: Any = 0.0
    for constraint in constraints:
        total = total + constraint.violation(values.get(constraint.metric))
    return total


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``, for example ``precision_negative >= 0.80``.

    ``violation(value)`` is 0.0 when met, else how far the value misses the bound, scaled by the
    bound (``|value - bound| / |bound|``; by 1 when the bound is 0). A NaN value misses by ``inf``.
    For a strict operator (``>``, ``<``) a value equal to the bound misses by the smallest positive
    amount (``math.ulp(1.0)``), so "met" and "violation == 0" always agree. ``value`` may be an
    array (threshold tuning): see :func:`constraint_violation`.
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

    def violation(self, value: Any) -> Any:
        return constraint_violation(value, self.op, self.bound)

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
    _: KW_ONLY
    constraints: tuple[Constraint, ...] = ()
    tie_breakers: tuple[str, ...] = ()
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

    def __post_init__(self) -> None:
        """Validate every field (one ConfigurationError naming the argument) and normalise it: any
        iterable of constraints / tie-breakers becomes a tuple, numbers become floats, a dict of set
        weights becomes sorted pairs. Checks run in the order of the fields."""
        set_field = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        set_field("greater_is_better", _direction(self.metric, self.greater_is_better))
        constraints, tie_breakers = self.constraints, self.tie_breakers
        set_field("constraints", tuple(Constraint.parse(c) for c in ([constraints] if isinstance(constraints, str) else constraints)))
        set_field("tie_breakers", _tie_breakers(tie_breakers))
        if self.on_infeasible not in ON_INFEASIBLE:
            raise ConfigurationError(f"on_infeasible: expected one of {list(ON_INFEASIBLE)}; got {self.on_infeasible!r}.")
        if not isinstance(self.min_delta, (int, float)) or isinstance(self.min_delta, bool) or not self.min_delta >= 0:
            raise ConfigurationError(f"min_delta: expected a number >= 0; got {self.min_delta!r}.")
        set_field("min_delta", float(self.min_delta))
        if self.min_delta_mode not in MIN_DELTA_MODES:
            raise ConfigurationError(f"min_delta_mode: expected one of {list(MIN_DELTA_MODES)}; got {self.min_delta_mode!r}.")
        set_field("cost_matrix", _matrix(self.cost_matrix))
        set_field("class_prior", _prior(self.class_prior))
        self._check_resampling()
        set_field("confidence", float(self.confidence))
        set_field("alpha", float(self.alpha))
        if self.tune_threshold and is_score_based(self.metric):
            raise ConfigurationError(
                f"tune_threshold: {self.metric!r} is computed from scores and does not change with the threshold; "
                f"tune a count-based key such as 'f1_positive', 'recall_negative' or 'expected_cost'."
            )
        if self.across_sets not in ACROSS_SETS:
            raise ConfigurationError(f"across_sets: expected one of {list(ACROSS_SETS)}; got {self.across_sets!r}.")
        set_field("set_weights", _set_weights(self.set_weights))
        if self.metric == "expected_cost" and self.cost_matrix is None:
            raise ConfigurationError("cost_matrix: the objective 'expected_cost' needs cost_matrix=[[...], ...].")

    def _check_resampling(self) -> None:
        for arg in ("tune_threshold", "require_significance"):
            if not isinstance(getattr(self, arg), bool):
                raise ConfigurationError(f"{arg}: expected True or False; got {getattr(self, arg)!r}.")
        resamples = self.bootstrap_resamples
        if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 0:
            raise ConfigurationError(f"bootstrap_resamples: expected an int >= 0; got {resamples!r}.")
        if self.require_significance and resamples < 100:
            raise ConfigurationError(
                f"require_significance: needs bootstrap_resamples >= 100; got bootstrap_resamples={resamples}."
            )
        if self.require_significance and is_score_based(self.metric):
            raise ConfigurationError(
                f"require_significance: the paired bootstrap resamples confusion-matrix counts, so it needs a "
                f"count-based metric; {self.metric!r} is computed from scores."
            )
        for arg in ("confidence", "alpha"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ConfigurationError(f"{arg}: expected a number strictly between 0 and 1; got {value!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigurationError(f"seed: expected an int; got {self.seed!r}.")

    def check_classes(self, num_classes: int) -> None:
        """Raise when the cost matrix, prior or threshold tuning does not fit ``num_classes``.

        Kept for callers of the first version: the task's check (:meth:`trainer_ext.tasks.Task.check_objective`)
        is the rule; this is that of a single-label task with ``num_classes`` classes."""
        from .tasks import SingleLabel

        SingleLabel([f"class_{i}" for i in range(num_classes)]).check_objective(self)

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
        """Every field, as JSON values (the record's ``objective``); :meth:`from_dict` reads it back."""
        return {f.name: _plain(f.name, getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objective:
        """The inverse of :meth:`to_dict`; a missing field takes its default (older records)."""
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})

    def replace(self, **changes: Any) -> Objective:
        data = self.to_dict()
        data.update(changes)
        return Objective.from_dict(data)


def _plain(name: str, value: Any) -> Any:
    """A field's JSON form: constraints as text, tuples as lists, set weights as a dict."""
    if value is None:
        return None
    if name == "set_weights":
        return dict(value)
    if name == "constraints":
        return [str(c) for c in value]
    if isinstance(value, tuple):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


def _direction(metric: Any, greater_is_better: Any) -> bool:
    if not isinstance(metric, str) or not metric:
        raise ConfigurationError(f"metric: expected a metric key such as 'recall_negative'; got {metric!r}.")
    known = known_direction(metric)
    if greater_is_better is None:
        if known is None:
            raise ConfigurationError(
                f"greater_is_better: {metric!r} is not a built-in metric key, so its direction is unknown. "
                f"Pass Objective({metric!r}, greater_is_better=True) or greater_is_better=False."
            )
        return known
    if not isinstance(greater_is_better, bool):
        raise ConfigurationError(f"greater_is_better: expected True or False; got {greater_is_better!r}.")
    if known is not None and greater_is_better != known:
        raise ConfigurationError(
            f"greater_is_better: {metric!r} is built in and {'higher' if known else 'lower'} is better; "
            f"got greater_is_better={greater_is_better}. Drop the argument."
        )
    return greater_is_better


def _tie_breakers(value: Any) -> tuple[str, ...]:
    keys = tuple([value] if isinstance(value, str) else value)
    for key in keys:
        if not isinstance(key, str) or known_direction(key) is None:
            raise ConfigurationError(
                f"tie_breakers: {key!r} is not a built-in metric key with a known direction; tie-breakers "
                f"must be keys such as 'f1_negative', 'recall_macro' or 'log_loss'."
            )
    return keys


def _set_weights(value: Any) -> tuple[tuple[str, float], ...] | None:
    if value is None:
        return None
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        value = dict(value)  # already normalised (dataclasses.replace, copy)
    if not isinstance(value, Mapping) or not value or any(
        isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 for w in value.values()
    ) or sum(value.values()) <= 0:
        raise ConfigurationError(
            f"set_weights: expected a dict of held-out set name -> weight >= 0 (not all 0); got {value!r}."
        )
    return tuple(sorted((str(k), float(v)) for k, v in value.items()))


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
