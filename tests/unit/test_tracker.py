"""RunTracker without a Trainer: the life of an evaluation (propose, hold, commit, set aside, forget), the
run-control decisions of issue 13 (which evaluation deserves a save, what counts as an improvement for
early stopping), keep_top_k rotation, and what a resumed run reads back from disk."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from trainer_ext import Objective
from trainer_ext.records import CheckpointRecord, checkpoint_name, write_leaderboard
from trainer_ext.tracker import PendingEvaluation, RunTracker, read_resumed_run


def _evaluate(tracker: RunTracker, step: int, accuracy: float, precision: float = 1.0):
    """Propose and hold one evaluation, as the callback does; return its ranked place."""
    metrics = {"accuracy": accuracy, "precision_negative": precision}
    name = checkpoint_name(step)
    ranked = tracker.propose(name, step, SimpleNamespace(metrics=metrics), {None: np.array([0, 1])})
    record = CheckpointRecord(
        checkpoint=name, global_step=step, epoch=step / 10, labels=["negative", "positive"], num_samples=2,
        metrics=metrics, confusion_matrix=[[1, 0], [0, 1]], objective=tracker.objective.to_dict(),
        objective_value=ranked.objective_value, feasible=ranked.feasible, violations=dict(ranked.violations),
    )
    tracker.hold(PendingEvaluation(record, SimpleNamespace(metrics=metrics), {}))
    return ranked


def test_propose_hold_commit_makes_a_record():
    tracker = RunTracker(Objective("accuracy"))
    _evaluate(tracker, 10, 0.7)
    assert tracker.is_pending("checkpoint-10") and tracker.best.checkpoint == "checkpoint-10"
    assert tracker.commit().checkpoint == "checkpoint-10"
    assert list(tracker.records) == ["checkpoint-10"] and tracker.pending is None
    with pytest.raises(RuntimeError):
        tracker.commit()


def test_forget_unsaved_drops_an_earlier_pending_evaluation():
    tracker = RunTracker(Objective("accuracy"))
    _evaluate(tracker, 10, 0.7)
    tracker.commit()
    _evaluate(tracker, 20, 0.9)
    assert tracker.best.checkpoint == "checkpoint-20"
    tracker.forget_unsaved(20)  # same step: kept
    assert tracker.is_pending("checkpoint-20")
    tracker.forget_unsaved(30)
    assert tracker.pending is None and tracker.best.checkpoint == "checkpoint-10"


def test_set_aside_keeps_an_unsaved_entry_that_is_never_the_best():
    tracker = RunTracker(Objective("accuracy"))
    _evaluate(tracker, 10, 0.7)
    tracker.commit()
    _evaluate(tracker, 20, 0.9)  # better, but not saved (save="all", the Trainer does not save step 20)
    tracker.set_aside()
    assert tracker.best.checkpoint == "checkpoint-10" and tracker.evaluated(20) and not tracker.evaluated(30)
    entries = tracker.leaderboard()["entries"]
    assert [(e["checkpoint"], e["rank"], e["saved"]) for e in entries] == [
        ("checkpoint-10", 1, True), ("checkpoint-20", None, False)
    ]
    assert entries[1]["metrics"]["accuracy"] == 0.9 and entries[1]["global_step"] == 20


def test_deserves_save_improved_and_top_k():
    tracker = RunTracker(Objective("accuracy"), keep_top_k=2)
    decisions = []
    for step, value in [(10, 0.5), (20, 0.7), (30, 0.6), (40, 0.55), (50, 0.8)]:
        _evaluate(tracker, step, value)
        decisions.append((tracker.deserves_save(checkpoint_name(step), "improved"),
                          tracker.deserves_save(checkpoint_name(step), "top_k")))
        tracker.commit()
    assert decisions == [(True, True), (True, True), (False, True), (False, False), (True, True)]


def test_min_delta_decides_the_save_too():
    tracker = RunTracker(Objective("accuracy", min_delta=0.05))
    _evaluate(tracker, 10, 0.70)
    tracker.commit()
    _evaluate(tracker, 20, 0.73)  # better by less than min_delta: the best stays
    assert not tracker.deserves_save("checkpoint-20", "improved")


def test_improves_threshold_and_feasibility():
    tracker = RunTracker(Objective("accuracy", constraints=["precision_negative >= 0.8"]))
    _evaluate(tracker, 10, 0.6, precision=0.5)  # infeasible, first: the best
    assert tracker.improves("checkpoint-10", None, 0.0)
    tracker.commit()
    previous = tracker.best
    _evaluate(tracker, 20, 0.55, precision=0.9)  # feasible after infeasible: an improvement, lower value or not
    assert tracker.improves("checkpoint-20", previous, 0.0)
    tracker.commit()
    previous = tracker.best
    _evaluate(tracker, 30, 0.99, precision=0.1)  # infeasible: never beats a feasible best
    assert tracker.best.checkpoint == "checkpoint-20" and not tracker.improves("checkpoint-30", previous, 0.0)
    tracker.set_aside()
    _evaluate(tracker, 40, 0.57, precision=0.9)  # new best by 0.02
    assert tracker.improves("checkpoint-40", previous, 0.01) and not tracker.improves("checkpoint-40", previous, 0.05)
    assert [tracker.count_for_patience(x) for x in (False, False, True, False)] == [1, 2, 0, 1]


def test_improves_for_a_loss():
    tracker = RunTracker(Objective("log_loss"))
    first = tracker.propose("checkpoint-10", 10, SimpleNamespace(metrics={"log_loss": 0.5}), {})
    tracker.hold(PendingEvaluation(_record("checkpoint-10", 10, {"log_loss": 0.5}, first), None, {}))
    tracker.commit()
    previous = tracker.best
    tracker.propose("checkpoint-20", 20, SimpleNamespace(metrics={"log_loss": 0.3}), {})
    assert tracker.improves("checkpoint-20", previous, 0.1) and not tracker.improves("checkpoint-20", previous, 0.3)


def _record(name, step, metrics, ranked):
    return CheckpointRecord(
        checkpoint=name, global_step=step, epoch=None, labels=["negative", "positive"], num_samples=2, metrics=metrics,
        confusion_matrix=[[1, 0], [0, 1]], objective={}, objective_value=ranked.objective_value,
        feasible=ranked.feasible,
    )


def test_folders_to_rotate_keeps_newest_best_and_top_k():
    tracker = RunTracker(Objective("accuracy"), keep_top_k=2)
    for step, value in [(10, 0.9), (20, 0.5), (30, 0.8), (40, 0.4), (50, 0.3)]:
        _evaluate(tracker, step, value)
        tracker.commit()
    folders = [checkpoint_name(s) for s in (10, 20, 30, 40, 50)]
    assert tracker.folders_to_rotate(folders, 3) == ["checkpoint-20", "checkpoint-40"]
    assert tracker.folders_to_rotate(folders, None) == []


def test_resume_brings_back_records_and_unsaved_entries(tmp_path):
    tracker = RunTracker(Objective("accuracy"))
    for step, value, saved in [(10, 0.5, True), (20, 0.4, False), (30, 0.6, True), (40, 0.55, False), (50, 0.7, True)]:
        _evaluate(tracker, step, value)
        tracker.commit() if saved else tracker.set_aside()
    write_leaderboard(tmp_path, tracker.leaderboard())
    resumed = read_resumed_run(
        tmp_path, global_step=30, checkpoint="checkpoint-30", objective=Objective("accuracy"), set_names=[None],
        needed_files=[],
    )
    assert sorted(resumed.records) == ["checkpoint-10", "checkpoint-30"]
    assert sorted(resumed.unsaved) == ["checkpoint-20"]
    again = RunTracker(Objective("accuracy"))
    again.resume(resumed)
    assert again.best.checkpoint == "checkpoint-30" and again.evaluated(20)
    # the count of evaluations without improvement: 10 (first, improves), 20 (unsaved: no), 30 (improves)
    assert again.replay_patience(0.0) == 0
    assert again.replay_patience(0.5) == 2  # 30 beats 10 by 0.1 only
