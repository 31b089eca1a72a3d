"""trainer_ext: pick the business-best checkpoint of a Hugging Face Trainer run.

    from trainer_ext import BestCheckpointCallback, Objective
    callback = BestCheckpointCallback(eval_dataset=holdout, objective="recall_negative")
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[callback])

The pure pieces (metrics, objectives, selection, records) import neither torch nor transformers; the
callback is imported lazily so that ``import trainer_ext.selection`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigurationError,
    DistributedSetupError,
    InfeasibleObjectiveError,
    SchemaVersionError,
    TrainerExtWarning,
)
from .objectives import Constraint, Objective
from .scoring import Metric
from .selection import Candidate, Selection, select_best
from .thresholds import apply_threshold

if TYPE_CHECKING:
    from .callback import BestCheckpointCallback
    from .tasks.label_words import LabelWords

__version__ = "0.1.0"

__all__ = [
    "BestCheckpointCallback",
    "LabelWords",
    "Objective",
    "Constraint",
    "Metric",
    "apply_threshold",
    "Candidate",
    "Selection",
    "select_best",
    "ConfigurationError",
    "DistributedSetupError",
    "InfeasibleObjectiveError",
    "SchemaVersionError",
    "TrainerExtWarning",
]


def __getattr__(name: str) -> Any:
    if name == "BestCheckpointCallback":
        from .callback import BestCheckpointCallback

        return BestCheckpointCallback
    if name == "LabelWords":
        from .tasks.label_words import LabelWords

        return LabelWords
    raise AttributeError(f"module 'trainer_ext' has no attribute {name!r}")
