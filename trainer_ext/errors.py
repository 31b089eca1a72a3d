"""The exceptions and warnings trainer_ext raises.

Every message has one shape: the argument, what was received, what is allowed or available, and
where it helps, a hint. User input is never checked with ``assert``.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InfeasibleObjectiveError",
    "SchemaVersionError",
    "DistributedSetupError",
    "TrainerExtWarning",
]


class ConfigurationError(ValueError):
    """An argument, a held-out set or a model does not fit what trainer_ext needs."""


class InfeasibleObjectiveError(RuntimeError):
    """No checkpoint meets the objective's constraints and ``on_infeasible="raise"`` was asked."""


class SchemaVersionError(ValueError):
    """A record on disk was written by a newer trainer_ext than the one reading it."""


class DistributedSetupError(RuntimeError):
    """The processes of a launch disagree, or the launch does not match what accelerate sees."""


class TrainerExtWarning(UserWarning):
    """Data problems a user may want to filter: ``warnings.filterwarnings("ignore", category=TrainerExtWarning)``."""
