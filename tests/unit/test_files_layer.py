"""The files layer: checkpoint naming and one checkpoint's files (records), reading a folder back
(run_folder), texts for people (render), and the one ranking with significance (selection.rank)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import recall_score

from trainer_ext.objectives import Objective
from trainer_ext.records import (
    PREVIOUS_LEADERBOARD_FILENAME,
    SCHEMA_VERSION,
    CheckpointRecord,
    append_previous_entries,
    checkpoint_name,
    checkpoint_step,
    decode_floats,
    load_record,
    load_scores,
    read_json,
    save_scores,
    scores_filename,
    write_checkpoint_files,
    write_json_atomic,
)
from trainer_ext.render import format_value, leaderboard_table, objective_header
from trainer_ext.run_folder import (
    SavedPredictions,
    read_earlier_leaderboard,
    read_predictions,
    read_records,
)
from trainer_ext.selection import Candidate, compare_predictions, rank, select_best
from trainer_ext.uncertainty import PairedComparison, paired_bootstrap

SLUGS = ["negative", "positive"]


def record(name: str, *, fingerprint: str | None = "set-a", **metrics: float) -> CheckpointRecord:
    return CheckpointRecord(
        checkpoint=name, global_step=checkpoint_step(name), epoch=None, labels=["NEGATIVE", "POSITIVE"],
        num_samples=4, metrics={"accuracy": 0.5, **metrics}, confusion_matrix=[[1, 1], [1, 1]],
        objective=Objective("accuracy").to_dict(), objective_value=None, feasible=True,
        eval_set={"fingerprint": fingerprint} if fingerprint else {},
    )


# ---- records: names, decoding, one checkpoint's files, the previous leaderboard ----------------------


@pytest.mark.parametrize("name, step", [("checkpoint-12", 12), ("checkpoint-0", 0), ("checkpoint-12-tmp", None),
                                        ("tmp-checkpoint-12", None), ("checkpoint-best", None)])
def test_checkpoint_step_reads_only_trainer_folder_names(name, step):
    assert checkpoint_step(name) == step
    if step is not None:
        assert checkpoint_name(step) == name


def test_scores_filename_per_set():
    assert scores_filename() == "checkpoint_scores.npz"
    assert scores_filename("reviews_2024") == "checkpoint_scores.reviews_2024.npz"


def test_decode_floats_reads_null_as_nan_or_the_given_value():
    decoded = decode_floats({"a": None, "b": 1, "c": 0.5})
    assert math.isnan(decoded["a"]) and decoded["b"] == 1.0 and isinstance(decoded["b"], float)
    assert decode_floats({"x": None}, null=math.inf) == {"x": math.inf}
    assert decode_floats(None) == {}


class _Output:
    def __init__(self, labels, probabilities):
        self.labels, self.probabilities = labels, probabilities


def test_write_checkpoint_files_writes_record_scores_and_threshold(tmp_path):
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    labels, predictions = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    write_checkpoint_files(folder, record("checkpoint-4"), {None: _Output(labels, probabilities)},
                           {None: predictions}, threshold={"class_id": 1, "threshold": 0.35})
    assert load_record(folder).checkpoint == "checkpoint-4"
    scores = load_scores(folder)
    assert np.array_equal(scores["labels"], labels) and np.array_equal(scores["predictions"], predictions)
    assert np.allclose(scores["probabilities"], probabilities)
    config = json.loads((folder / "config.json").read_text())
    assert config["decision_threshold"] == {"class_id": 1, "threshold": 0.35} and config["model_type"] == "llama"


def test_write_checkpoint_files_without_scores_or_config(tmp_path):
    folder = tmp_path / "checkpoint-4"
    write_checkpoint_files(folder, record("checkpoint-4"), {None: _Output([0], None)}, {None: np.array([0])},
                           save_scores=False, threshold=0.5)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_metrics.json"]  # no config.json to edit


def test_append_previous_entries_keeps_every_move(tmp_path):
    board = {"objective": Objective("accuracy").to_dict(), "labels": ["NEGATIVE", "POSITIVE"],
             "best_checkpoint": "checkpoint-1"}
    first = [{"checkpoint": "checkpoint-1", "metrics": {"accuracy": 0.5}}]
    second = [{"checkpoint": "checkpoint-2", "metrics": {"accuracy": None}}]
    append_previous_entries(tmp_path, board, first, reason="one")
    path = append_previous_entries(tmp_path, board, second, reason="two")
    assert path == tmp_path / PREVIOUS_LEADERBOARD_FILENAME
    data = read_json(path)
    assert data["schema_version"] == SCHEMA_VERSION
    assert [m["reason"] for m in data["moves"]] == ["one", "two"]
    assert [m["entries"] for m in data["moves"]] == [first, second]
    assert data["moves"][0]["objective"] == board["objective"] and data["moves"][0]["best_checkpoint"] == "checkpoint-1"


# ---- run_folder ---------------------------------------------------------------------------------------


def test_read_predictions_reads_the_saved_files_and_leaves_out_the_others(tmp_path):
    save_scores(tmp_path / "checkpoint-1", [0, 1, 1], [0, 0, 1], None)
    save_scores(tmp_path / "checkpoint-2", [0, 1, 1], [1, 1, 1], None, filename=scores_filename("b"))
    got = read_predictions(tmp_path, ["checkpoint-1", "checkpoint-2", "checkpoint-3"])
    assert list(got) == ["checkpoint-1"]
    labels, predictions = got["checkpoint-1"]
    assert isinstance(got["checkpoint-1"], SavedPredictions)
    assert labels.tolist() == [0, 1, 1] and predictions.tolist() == [0, 0, 1]
    assert list(read_predictions(tmp_path, ["checkpoint-1", "checkpoint-2"], "b")) == ["checkpoint-2"]


def _board(entries: list[dict]) -> dict:
    return {"schema_version": 1, "objective": Objective("accuracy").to_dict(), "best_checkpoint": None,
            "reason": "", "labels": ["NEGATIVE", "POSITIVE"], "entries": entries}


def _entry(name: str, **extra) -> dict:
    return {"rank": 1, "checkpoint": name, "global_step": checkpoint_step(name), "epoch": None,
            "objective_value": 0.5, "feasible": True, "violations": {}, "exists": False, "protected": False,
            "metrics": {"accuracy": 0.5, "recall_negative": None}, **extra}


def test_earlier_leaderboard_fingerprints_from_entries_records_or_the_shared_one(tmp_path):
    record("checkpoint-3", fingerprint="set-a").write(tmp_path / "checkpoint-3")
    record("checkpoint-4", fingerprint="set-a").write(tmp_path / "checkpoint-4")
    entries = [_entry("checkpoint-1"), _entry("checkpoint-2", fingerprint="set-b"), _entry("checkpoint-3"),
               _entry("checkpoint-4")]
    write_json_atomic(tmp_path / "checkpoint_leaderboard.json", _board(entries))
    earlier = read_earlier_leaderboard(tmp_path)
    # checkpoint-1 predates the field and has no record left: the records on disk share set-a.
    assert earlier.fingerprints == {"checkpoint-1": "set-a", "checkpoint-2": "set-b", "checkpoint-3": "set-a",
                                    "checkpoint-4": "set-a"}
    kept, moved = earlier.split({"set-a"}, {"checkpoint-3", "checkpoint-4"}, Objective("recall_negative"))
    assert list(kept) == ["checkpoint-1"] and [e["checkpoint"] for e in moved] == ["checkpoint-2"]
    assert kept["checkpoint-1"].eval_set == {"fingerprint": "set-a"}
    assert math.isnan(kept["checkpoint-1"].metrics["recall_negative"])
    assert kept["checkpoint-1"].objective["metric"] == "recall_negative"
    kept, moved = earlier.split({"set-c"}, {"checkpoint-3", "checkpoint-4"}, Objective("accuracy"))
    assert kept == {} and len(moved) == 4  # another set: every earlier measurement moves, on disk or not


def test_earlier_leaderboard_with_records_of_two_sets_leaves_old_entries_unknown(tmp_path):
    record("checkpoint-3", fingerprint="set-a").write(tmp_path / "checkpoint-3")
    record("checkpoint-4", fingerprint="set-b").write(tmp_path / "checkpoint-4")
    write_json_atomic(tmp_path / "checkpoint_leaderboard.json",
                      _board([_entry("checkpoint-1"), _entry("checkpoint-3"), _entry("checkpoint-4")]))
    earlier = read_earlier_leaderboard(tmp_path)
    assert earlier.fingerprints["checkpoint-1"] is None
    kept, moved = earlier.split({"set-a"}, {"checkpoint-3", "checkpoint-4"}, Objective("accuracy"))
    assert kept == {} and [e["checkpoint"] for e in moved] == ["checkpoint-1", "checkpoint-4"]  # unknown moves
    assert read_earlier_leaderboard(tmp_path / "checkpoint-3") is None  # no leaderboard there


def test_read_records_rebuilds_rotated_entries_with_their_fingerprint(tmp_path):
    record("checkpoint-3").write(tmp_path / "checkpoint-3")
    write_json_atomic(tmp_path / "checkpoint_leaderboard.json",
                      _board([_entry("checkpoint-1", fingerprint="set-a"), _entry("checkpoint-3")]))
    records = read_records(tmp_path)
    assert sorted(records) == ["checkpoint-1", "checkpoint-3"]
    assert records["checkpoint-1"].eval_set == {"fingerprint": "set-a"} and records["checkpoint-1"].confusion_matrix == []
    assert records["checkpoint-3"].confusion_matrix == [[1, 1], [1, 1]]  # the folder's record wins


# ---- render -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, text", [(0.5, "0.5000"), (np.float32(0.25), "0.2500"), (None, "n/a"),
                                         (math.nan, "n/a"), (math.inf, "n/a"), (3, "3"), (True, "True"), ("x", "x")])
def test_format_value(value, text):
    assert format_value(value) == text


def test_objective_header_markdown_and_plain():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.9"], tie_breakers=["accuracy"])
    assert objective_header(objective) == (
        "Objective: **recall_negative** (higher is better), constraints: precision_negative >= 0.9, "
        "tie-breakers: accuracy"
    )
    assert objective_header(objective.to_dict(), markdown=False) == (
        "Objective: recall_negative (higher is better); constraints: precision_negative >= 0.9; tie-breakers: accuracy"
    )
    assert objective_header(Objective("log_loss")) == "Objective: **log_loss** (lower is better)"


def test_leaderboard_table_aligns_numbers_right_and_marks_the_best():
    payload = {"objective": Objective("accuracy").to_dict(), "best_checkpoint": "checkpoint-10", "reason": "why",
               "entries": [_entry("checkpoint-10", rank=1, exists=True, metrics={"accuracy": 0.75}),
                           _entry("checkpoint-9", rank=2, metrics={"accuracy": None})]}
    lines = leaderboard_table(payload, ["accuracy"]).splitlines()
    assert lines[:3] == ["Objective: accuracy (higher is better)", "Best: checkpoint-10 (why)", ""]
    assert lines[3].split() == ["rank", "checkpoint", "step", "feasible", "on", "disk", "accuracy"]
    assert lines[4].split() == ["1", "checkpoint-10", "*", "10", "yes", "yes", "0.7500"]
    assert lines[5].split() == ["2", "checkpoint-9", "9", "yes", "no", "n/a"]
    assert lines[4].endswith("0.7500") and lines[5].endswith("   n/a")  # right-aligned


# ---- selection.rank -----------------------------------------------------------------------------------


def _comparison(first: str, second: str, win_share: float) -> PairedComparison:
    return PairedComparison(first, second, 0.1, -0.1, 0.3, win_share, 0.95, 100, 0)


def test_rank_compares_best_with_runner_up_only_when_resampling():
    candidates = [Candidate("checkpoint-1", 1, {"accuracy": 0.6}), Candidate("checkpoint-2", 2, {"accuracy": 0.8})]
    calls = []

    def compare(first, second):
        calls.append((first, second))
        return _comparison(first, second, 0.9)

    result = rank(candidates, Objective("accuracy", bootstrap_resamples=0), compare=compare)
    assert result.selection.best_checkpoint == "checkpoint-2" and result.comparison is None and calls == []
    result = rank(candidates, Objective("accuracy", bootstrap_resamples=100), compare=compare)
    assert calls == [("checkpoint-2", "checkpoint-1")]
    assert result.comparison_dict == _comparison("checkpoint-2", "checkpoint-1", 0.9).to_dict()
    assert rank(candidates[:1], Objective("accuracy", bootstrap_resamples=100), compare=compare).comparison is None


@pytest.mark.parametrize("win_share, best", [(0.5, "checkpoint-1"), (0.99, "checkpoint-2")])
def test_rank_takes_over_only_when_significant(win_share, best):
    candidates = [Candidate("checkpoint-1", 1, {"accuracy": 0.6}), Candidate("checkpoint-2", 2, {"accuracy": 0.8})]
    objective = Objective("accuracy", require_significance=True, alpha=0.05, bootstrap_resamples=100)
    result = rank(candidates, objective, compare=lambda a, b: _comparison(a, b, win_share))
    assert result.selection.best_checkpoint == best
    expected = select_best(candidates, objective, p_value=lambda a, b: 1.0 - win_share)
    assert result.selection == expected


def test_rank_without_a_comparison_lets_the_values_decide():
    candidates = [Candidate("checkpoint-1", 1, {"accuracy": 0.6}), Candidate("checkpoint-2", 2, {"accuracy": 0.8})]
    objective = Objective("accuracy", require_significance=True, bootstrap_resamples=100)
    result = rank(candidates, objective, compare=lambda a, b: None)
    assert result.selection.best_checkpoint == "checkpoint-2" and result.comparison is None


def test_compare_predictions_is_the_paired_bootstrap_of_the_objective_key():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    first = np.where(rng.random(200) < 0.8, labels, 1 - labels)
    second = np.where(rng.random(200) < 0.6, labels, 1 - labels)
    objective = Objective("reviews_recall_negative", bootstrap_resamples=200, seed=3)
    got = compare_predictions(objective, SLUGS, labels, first, second, names=("a", "b"), target="reviews")
    expected = paired_bootstrap(labels, first, second, "recall_negative", SLUGS, greater_is_better=True,
                                names=("a", "b"), resamples=200, seed=3)
    assert got == expected
    # the point difference is scikit-learn's recall of class 0, first minus second
    reference = recall_score(labels, first, pos_label=0) - recall_score(labels, second, pos_label=0)
    assert got.difference == pytest.approx(reference, abs=1e-12)
    assert compare_predictions(Objective("log_loss"), SLUGS, labels, first, second, names=("a", "b")) is None
