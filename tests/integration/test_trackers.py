"""Issue 12 point 3: with ``report_to=["tensorboard"]`` or ``["mlflow"]`` every ``<name>_<key>`` reaches
the tracker at the global step of its save, and the chosen checkpoint's confusion matrix goes where the
tracker has a place for it.

Real Trainer runs (tiny Llama classifier from config) with the Trainer's own integration callbacks. What
arrived is read back with each tracker's own reader: TensorBoard's ``EventAccumulator`` on the event
files, MLflow's ``MlflowClient`` on a local file store. The expected values are the records on disk.

TensorBoard note: the Trainer's TensorBoardCallback files every key that does not start with ``eval_``
under ``train/`` (transformers' ``rewrite_logs``), so ``holdout_recall_negative`` is the tag
``train/holdout_recall_negative``; MLflow keeps the key as it is.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from synthetic_reviews import keyword_reviews, tiny_llama_classifier, tokenize_reviews, train_tokenizer  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from trainer_ext import BestCheckpointCallback  # noqa: E402
from trainer_ext.records import load_record  # noqa: E402
from trainer_ext.trainer_bridge import log_confusion_matrix  # noqa: E402


@pytest.fixture(scope="module")
def data():
    train_rows = keyword_reviews(160, seed=1)
    eval_rows = keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    return {
        "tokenizer": tokenizer,
        "train": tokenize_reviews(train_rows, tokenizer),
        "holdout": tokenize_reviews(eval_rows, tokenizer),
    }


def _train(data, out: Path, report_to: list[str]):
    callback = BestCheckpointCallback(eval_dataset=data["holdout"], objective="recall_negative")
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0),
        args=TrainingArguments(
            output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=16, per_device_eval_batch_size=16,
            learning_rate=3e-3, save_strategy="epoch", eval_strategy="no", report_to=report_to, use_cpu=True,
            seed=0, logging_steps=5, disable_tqdm=True,
        ),
        train_dataset=data["train"],
        processing_class=data["tokenizer"],
        callbacks=[callback],
    )
    trainer.train()
    board = callback.leaderboard
    records = [load_record(out / e["checkpoint"]) for e in sorted(board["entries"], key=lambda e: e["global_step"])]
    assert [r.global_step for r in records] == [10, 20]
    return trainer, callback, records


def _expected(records) -> dict[str, dict[int, float]]:
    """``{logged key: {global step of the save: value}}`` from the records on disk."""
    expected: dict[str, dict[int, float]] = {}
    for record in records:
        for key, value in record.metrics.items():
            expected.setdefault(f"holdout_{key}", {})[record.global_step] = value
        objective = math.nan if record.objective_value is None else record.objective_value
        expected.setdefault("holdout_objective", {})[record.global_step] = objective
    return expected


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-7)


def test_tensorboard_receives_every_key_at_the_step_of_its_save(data, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(log_dir))
    trainer, callback, records = _train(data, tmp_path / "out", ["tensorboard"])  # the callback logs the matrix at the end

    # One log directory: TENSORBOARD_LOGGING_DIR (transformers 5), args.logging_dir (4.x); the confusion
    # matrix, written after the integration closed its writer, is in the same one.
    (events_dir,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(events_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    expected = _expected(records)
    assert len(expected) == len(callback.metric_keys) + 1
    for key, by_step in expected.items():
        scalars = events.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == [10, 20], key
        for scalar in scalars:
            assert _same(scalar.value, by_step[scalar.step]), (key, scalar.step, scalar.value, by_step[scalar.step])
    assert [s.step for s in events.Scalars("train/loss")], "the Trainer's own logs are still there"

    best = load_record(tmp_path / "out" / callback.leaderboard["best_checkpoint"])
    tag = next(t for t in events.Tags()["tensors"] if t.startswith("holdout/confusion_matrix"))
    (text_event,) = events.Tensors(tag)
    assert text_event.step == best.global_step
    text = text_event.tensor_proto.string_val[0].decode("utf-8")
    assert best.checkpoint in text
    assert "**Confusion matrix (rows: true class, columns: predicted class)**" in text
    assert "| true \\ predicted | NEGATIVE | POSITIVE |" in text
    for label, row in zip(best.labels, best.confusion_matrix):
        assert f"| {label} | " + " | ".join(str(v) for v in row) + " |" in text


def test_mlflow_receives_every_key_at_the_step_of_its_save(data, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "trainer_ext_trackers")
    # MLflow 3 keeps the file store in "maintenance mode" and refuses it unless asked; a database store
    # would need SQLAlchemy, which mlflow-skinny leaves out.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # MLflowCallback keeps a tracking URI that is already set
    try:
        trainer, callback, records = _train(data, tmp_path / "out", ["mlflow"])
        assert mlflow.active_run() is None, "MLflowCallback ends its run at the end of training"
    finally:
        mlflow.set_tracking_uri(previous)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("trainer_ext_trackers")
    (run,) = client.search_runs([experiment.experiment_id])
    expected = _expected(records)
    assert len(expected) == len(callback.metric_keys) + 1
    assert set(expected) <= set(run.data.metrics)
    for key, by_step in expected.items():
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [10, 20], key
        for metric in history:
            assert _same(metric.value, by_step[metric.step]), (key, metric.step, metric.value, by_step[metric.step])

    best = load_record(tmp_path / "out" / callback.leaderboard["best_checkpoint"])
    path = client.download_artifacts(run.info.run_id, "trainer_ext/holdout_confusion_matrix.json", str(tmp_path))
    assert json.loads(Path(path).read_text()) == {
        "checkpoint": best.checkpoint, "global_step": best.global_step, "task": "single_label", "labels": best.labels,
        "matrix": best.confusion_matrix,
        "tables": [{"title": "Confusion matrix (rows: true class, columns: predicted class)", "corner": "true \\ predicted",
                    "columns": best.labels, "index": best.labels, "data": best.confusion_matrix}],
    }


def test_confusion_matrix_goes_nowhere_without_a_tracker(data, tmp_path):
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0),
        args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True),
    )
    assert log_confusion_matrix(trainer, [[3, 1], [0, 5]], ["NEGATIVE", "POSITIVE"], step=1, checkpoint="checkpoint-1") == []
    assert log_confusion_matrix(trainer.callback_handler, [[3, 1], [0, 5]], ["a", "b"], step=1, checkpoint="c") == []
    assert not list(tmp_path.iterdir())


def test_the_records_task_heads_the_table_where_the_shape_cannot(data, tmp_path, monkeypatch):
    """Issue 11: the statistics are headed as the record's task lays them out. A token record with the tags
    O, B-A, B-B has a 3 x 3 matrix, as a 3-class confusion matrix would: with ``task="token"`` it reads per
    entity type ([TP, FP, FN]) and the labelled tokens, never as true x predicted. Regression sends nothing."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0),
        args=TrainingArguments(output_dir=str(tmp_path / "out"), report_to=["tensorboard"], use_cpu=True),
    )
    counts = [[4, 1, 2], [3, 0, 1], [40, 6, 0]]
    assert log_confusion_matrix(trainer, counts, ["O", "B-A", "B-B"], step=7, checkpoint="checkpoint-7", task="token") == ["tensorboard"]
    assert log_confusion_matrix(trainer, [], ["value"], step=7, checkpoint="checkpoint-7", task="regression") == []

    (events_dir,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(events_dir), size_guidance={"tensors": 0})
    events.Reload()
    (tag,) = [t for t in events.Tags()["tensors"] if t.startswith("holdout/confusion_matrix")]
    (event,) = events.Tensors(tag)
    text = event.tensor_proto.string_val[0].decode("utf-8")
    assert event.step == 7 and "checkpoint-7" in text and "true \\ predicted" not in text
    assert "| entity type | true positive | false positive | false negative |" in text
    assert "| A | 4 | 1 | 2 |" in text and "| B | 3 | 0 | 1 |" in text
    assert "|  | correct | wrong |" in text and "| tokens | 40 | 6 |" in text
