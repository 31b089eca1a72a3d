"""Route negative reviews with a causal LM that answers " negative" or " positive" (label words).

The review-routing story of ``route_negative_reviews.py``, told the way most teams now fine-tune a
Llama-style model for classification: a causal LM learns to complete ``"<review> Sentiment:"`` with
``" negative"`` or ``" positive"``, the loss on the answer only (labels -100 on the prompt).
``BestCheckpointCallback`` with ``LabelWords`` scores each checkpoint by the log-probability of each
answer after the prompt, and keeps the checkpoint with the best recall on NEGATIVE.

Offline and synthetic: reviews from ``synthetic_reviews.make_reviews``, a WordPiece tokenizer trained
on them (and on the prompt and answer words), a one-layer ``LlamaForCausalLM`` built from a config.

    python examples/route_reviews_with_llm.py
    python examples/route_reviews_with_llm.py --train-size 400 --eval-size 200 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from synthetic_reviews import LABELS, make_reviews, train_tokenizer
from trainer_ext import BestCheckpointCallback, LabelWords

logger = logging.getLogger("route_reviews_with_llm")

OBJECTIVE = "recall_negative"
LABEL_WORDS = {"NEGATIVE": " negative", "POSITIVE": " positive"}
PROMPT_SUFFIX = " Sentiment:"


def prompt_of(review: str) -> str:
    return review + PROMPT_SUFFIX


def label_words_tokenizer(reviews: list[dict], label_words: dict[str, str] = LABEL_WORDS):
    """The reviews' WordPiece tokenizer, trained also on the prompt suffix and every label text (so
    each answer word is a token of its own)."""
    extra = [PROMPT_SUFFIX + text for text in label_words.values()] * 20
    return train_tokenizer([row["text"] for row in reviews] + extra)


def tiny_causal_llama(tokenizer, *, seed: int = 0, hidden_size: int = 32, num_layers: int = 1):
    """A randomly initialised ``LlamaForCausalLM`` sized for ``tokenizer`` (weights depend on ``seed``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "llama", vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def training_rows(reviews: list[dict], task: LabelWords, tokenizer) -> list[dict]:
    """Prompt + answer ids, loss on the answer only (see ``LabelWords.encode_example``)."""
    return [task.encode_example(tokenizer, prompt_of(r["text"]), int(r["label"])) for r in reviews]


def held_out_rows(reviews: list[dict]) -> list[dict]:
    """The callback's held-out set: a ``prompt`` column and the class name as ``label``."""
    return [{"prompt": prompt_of(r["text"]), "label": LABELS[int(r["label"])]} for r in reviews]


def run(train_size: int, eval_size: int, epochs: int, output_dir: Path, seed: int = 0) -> dict:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    train_reviews = make_reviews(train_size, seed=seed)
    eval_reviews = make_reviews(eval_size, seed=seed + 1)
    tokenizer = label_words_tokenizer(train_reviews)
    task = LabelWords(LABEL_WORDS)
    model = tiny_causal_llama(tokenizer, seed=seed)
    callback = BestCheckpointCallback(Dataset.from_list(held_out_rows(eval_reviews)), OBJECTIVE, task=task)
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=16,
        per_device_eval_batch_size=64, learning_rate=3e-3, save_strategy="epoch", eval_strategy="no",
        logging_strategy="no", report_to=[], seed=seed, use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=Dataset.from_list(training_rows(train_reviews, task, tokenizer)),
        data_collator=DataCollatorForSeq2Seq(tokenizer), processing_class=tokenizer, callbacks=[callback],
    )
    trainer.train()
    board = callback.leaderboard
    by_accuracy = max(board["entries"], key=lambda e: (e["metrics"]["accuracy"], -board["entries"].index(e)))
    return {
        "best": trainer.state.best_model_checkpoint,
        "by_accuracy": by_accuracy["checkpoint"],
        "entries": [
            {"checkpoint": e["checkpoint"], **{k: round(e["metrics"][k], 4) for k in (OBJECTIVE, "accuracy", "f1_macro")}}
            for e in board["entries"]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-size", type=int, default=1500)
    parser.add_argument("--eval-size", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/route_reviews_with_llm"))
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if options.output_dir.exists():
        shutil.rmtree(options.output_dir)
    start = time.perf_counter()
    result = run(options.train_size, options.eval_size, options.epochs, options.output_dir, options.seed)
    print(json.dumps(result, indent=2))
    print(f"business-best ({OBJECTIVE}): {result['best']}; accuracy would pick {result['by_accuracy']} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
