"""The selection-corrected estimate of the chosen checkpoint (``best_estimate``) in a real run: written by
the callback, recomputed with the same numbers by ``trainer-ext rank`` from the saved predictions, shown
to people, and null with a reason when there is nothing to correct (one checkpoint). The estimate's
statistics are tested in ``tests/unit/test_estimate.py``."""

from __future__ import annotations

import json

import pytest
from synthetic_reviews import keyword_reviews, tiny_llama_classifier, tokenize_reviews, train_tokenizer
from transformers import Trainer, TrainingArguments

from trainer_ext import BestCheckpointCallback
from trainer_ext.cli import main
from trainer_ext.records import read_json

FIELDS = {"value", "low", "high", "confidence", "resamples", "seed", "method", "optimism"}


def _train(out, epochs: int):
    train_rows, eval_rows = keyword_reviews(80, seed=1), keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    callback = BestCheckpointCallback(tokenize_reviews(eval_rows, tokenizer), "recall_negative")
    args = TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=16, learning_rate=3e-3,
        save_strategy="epoch", eval_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
    )
    trainer = Trainer(model=tiny_llama_classifier(tokenizer), args=args, train_dataset=tokenize_reviews(train_rows, tokenizer),
                      processing_class=tokenizer, callbacks=[callback])
    trainer.train()
    return callback


def test_callback_writes_the_estimate_and_rank_recomputes_the_same(tmp_path, capsys):
    out = tmp_path / "out"
    callback = _train(out, epochs=3)
    board = read_json(out / "checkpoint_leaderboard.json")
    estimate = board["best_estimate"]
    assert set(estimate) == FIELDS and estimate["method"] == "bootstrap_bias_corrected"
    best = next(e for e in board["entries"] if e["checkpoint"] == board["best_checkpoint"])
    assert estimate["optimism"] == pytest.approx(best["objective_value"] - estimate["value"], abs=1e-12)
    assert estimate["low"] <= estimate["value"] <= estimate["high"]
    assert estimate["resamples"] == 1000 and estimate["seed"] == 0
    assert callback.leaderboard["best_estimate"] == estimate
    assert "expected on new data" in (out / "checkpoint_leaderboard.md").read_text(encoding="utf-8")

    # trainer-ext rank recomputes it from the checkpoint_scores.npz files: the same seed, the same numbers.
    capsys.readouterr()
    assert main(["rank", str(out), "--objective", "recall_negative", "--format", "json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked["best_checkpoint"] == board["best_checkpoint"]
    assert ranked["best_estimate"] == estimate
    assert main(["rank", str(out), "--objective", "recall_negative"]) == 0
    assert "expected on new data" in capsys.readouterr().out


def test_one_checkpoint_gives_no_estimate_and_says_why(tmp_path):
    out = tmp_path / "out"
    _train(out, epochs=1)
    board = read_json(out / "checkpoint_leaderboard.json")
    assert board["best_estimate"] is None
    assert "no selection-corrected estimate: 1 of 1 checkpoints have predictions" in board["reason"], board["reason"]
