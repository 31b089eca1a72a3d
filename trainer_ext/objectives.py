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
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError

__all__ = ["Constraint", "Objective", "known_direction", "as_objective"]

ON_INFEASIBLE = ("least_violation", "keep_incumbent", "raise")
MIN_DELTA_MODES = ("absolute", "relative")

# Built-in key shapes and their direction. `support_<c>` is a count: it has no direction.
_HIGHER = re.compile(
    r"^(accuracy|balanced_accuracy|mcc|precision_macro|recall_macro|f1_macro|f1_weighted"
    r"|(precision|recall|f1|roc_auc|average_precision)_[a-z0-9_]+)$"
)
_LOWER = re.compile(r"^(log_loss|expected_cost)$")

_OPS = (">=", "<=", ">", "<")
_CONSTRAINT = re.compile(
    r"^\s*(?P<metric>[A-Za-z0-9_./-]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<bound>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$"
)


def known_direction(key: str) -> bool | None:
    """Whether higher is better for a built-in key (True/False), or None when the key is not built in.

    Decided by the key's shape alone, so it works before the model's class names are known; whether
    ``recall_<c>`` names a real class is checked later, against the model (:meth:`Objective.check_keys`).
    """
    if _LOWER.match(key):
        return False
    if _HIGHER.match(key):
        return True
    return None


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

    A NaN objective value is never best.
    """

    metric: str
    greater_is_better: bool | None = None
    constraints: tuple[Constraint, ...] = field(default_factory=tuple)
    tie_breakers: tuple[str, ...] = field(default_factory=tuple)
    on_infeasible: str = "least_violation"
    min_delta: float = 0.0
    min_delta_mode: str = "absolute"

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
        )

    def replace(self, **changes: Any) -> Objective:
        data = self.to_dict()
        data.update(changes)
        return Objective.from_dict(data)


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
