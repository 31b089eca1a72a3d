"""Issue 4 under several processes: the richer objectives give the same records on 2 processes as on 1.

Trains with learning rate 0, so the weights are the same whatever the number of processes (a real
learning rate would make 2-process training differ from 1-process training in the last bits, through
the gradient all-reduce): the records then depend only on the evaluation, and must be identical. Uses
several held-out sets, a cost matrix with a class prior, a constraint, a tuned threshold, bootstrap
intervals with the paired comparison, and keep_top_k::

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --main_process_port 29533 tests/distributed/worker_objectives.py --out /tmp/run --tokenizer /tmp/tok
    python tests/distributed/worker_objectives.py --out /tmp/run1 --tokenizer /tmp/tok     # 1 process
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "examples"))
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tokenizer", required=True, type=Path)
    cli = parser.parse_args()

    import torch
    from synthetic_reviews import make_reviews, tiny_llama_classifier, tokenize_reviews
    from transformers import AutoTokenizer, Trainer, TrainingArguments
    from worker_train import train_dataset

    from trainer_ext import BestCheckpointCallback, Objective

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(cli.tokenizer)
    objective = Objective(
        "reviews_2025_expected_cost",
        cost_matrix=[[0, 1], [5, 0]],
        class_prior=[0.2, 0.8],
        constraints=["reviews_2025_recall_positive >= 0.1"],
        tune_threshold=True,
        bootstrap_resamples=300,
        seed=7,
    )
    callback = BestCheckpointCallback(
        {
            "reviews_2024": tokenize_reviews(make_reviews(101, seed=21), tokenizer),
            "reviews_2025": tokenize_reviews(make_reviews(37, seed=22), tokenizer),
        },
        objective,
        keep_top_k=1,
        batch_size=4,
    )
    args = TrainingArguments(
        output_dir=str(cli.out), per_device_train_batch_size=8, learning_rate=0.0, max_steps=4,
        save_strategy="steps", save_steps=2, save_total_limit=1, eval_strategy="no", logging_strategy="no",
        report_to=[], disable_tqdm=True, seed=0, data_seed=0,
    )
    trainer = Trainer(
        model=tiny_llama_classifier(tokenizer, seed=0), args=args, train_dataset=train_dataset(tokenizer),
        processing_class=tokenizer, callbacks=[callback],
    )
    trainer.train()
    if torch.distributed.is_initialized():  # leave together (see worker_train.py)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
