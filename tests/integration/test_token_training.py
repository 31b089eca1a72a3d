"""A real Trainer run of a tiny token classifier (issue 11): recall_per with a precision floor picks the
checkpoint, the best is loaded at the end, and its record equals seqeval on the Trainer's own predictions."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

seqeval_metrics = pytest.importorskip("seqeval.metrics")

from redact_pii import TAGS, build  # noqa: E402  (examples/ is on sys.path, see conftest)

from trainer_ext import BestCheckpointCallback, Objective  # noqa: E402
from trainer_ext.errors import ConfigurationError  # noqa: E402


def _trainer(tmp_path, callback, *, train, tokenizer, model, max_steps=50):
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

    return Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=16, learning_rate=2e-3,
            save_strategy="steps", save_steps=10, eval_strategy="no", report_to=[], use_cpu=True, seed=0,
            logging_steps=1000, disable_tqdm=True,
        ),
        train_dataset=train,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        callbacks=[callback],
    )


def _seqeval(labels, logits):
    y_true, y_pred = [], []
    for true, row in zip(labels, logits):
        keep = [j for j, t in enumerate(true) if t != -100]
        y_true.append([TAGS[true[j]] for j in keep])
        y_pred.append([TAGS[int(np.argmax(row[j]))] for j in keep])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return seqeval_metrics.classification_report(y_true, y_pred, output_dict=True), seqeval_metrics.accuracy_score(y_true, y_pred)


@pytest.mark.parametrize("task", [None, "token"])
def test_recall_per_with_precision_floor_picks_and_loads_the_best(tmp_path, task):
    tokenizer, model, train, held_out = build(320, 80)
    objective = Objective("recall_per", constraints=["precision_per >= 0.5"], tie_breakers=["f1_micro"])
    callback = BestCheckpointCallback(held_out, objective, task=task)
    trainer = _trainer(tmp_path, callback, train=train, tokenizer=tokenizer, model=model)
    trainer.train()

    board = callback.leaderboard
    entries = [e for e in board["entries"] if e.get("saved", True)]
    assert len(entries) == 5
    assert len({round(e["metrics"]["recall_per"], 6) for e in entries}) > 1, "checkpoints should differ"
    feasible = [e for e in entries if e["metrics"]["precision_per"] >= 0.5]
    best = max(feasible, key=lambda e: (e["metrics"]["recall_per"], e["metrics"]["f1_micro"]))
    assert board["best_checkpoint"] == best["checkpoint"]

    record = json.loads((tmp_path / best["checkpoint"] / "checkpoint_metrics.json").read_text())
    assert record["task"] == "token"
    assert len(record["confusion_matrix"]) == 3 and record["confusion_matrix"][2][2] == 0  # LOC, PER, tokens
    report_text = (tmp_path / "report" / "report.md").read_text()
    assert "Per-entity precision, recall and F1" in report_text and "| PER |" in report_text

    # The model in memory at the end is the chosen checkpoint: seqeval on the Trainer's own predictions of
    # the held-out set (its loop, its padding) gives the record's values.
    output = trainer.predict(held_out)
    report, accuracy = _seqeval([row["labels"] for row in held_out], output.predictions)
    metrics = record["metrics"]
    assert metrics["recall_per"] == pytest.approx(report["PER"]["recall"], abs=1e-9)
    assert metrics["precision_per"] == pytest.approx(report["PER"]["precision"], abs=1e-9)
    assert metrics["support_per"] == report["PER"]["support"]
    assert metrics["f1_micro"] == pytest.approx(report["micro avg"]["f1-score"], abs=1e-9)
    assert metrics["f1_macro"] == pytest.approx(report["macro avg"]["f1-score"], abs=1e-9)
    assert metrics["token_accuracy"] == pytest.approx(accuracy, abs=1e-9)

    # The selection-corrected estimate resamples sentences (issue 15) and trainer-ext rank recomputes
    # the same numbers from the saved per-token predictions.
    estimate = board["best_estimate"]
    assert estimate is not None, board["reason"]
    assert estimate["optimism"] == pytest.approx(best["objective_value"] - estimate["value"], abs=1e-12)
    assert estimate["low"] <= estimate["value"] <= estimate["high"]
    ranked = _rank_json(tmp_path, "recall_per", "--constraint", "precision_per >= 0.5", "--tie-breaker", "f1_micro")
    assert ranked["best_checkpoint"] == board["best_checkpoint"] and ranked["best_estimate"] == estimate


def _rank_json(folder, *arguments):
    import contextlib
    import io

    from trainer_ext.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["rank", str(folder), "--objective", *arguments, "--format", "json"]) == 0
    return json.loads(out.getvalue())


def test_held_out_labels_that_do_not_fit_fail_before_the_first_step(tmp_path):
    tokenizer, model, train, held_out = build(32, 8)
    shortened = [dict(row, labels=row["labels"][:-1]) if i == 3 else row for i, row in enumerate(held_out)]
    trainer = _trainer(tmp_path, BestCheckpointCallback(shortened, "recall_per"), train=train, tokenizer=tokenizer, model=model)
    with pytest.raises(ConfigurationError, match=r"^eval_dataset: labels\[3\] has \d+ entries but input_ids\[3\] has"):
        trainer.train()
    assert not list(tmp_path.glob("checkpoint-*"))

    per_example = [dict(row, labels=1) for row in held_out]
    trainer = _trainer(tmp_path, BestCheckpointCallback(per_example, "recall_per"), train=train, tokenizer=tokenizer, model=model)
    with pytest.raises(ConfigurationError, match=r"^eval_dataset: labels\[0\] is 1 .*one label per token"):
        trainer.train()
