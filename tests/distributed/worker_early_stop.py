"""Issue 13 under several processes: early stopping on the business objective, decided on every rank at
the same step (from gathered, identical evaluations). Each rank writes what it saw to
``<out>/rank-<rank>.json``::

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --main_process_port 29533 tests/distributed/worker_early_stop.py --out /tmp/run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "examples"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    cli = parser.parse_args()

    import torch
    from synthetic_reviews import (
        keyword_reviews,
        tiny_llama_classifier,
        tokenize_reviews,
        train_tokenizer,
    )
    from transformers import Trainer, TrainingArguments

    from trainer_ext import BestCheckpointCallback

    torch.set_num_threads(1)
    train_rows, eval_rows = keyword_reviews(320, seed=1), keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    callback = BestCheckpointCallback(
        tokenize_reviews(eval_rows, tokenizer), "recall_negative", eval_steps=2, save="improved",
        early_stopping_patience=2,
    )
    args = TrainingArguments(
        output_dir=str(cli.out), per_device_train_batch_size=8, learning_rate=3e-3, max_steps=40,
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True, seed=0,
        data_seed=0,
    )
    trainer = Trainer(
        model=tiny_llama_classifier(tokenizer, seed=0), args=args, train_dataset=tokenize_reviews(train_rows, tokenizer),
        processing_class=tokenizer, callbacks=[callback],
    )
    trainer.train()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    seen = {"global_step": trainer.state.global_step, "best_model_checkpoint": trainer.state.best_model_checkpoint,
            "stale": callback._run.stale, "world_size": args.world_size}
    (cli.out / f"rank-{rank}.json").write_text(json.dumps(seen))
    if torch.distributed.is_initialized():  # leave together (see worker_train.py)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
