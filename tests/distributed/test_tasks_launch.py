"""Multi-label and regression under 2 processes equal 1 process (issue 11): a real accelerate launch on CPU."""

from __future__ import annotations

import json

import pytest

from test_launch import HERE, WORLD, run_on_one_and_world

WORKER = HERE / "worker_tasks.py"


def _trained(folder, kind):
    """A model trained for a few steps (so that its predictions are partly right), saved with its tokenizer."""
    import random

    from datasets import Dataset
    from synthetic_reviews import tiny_llama_classifier, train_tokenizer
    from tag_support_tickets import make_tickets, tiny_multi_label_model, tokenize_tickets
    from transformers import Trainer, TrainingArguments

    if kind == "multi_label":
        train_rows, rows = make_tickets(160, seed=1), make_tickets(61, seed=2)
        tokenizer = train_tokenizer([r["text"] for r in train_rows + rows], vocab_size=300)
        model, train = tiny_multi_label_model(tokenizer), tokenize_tickets(train_rows, tokenizer)
    else:
        rng = random.Random(0)
        words = "great love bad awful the phone it was".split()
        def row():
            text = " ".join(rng.choices(words, k=rng.randint(3, 8)))
            return {"text": text, "labels": float(sum(w in ("great", "love") for w in text.split()) - sum(w in ("bad", "awful") for w in text.split()))}
        train_rows, rows = [row() for _ in range(160)], [row() for _ in range(61)]
        tokenizer = train_tokenizer([r["text"] for r in train_rows + rows], vocab_size=200)
        enc = tokenizer([r["text"] for r in train_rows])
        train = Dataset.from_dict({**enc, "labels": [r["labels"] for r in train_rows]})
        model = tiny_llama_classifier(tokenizer, num_labels=1)
    Trainer(model=model, args=TrainingArguments(output_dir=str(folder / "run"), max_steps=20, per_device_train_batch_size=16,
            learning_rate=3e-3, save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True),
            train_dataset=train, processing_class=tokenizer).train()
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "rows.json").write_text(json.dumps(rows))
    return folder


@pytest.mark.parametrize(("kind", "objective"), [("multi_label", "f1_micro"), ("regression", "mae")])
def test_two_processes_equal_one(tmp_path, kind, objective):
    folder = _trained(tmp_path, kind)
    arguments = [str(WORKER), "--model", str(folder / "model"), "--rows", str(folder / "rows.json"), "--objective", objective]
    single, double = (json.loads(path.read_text()) for path in run_on_one_and_world(arguments, tmp_path))
    assert single["processes"] == 1 and double["processes"] == WORLD and double["task"] == kind
    for key in ("metrics", "predictions", "statistics", "interval"):
        assert double[key] == single[key], key
