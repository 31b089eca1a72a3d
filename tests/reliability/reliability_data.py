"""Data, model and helpers shared by the reliability tests (not a test module).

``keyword_reviews`` (from ``examples/synthetic_reviews.py``, shared with the integration tests): the label is carried
by one or two keywords, which the tiny Llama classifier of ``examples/synthetic_reviews.py`` learns within
a few steps at lr 1e-2. The callback's held-out set is the Trainer's eval set with every label flipped and
the objective is accuracy: as the model learns, the Trainer's eval loss falls (it prefers late
checkpoints) while accuracy on the flipped labels falls too (we prefer early ones), so the Trainer's own
choice and ours disagree, on purpose.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for folder in (REPO / "examples", REPO / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

def keyword_data(train_size: int = 32, eval_size: int = 32) -> dict:
    """Plain lists of features (a torch-style dataset of dicts): no ``datasets`` round trip."""
    from synthetic_reviews import keyword_reviews, train_tokenizer
    from transformers import DataCollatorWithPadding

    train_rows, eval_rows = keyword_reviews(train_size, seed=1), keyword_reviews(eval_size, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])

    def features(rows, flip=False):
        encoded = tokenizer([r["text"] for r in rows])
        return [
            {"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "labels": 1 - r["label"] if flip else r["label"]}
            for i, r in enumerate(rows)
        ]

    return {
        "tokenizer": tokenizer,
        "collator": DataCollatorWithPadding(tokenizer),
        "train": features(train_rows),
        "holdout": features(eval_rows),
        "flipped": features(eval_rows, flip=True),
    }


def same_weights(model, checkpoint: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(checkpoint / "model.safetensors"))
    state = model.state_dict()
    return set(saved) <= set(state) and all(torch.equal(state[k].detach().cpu(), v) for k, v in saved.items())


@contextlib.contextmanager
def quick_trainer_runs():
    """Many short Trainer runs in one process: one torch thread (no oversubscription of 2 shared cores),
    and the objects alive so far frozen out of the garbage collector, because accelerate calls
    ``gc.collect()`` at the end of every ``train()`` and in a test session that alone took 0.4 s a run."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        torch.set_num_threads(threads)
