"""trainer_ext.records: strict versioned JSON, atomic writes, record and score round trips, the leaderboard."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer_ext.errors import SchemaVersionError
from trainer_ext.objectives import Objective
from trainer_ext.records import (
    LEADERBOARD_FILENAME,
    RECORD_FILENAME,
    SCHEMA_VERSION,
    SCORES_FILENAME,
    CheckpointRecord,
    leaderboard_payload,
    load_record,
    load_scores,
    read_json,
    save_scores,
    write_json_atomic,
)
from trainer_ext.render import leaderboard_markdown as render_leaderboard_markdown
from trainer_ext.selection import Candidate, select_best

REPO_ROOT = Path(__file__).resolve().parents[2]


def strict_load(path: Path):
    """json.load that refuses NaN / Infinity, which Python's json accepts by default."""

    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def folder_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- write_json_atomic -----------------------------------------------------------------------


def test_write_json_atomic_writes_strict_sorted_indented_json(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(
        path,
        {
            "schema_version": 1,
            "b_nan": math.nan,
            "a_list": [math.inf, -math.inf, 1.5, np.float32(0.5), np.int64(3)],
            "c_nested": {"z": np.float64(math.nan), "y": (1, 2), "x": np.array([[1, 2], [3, 4]])},
            "d_flag": np.bool_(True),
            "e_none": None,
        },
    )
    text = path.read_text(encoding="utf-8")
    expected = {
        "schema_version": 1,
        "b_nan": None,
        "a_list": [None, None, 1.5, 0.5, 3],
        "c_nested": {"z": None, "y": [1, 2], "x": [[1, 2], [3, 4]]},
        "d_flag": True,
        "e_none": None,
    }
    assert strict_load(path) == expected
    assert text == json.dumps(expected, indent=2, sort_keys=True) + "\n"
    assert "NaN" not in text and "Infinity" not in text
    assert folder_listing(tmp_path) == ["record.json"]


def test_write_json_atomic_creates_missing_folders(tmp_path):
    path = tmp_path / "run" / "checkpoint-100" / "record.json"
    write_json_atomic(path, {"schema_version": 1})
    assert strict_load(path) == {"schema_version": 1}


def test_write_json_atomic_replaces_an_existing_file(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"schema_version": 1, "value": 1})
    write_json_atomic(path, {"schema_version": 1, "value": 2})
    assert strict_load(path) == {"schema_version": 1, "value": 2}
    assert folder_listing(tmp_path) == ["record.json"]


def test_payload_that_cannot_be_serialised_leaves_the_previous_file(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"schema_version": 1, "value": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json_atomic(path, {"schema_version": 1, "value": object()})
    assert path.read_bytes() == before
    assert folder_listing(tmp_path) == ["record.json"]


def test_failing_replace_leaves_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    # The temp file is fully written when os.replace fails: the cleanup path must remove it.
    path = tmp_path / "record.json"
    write_json_atomic(path, {"schema_version": 1, "value": 1})
    before = path.read_bytes()

    def failing_replace(src, dst):
        assert Path(src).parent == tmp_path and Path(src).exists()  # a temp file in the same folder
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"schema_version": 1, "value": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert folder_listing(tmp_path) == ["record.json"]


def test_failing_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_json_atomic(tmp_path / "record.json", {"schema_version": 1})
    monkeypatch.undo()
    assert folder_listing(tmp_path) == []


# --- read_json ---------------------------------------------------------------------------


def test_read_json_reads_the_current_version(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"schema_version": SCHEMA_VERSION, "value": math.nan})
    assert read_json(path) == {"schema_version": SCHEMA_VERSION, "value": None}


def test_read_json_refuses_a_newer_schema_naming_the_file(tmp_path):
    path = tmp_path / "checkpoint-100" / RECORD_FILENAME
    write_json_atomic(path, {"schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(SchemaVersionError) as excinfo:
        read_json(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert f"schema_version {SCHEMA_VERSION + 1} is newer" in message
    assert f"({SCHEMA_VERSION})" in message
    assert "Upgrade trainer-ext" in message


@pytest.mark.parametrize("content", [{"value": 1}, {"schema_version": "1"}, {"schema_version": None}, [1, 2]])
def test_read_json_refuses_a_file_without_an_integer_schema_version(tmp_path, content):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(SchemaVersionError) as excinfo:
        read_json(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "no integer 'schema_version'" in message


# --- CheckpointRecord ------------------------------------------------------------------------


def make_record(checkpoint: str = "checkpoint-100", step: int = 100, **metrics: float) -> CheckpointRecord:
    base = {
        "accuracy": 0.75,
        "f1_macro": 0.7,
        "precision_negative": 0.8,
        "recall_negative": 0.6,
        "f1_negative": 0.6857142857142857,
        "support_negative": 5.0,
        "precision_positive": 0.7,
        "recall_positive": 0.875,
        "f1_positive": 0.7777777777777778,
        "support_positive": 8.0,
        "roc_auc_negative": math.nan,  # undefined, kept as NaN
    }
    base.update(metrics)
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.9"])
    return CheckpointRecord(
        checkpoint=checkpoint,
        global_step=step,
        epoch=1.5,
        labels=["negative", "positive"],
        num_samples=13,
        metrics=base,
        confusion_matrix=[[3, 2], [1, 7]],
        objective=objective.to_dict(),
        objective_value=base["recall_negative"],
        feasible=False,
        violations={"precision_negative >= 0.9": 0.1111111111111111, "log_loss <= 0.5": math.inf},
        eval_set={"name": "holdout", "num_samples": 13, "fingerprint": "abc123"},
        evaluation={"processes": 2, "precision": "fp32", "seconds": 0.25},
    )


def assert_same_record(loaded: CheckpointRecord, original: CheckpointRecord) -> None:
    assert loaded.metrics.keys() == original.metrics.keys()
    for key, value in original.metrics.items():
        if math.isnan(value):
            assert math.isnan(loaded.metrics[key]), key
        else:
            assert loaded.metrics[key] == value, key
    without_metrics = {**original.__dict__, "metrics": None}
    assert {**loaded.__dict__, "metrics": None} == without_metrics


def test_record_round_trip_preserves_nan_metrics(tmp_path):
    record = make_record()
    path = record.write(tmp_path / "checkpoint-100")
    assert path == tmp_path / "checkpoint-100" / RECORD_FILENAME
    on_disk = strict_load(path)
    assert on_disk["metrics"]["roc_auc_negative"] is None
    assert on_disk["schema_version"] == SCHEMA_VERSION
    assert_same_record(load_record(tmp_path / "checkpoint-100"), record)  # the folder
    assert_same_record(load_record(path), record)  # or the file itself


def test_record_round_trip_of_an_infinite_violation(tmp_path):
    # A NaN constraint metric misses by inf; inf is written as null and must read back as inf.
    record = make_record()
    loaded = load_record(record.write(tmp_path))
    assert loaded.violations == {"precision_negative >= 0.9": 0.1111111111111111, "log_loss <= 0.5": math.inf}


def test_record_to_dict_is_plain_json(tmp_path):
    record = make_record(accuracy=np.float32(0.75))
    data = record.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["metrics"]["accuracy"] == 0.75 and type(data["metrics"]["accuracy"]) is float


def test_record_from_dict_ignores_unknown_keys(tmp_path):
    data = make_record().to_dict()
    data["written_by"] = "a later minor version"
    assert_same_record(CheckpointRecord.from_dict(data), make_record())


def test_load_record_refuses_a_newer_schema(tmp_path):
    data = make_record().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    write_json_atomic(tmp_path / RECORD_FILENAME, data)
    with pytest.raises(SchemaVersionError, match=RECORD_FILENAME):
        load_record(tmp_path)


# --- scores ------------------------------------------------------------------------------


def test_scores_round_trip(tmp_path):
    labels = np.array([0, 1, 2, 1])
    predictions = np.array([0, 2, 2, 1], dtype=np.int32)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.0, 0.1, 0.9], [0.2, 0.5, 0.3]])
    path = save_scores(tmp_path, labels, predictions, probabilities)
    assert path == tmp_path / SCORES_FILENAME
    assert folder_listing(tmp_path) == [SCORES_FILENAME]
    for where in (tmp_path, path):
        arrays = load_scores(where)
        assert sorted(arrays) == ["labels", "predictions", "probabilities", "schema_version"]
        assert int(arrays["schema_version"]) == SCHEMA_VERSION
        np.testing.assert_array_equal(arrays["labels"], labels)
        np.testing.assert_array_equal(arrays["predictions"], predictions)
        assert arrays["labels"].dtype == np.int64 and arrays["predictions"].dtype == np.int64
        assert arrays["probabilities"].dtype == np.float32
        np.testing.assert_array_equal(arrays["probabilities"], probabilities.astype(np.float32))


def test_scores_without_probabilities(tmp_path):
    save_scores(tmp_path, [1, 0], [1, 1], None)
    arrays = load_scores(tmp_path)
    assert "probabilities" not in arrays
    np.testing.assert_array_equal(arrays["predictions"], [1, 1])


def test_load_scores_refuses_a_newer_schema(tmp_path):
    np.savez(tmp_path / SCORES_FILENAME, schema_version=np.asarray(SCHEMA_VERSION + 1), labels=np.zeros(2))
    with pytest.raises(SchemaVersionError, match=SCORES_FILENAME):
        load_scores(tmp_path)


def test_failing_scores_write_leaves_the_previous_file(tmp_path, monkeypatch):
    save_scores(tmp_path, [0, 1], [0, 1], None)
    before = (tmp_path / SCORES_FILENAME).read_bytes()
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_scores(tmp_path, [1, 1], [1, 1], None)
    monkeypatch.undo()
    assert (tmp_path / SCORES_FILENAME).read_bytes() == before
    assert folder_listing(tmp_path) == [SCORES_FILENAME]


# --- leaderboard -------------------------------------------------------------------------


@pytest.fixture
def leaderboard():
    records = {
        "checkpoint-100": make_record("checkpoint-100", 100, recall_negative=0.6, precision_negative=0.95),
        "checkpoint-200": make_record("checkpoint-200", 200, recall_negative=0.9, precision_negative=0.7),
        "checkpoint-300": make_record("checkpoint-300", 300, recall_negative=0.8, precision_negative=0.92),
        "checkpoint-400": make_record("checkpoint-400", 400, recall_negative=math.nan, precision_negative=0.95),
    }
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.9"], tie_breakers=["f1_macro"])
    selection = select_best(
        [Candidate(name, r.global_step, r.metrics) for name, r in records.items()], objective, final=True
    )
    exists = {"checkpoint-100": False, "checkpoint-300": True, "checkpoint-400": True}  # 200 not listed
    payload = leaderboard_payload(selection, records, exists, protected=["checkpoint-300"])
    return selection, payload


def test_leaderboard_entries_are_best_first_with_exists_flags(leaderboard):
    selection, payload = leaderboard
    assert payload["schema_version"] == SCHEMA_VERSION
    assert payload["best_checkpoint"] == "checkpoint-300"
    assert payload["reason"] == selection.reason
    assert payload["objective"] == selection.objective.to_dict()
    assert payload["labels"] == ["negative", "positive"]
    entries = payload["entries"]
    assert [e["checkpoint"] for e in entries] == [
        "checkpoint-300",
        "checkpoint-100",
        "checkpoint-200",
        "checkpoint-400",
    ]
    assert [e["rank"] for e in entries] == [1, 2, 3, 4]
    assert [e["exists"] for e in entries] == [True, False, False, True]
    assert [e["protected"] for e in entries] == [True, False, False, False]
    assert [e["feasible"] for e in entries] == [True, True, False, True]
    assert entries[0]["objective_value"] == 0.8 and entries[0]["epoch"] == 1.5
    assert entries[3]["objective_value"] is None
    assert entries[3]["metrics"]["recall_negative"] is None  # NaN as null
    assert entries[2]["violations"] == {"precision_negative >= 0.9": pytest.approx(0.2 / 0.9)}


def test_leaderboard_payload_is_strict_json_and_round_trips(tmp_path, leaderboard):
    _, payload = leaderboard
    write_json_atomic(tmp_path / LEADERBOARD_FILENAME, payload)
    assert strict_load(tmp_path / LEADERBOARD_FILENAME) == payload
    assert read_json(tmp_path / LEADERBOARD_FILENAME) == payload


def test_leaderboard_reason_can_be_overridden(leaderboard):
    selection, _ = leaderboard
    records = {r.checkpoint: make_record(r.checkpoint, r.global_step) for r in selection.ranking}
    payload = leaderboard_payload(selection, records, {}, reason="kept by the callback")
    assert payload["reason"] == "kept by the callback"
    assert all(e["exists"] is False for e in payload["entries"])


def test_markdown_has_one_row_per_entry_and_marks_the_best(leaderboard):
    _, payload = leaderboard
    markdown = render_leaderboard_markdown(payload)
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| rank ")]
    assert len(rows) == len(payload["entries"]) == 4
    for row, entry in zip(rows, payload["entries"]):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == str(entry["rank"])
        assert cells[1].split(" ")[0] == entry["checkpoint"]
        assert cells[3] == ("yes" if entry["feasible"] else "no")
        assert cells[4] == ("yes" if entry["exists"] else "no")
    assert [("(best)" in row) for row in rows] == [True, False, False, False]
    assert "checkpoint-300 (best) (top-k, kept)" in rows[0]
    assert "n/a" in rows[3]  # NaN recall_negative
    header = next(line for line in markdown.splitlines() if line.startswith("| rank "))
    assert "| recall_negative | accuracy | f1_macro | precision_negative | f1_negative |" in header
    assert "precision_positive | recall_positive | f1_positive |" in header
    separator = markdown.splitlines()[markdown.splitlines().index(header) + 1]
    assert separator.count("---") == header.count("|") - 1
    assert "Objective: **recall_negative** (higher is better), constraints: precision_negative >= 0.9" in markdown
    assert "tie-breakers: f1_macro" in markdown
    assert "Best: **checkpoint-300**." in markdown
    assert "0.8000" in rows[0]


def test_markdown_without_a_best_marks_no_row():
    candidates = [Candidate("checkpoint-100", 100, {"recall_negative": math.nan})]
    selection = select_best(candidates, Objective("recall_negative"))
    payload = leaderboard_payload(selection, {"checkpoint-100": make_record(recall_negative=math.nan)}, {})
    markdown = render_leaderboard_markdown(payload)
    assert payload["best_checkpoint"] is None
    assert "(best)" not in markdown


# --- layering ------------------------------------------------------------------------------


def test_pure_modules_import_neither_torch_nor_transformers():
    code = (
        "import sys, trainer_ext.selection, trainer_ext.objectives, trainer_ext.records, trainer_ext.metrics, "
        "trainer_ext.uncertainty, trainer_ext.thresholds, trainer_ext.scoring, trainer_ext.run_folder, "
        "trainer_ext.render, trainer_ext.tracker, trainer_ext.tasks, trainer_ext.estimate, trainer_ext.config, "
        "trainer_ext.provenance; "
        "loaded = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
