"""Rotation matrix: for every valid combination of ``save_total_limit`` (None, 1, 2, 3), ``save_strategy``
("steps", "epoch", "best"), the Trainer's ``metric_for_best_model`` (None, "loss", "accuracy") and
``load_best_model_at_end`` (True, False), the business-best checkpoint exists at the end and its weights
are the ones in ``trainer.model``.

Each run is tiny: 32 training reviews, batch 16, 3 epochs = 6 steps, saves (and, when the Trainer
evaluates, evaluations) at steps 2, 4 and 6. The Trainer's choice and ours disagree on purpose (see
``reliability_data``): its "loss" and "accuracy" (on the true labels, via ``compute_metrics``) prefer
late checkpoints, our accuracy on the flipped labels prefers early ones; each case checks that the
disagreement really happened, so none passes by accident.

The Trainer evaluates when it has a metric or loads the best at the end (``eval_strategy`` then follows
the save schedule, as ``load_best_model_at_end`` requires; "steps" every 2 steps for
``save_strategy="best"``), else not at all. The one invalid combination, ``save_strategy="best"`` without
any ``metric_for_best_model``, is asserted to be refused by the Trainer.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from reliability_data import keyword_data, same_weights

LIMITS = [None, 1, 2, 3]
STRATEGIES = ["steps", "epoch", "best"]
TRAINER_METRICS = [None, "loss", "accuracy"]  # "accuracy": compute_metrics on the true labels
LOAD_BEST = [True, False]
SAVE_STEPS = [2, 4, 6]


def _rejected(strategy: str, metric: str | None, load_best: bool) -> bool:
    # load_best_model_at_end=True defaults metric_for_best_model to "loss"; "best" needs some metric.
    return strategy == "best" and metric is None and not load_best


def _case_id(limit, strategy, metric, load_best) -> str:
    return f"limit={limit}-save={strategy}-trainer_metric={metric}-load_best={load_best}"


ALL = list(itertools.product(LIMITS, STRATEGIES, TRAINER_METRICS, LOAD_BEST))
VALID = [c for c in ALL if not _rejected(*c[1:])]
REJECTED = [c for c in ALL if _rejected(*c[1:])]


@pytest.fixture(scope="module")
def data():
    return keyword_data()


def _compute_accuracy(prediction):
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def _trainer(data, out: Path, limit, strategy, metric, load_best):
    from synthetic_reviews import tiny_llama_classifier
    from transformers import Trainer, TrainingArguments

    from trainer_ext import BestCheckpointCallback

    evaluates = metric is not None or load_best
    args = TrainingArguments(
        output_dir=str(out), num_train_epochs=3, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        learning_rate=1e-2, save_strategy=strategy, save_steps=2, save_total_limit=limit,
        eval_strategy=("steps" if strategy == "best" else strategy) if evaluates else "no", eval_steps=2,
        metric_for_best_model=metric, greater_is_better=True if metric == "accuracy" else None,
        load_best_model_at_end=load_best, report_to=[], use_cpu=True, seed=0, logging_strategy="no",
        disable_tqdm=True,
    )
    callback = BestCheckpointCallback(data["flipped"], "accuracy", data_collator=data["collator"])
    return Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0), args=args, train_dataset=data["train"],
        eval_dataset=data["holdout"] if evaluates else None, data_collator=data["collator"],
        compute_metrics=_compute_accuracy if evaluates else None, callbacks=[callback],
    ), callback


def _independent_best(out: Path, board: dict) -> str | None:
    """The choice recomputed from the files: each existing folder's record, plus the leaderboard entry
    of each folder rotation deleted (the only place its metrics survive)."""
    from trainer_ext import Candidate, Objective, select_best
    from trainer_ext.records import load_record

    candidates = {}
    for folder in out.glob("checkpoint-*"):
        record = load_record(folder)
        candidates[record.checkpoint] = Candidate(record.checkpoint, record.global_step, record.metrics)
    for entry in board["entries"]:
        if entry["checkpoint"] not in candidates:
            assert not entry["exists"], entry["checkpoint"]
            candidates[entry["checkpoint"]] = Candidate(entry["checkpoint"], entry["global_step"], entry["metrics"])
    return select_best(list(candidates.values()), Objective("accuracy")).best_checkpoint


def _trainer_own_choice(trainer, metric: str) -> int:
    """The step the Trainer's own comparison would pick from its eval logs (ties keep the earlier)."""
    evals = [h for h in trainer.state.log_history if f"eval_{metric}" in h]
    sign = 1 if metric == "accuracy" else -1
    return max(evals, key=lambda h: (sign * h[f"eval_{metric}"], -h["step"]))["step"]


@pytest.mark.parametrize(("limit", "strategy", "metric", "load_best"), VALID, ids=[_case_id(*c) for c in VALID])
def test_business_best_survives_rotation_and_is_loaded(quick_runs, data, tmp_path, limit, strategy, metric, load_best):
    trainer, callback = _trainer(data, tmp_path, limit, strategy, metric, load_best)
    trainer.train()

    board = json.loads((tmp_path / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))
    steps = sorted(e["global_step"] for e in board["entries"])
    ours = [h for h in trainer.state.log_history if "holdout_accuracy" in h]
    if strategy == "best":
        # Saved exactly when the business objective improved (the Trainer evaluated at 2, 4, 6).
        best_so_far, improved = -1.0, []
        for h in ours:
            if h["holdout_accuracy"] > best_so_far:
                best_so_far, improved = h["holdout_accuracy"], improved + [h["step"]]
        assert [h["step"] for h in ours] == SAVE_STEPS
        assert steps == improved
    else:
        assert steps == SAVE_STEPS, f"every save is evaluated: {steps}"

    best = _independent_best(tmp_path, board)
    assert best is not None and board["best_checkpoint"] == best
    assert (tmp_path / best).is_dir(), f"rotation deleted the business-best {best}"
    assert trainer.state.best_model_checkpoint == str(tmp_path / best)
    assert same_weights(trainer.model, tmp_path / best), f"trainer.model does not hold {best}'s weights"

    # The case is not vacuous: the Trainer alone would have chosen (or ended with) another checkpoint.
    trainer_metric = trainer.args.metric_for_best_model
    if trainer_metric is not None:
        own = _trainer_own_choice(trainer, trainer_metric)
        assert f"checkpoint-{own}" != best, f"the Trainer's {trainer_metric} agrees with ours ({best})"
    last = tmp_path / f"checkpoint-{steps[-1]}"
    if best != last.name:
        assert not last.exists() or not same_weights(trainer.model, last)
    else:
        assert strategy == "best", "with 3 saves, the business-best must not be the last one here"


@pytest.mark.parametrize(("limit", "strategy", "metric", "load_best"), REJECTED, ids=[_case_id(*c) for c in REJECTED])
def test_invalid_combination_is_refused_by_the_trainer(data, tmp_path, limit, strategy, metric, load_best):
    """The skipped combinations are skipped because transformers refuses them, not by our choice."""
    with pytest.raises(ValueError, match="metric_for_best_model` must be provided when using 'best' save_strategy"):
        _trainer(data, tmp_path, limit, strategy, metric, load_best)
