"""Token classification under 2 processes equals 1 process (issue 11): a real accelerate launch on CPU."""

from __future__ import annotations

import json

import pytest

from test_launch import HERE, WORLD, run_on_one_and_world

WORKER = HERE / "worker_token.py"


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    """A tagger trained for a few steps (so that it predicts entities, some of them wrong), saved."""
    from redact_pii import build
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

    folder = tmp_path_factory.mktemp("tagger")
    tokenizer, model, train, _ = build(160, 61)
    Trainer(
        model=model,
        args=TrainingArguments(output_dir=str(folder / "run"), max_steps=30, per_device_train_batch_size=16,
                               learning_rate=3e-3, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                               disable_tqdm=True),
        train_dataset=train, data_collator=DataCollatorForTokenClassification(tokenizer),
    ).train()
    model.save_pretrained(folder / "model")
    return folder / "model"


def test_two_processes_equal_one(tmp_path, tagger):
    arguments = [str(WORKER), "--model", str(tagger), "--eval-size", "61"]
    single, double = (json.loads(path.read_text()) for path in run_on_one_and_world(arguments, tmp_path))
    assert single["processes"] == 1 and double["processes"] == WORLD and double["task"] == "token"
    assert 0.0 < single["metrics"]["f1_micro"] < 1.0  # some entities found, some not: a real comparison
    for key in ("metrics", "predictions", "statistics", "interval"):
        assert double[key] == single[key], key
