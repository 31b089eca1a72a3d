"""Drop-in use in a script shaped like Hugging Face's ``run_classification.py``: its tokenized validation
split still holds the raw ``sentence`` column (and an ``idx``), the Trainer's ``eval_dataset`` and the
callback's held-out set are the SAME object, and the only change to the script is the import and
``callbacks=[BestCheckpointCallback(...)]``. Also raw text and labels under other column names."""

from __future__ import annotations

import logging

from datasets import Dataset
from synthetic_reviews import keyword_reviews, tiny_llama_classifier, train_tokenizer
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from trainer_ext import BestCheckpointCallback
from trainer_ext.records import load_record, read_json


def _split(rows, tokenizer):
    """As the script does: a datasets split with `sentence` and `label`, mapped through the tokenizer
    (the text column is kept: the Trainer drops it itself with remove_unused_columns)."""
    raw = Dataset.from_dict({
        "sentence": [r["text"] for r in rows], "label": [r["label"] for r in rows], "idx": list(range(len(rows))),
    })
    return raw.map(lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=128), batched=True)


def test_the_scripts_own_validation_split_is_the_held_out_set(tmp_path, caplog):
    train_rows, eval_rows = keyword_reviews(80, seed=1), keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    train, validation = _split(train_rows, tokenizer), _split(eval_rows, tokenizer)
    assert "sentence" in validation.column_names  # what made the first version fail in the collator
    callback = BestCheckpointCallback(validation, "recall_negative")
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=16, learning_rate=3e-3,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
        report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
    )
    trainer = Trainer(
        model=tiny_llama_classifier(tokenizer), args=args, train_dataset=train, eval_dataset=validation,
        processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
        callbacks=[callback],
    )
    with caplog.at_level(logging.INFO, logger="trainer_ext"):
        trainer.train()
    board = read_json(tmp_path / "out" / "checkpoint_leaderboard.json")
    # The decision is in the log: one line per save, and at the end what was loaded and what the
    # Trainer's own "score" meant (metric_for_best_model is accuracy, the objective recall_negative).
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("trainer_ext")]
    first, second = (next(line for line in lines if line.startswith(f"checkpoint-{s}: recall_negative = ")) for s in (5, 10))
    assert first.endswith("(new best; first evaluated)"), first
    assert "(new best; previous checkpoint-5 " in second or "(best stays checkpoint-5, " in second, second
    (end,) = [line for line in lines if line.startswith("Business-best checkpoint loaded: ")]
    assert board["best_checkpoint"] in end and "not its metric_for_best_model 'accuracy'" in end, end
    assert len(board["entries"]) == 2 and trainer.state.best_model_checkpoint.endswith(board["best_checkpoint"])
    record = load_record(tmp_path / "out" / board["best_checkpoint"])
    assert record.eval_set["columns"] == ["input_ids", "attention_mask", "label"]
    assert record.num_samples == 61


def test_raw_text_and_labels_under_other_column_names(tmp_path):
    train_rows, eval_rows = keyword_reviews(80, seed=1), keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    names = {0: "NEGATIVE", 1: "POSITIVE"}
    held_out = Dataset.from_dict({"review": [r["text"] for r in eval_rows], "rating": [names[r["label"]] for r in eval_rows]})
    callback = BestCheckpointCallback(held_out, "recall_negative", text_column="review", label_column="rating")
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=16, learning_rate=3e-3,
        save_strategy="epoch", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
    )
    Trainer(model=tiny_llama_classifier(tokenizer), args=args, train_dataset=_split(train_rows, tokenizer),
            processing_class=tokenizer, callbacks=[callback]).train()
    record = load_record(tmp_path / "out" / "checkpoint-5")
    assert record.eval_set["columns"] == ["review", "rating"] and record.num_samples == 61
    assert record.metrics["support_negative"] == sum(r["label"] == 0 for r in eval_rows)
