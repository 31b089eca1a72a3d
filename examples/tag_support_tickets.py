"""Multi-label: pick the checkpoint that best tags support tickets (issue 11), on generated tickets.

A ticket may carry any of four tags (BILLING, BUG, URGENT, FEATURE_REQUEST); each tag has its own
keywords among filler words, so a tiny Llama classifier built from config learns them in a few
epochs and its checkpoints differ. The objective: the recall of URGENT tickets with a precision floor
on URGENT, per-label thresholds tuned on the held-out tickets. Runs on the CPU in about a minute:

    python examples/tag_support_tickets.py [--out DIR] [--train N] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

TAGS = ["BILLING", "BUG", "URGENT", "FEATURE_REQUEST"]
_TAG_WORDS = {
    "BILLING": "invoice refund charged payment".split(),
    "BUG": "crash error broken freezes".split(),
    "URGENT": "asap immediately outage critical".split(),
    "FEATURE_REQUEST": "wish suggest please_add idea".split(),
}
_FILLER = "the app my account since yesterday it and a of to i we our team".split()
_TAG_SHARE = (0.35, 0.35, 0.25, 0.2)


def make_tickets(n: int, seed: int) -> list[dict]:
    """``{"text": str, "labels": [0/1] * 4}`` rows (multi-hot in TAGS order); deterministic for a seed."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        hot = [1 if rng.random() < share else 0 for share in _TAG_SHARE]
        words = [rng.choice(_FILLER) for _ in range(rng.randint(3, 10))]
        for tag, on in zip(TAGS, hot):
            if on:
                words.insert(rng.randrange(len(words) + 1), rng.choice(_TAG_WORDS[tag]))
        rows.append({"text": " ".join(words), "labels": hot})
    return rows


def tokenize_tickets(rows, tokenizer):
    """A ``datasets.Dataset`` with float multi-hot ``labels`` (what BCE-with-logits trains on)."""
    from datasets import Dataset

    encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=64)
    return Dataset.from_dict(
        {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
         "labels": [[float(v) for v in r["labels"]] for r in rows]}
    )


def tiny_multi_label_model(tokenizer, *, seed: int = 0):
    """A tiny ``LlamaForSequenceClassification`` with ``problem_type="multi_label_classification"``."""
    from synthetic_reviews import tiny_llama_classifier

    model = tiny_llama_classifier(tokenizer, num_labels=len(TAGS), id2label=dict(enumerate(TAGS)), seed=seed)
    model.config.problem_type = "multi_label_classification"
    return model


def main(argv=None) -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from synthetic_reviews import train_tokenizer
    from transformers import Trainer, TrainingArguments

    from trainer_ext import BestCheckpointCallback, Objective

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out or tempfile.mkdtemp(prefix="tickets_"))
    train_rows, eval_rows = make_tickets(args.train, seed=1), make_tickets(200, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows], vocab_size=300)
    callback = BestCheckpointCallback(
        tokenize_tickets(eval_rows, tokenizer),
        Objective("recall_urgent", constraints=["precision_urgent >= 0.8"], tune_threshold=True),
    )
    trainer = Trainer(
        model=tiny_multi_label_model(tokenizer),
        args=TrainingArguments(
            output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=16, learning_rate=3e-3,
            save_strategy="epoch", eval_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
            logging_steps=1000,
        ),
        train_dataset=tokenize_tickets(train_rows, tokenizer),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train()
    board = json.loads((out / "checkpoint_leaderboard.json").read_text())
    print(f"business-best: {board['best_checkpoint']}  (output in {out})")
    return board


if __name__ == "__main__":
    main()
