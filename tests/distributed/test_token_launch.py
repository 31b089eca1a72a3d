"""Token classification under 2 processes equals 1 process (issue 11): a real accelerate launch on CPU."""

from __future__ import annotations

import json
import sys

import pytest

from test_launch import HERE, WORLD, accelerate_launch, check_succeeded, free_port, launch_env, run_concurrently

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
    one = run_concurrently([[sys.executable, *arguments, "--out", str(tmp_path / "one.json")]], launch_env(), tmp_path / "logs1")
    check_succeeded(one)
    two = run_concurrently(
        [accelerate_launch("--num_processes", str(WORLD), "--num_machines", "1", "--main_process_port", str(free_port()))
         + arguments + ["--out", str(tmp_path / "two.json")]],
        launch_env(ACCELERATE_USE_CPU="true"), tmp_path / "logs2",
    )
    check_succeeded(two)
    single, double = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert single["processes"] == 1 and double["processes"] == WORLD and double["task"] == "token"
    assert 0.0 < single["metrics"]["f1_micro"] < 1.0  # some entities found, some not: a real comparison
    for key in ("metrics", "predictions", "statistics", "interval"):
        assert double[key] == single[key], key
