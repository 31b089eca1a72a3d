"""One rank of a real multi-process training run with ``BestCheckpointCallback``; launched by test_launch.py.

Run it under a launcher, e.g.::

    ACCELERATE_USE_CPU=true OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 \
        --num_machines 1 --main_process_port 29533 tests/distributed/worker_train.py \
        --out /tmp/run --tokenizer /tmp/tokenizer --eval-size 101

It trains the tiny Llama classifier of ``examples/synthetic_reviews.py`` (seeded, CPU) for ``--max-steps``
steps, saving every ``--save-steps`` steps, with a held-out set of ``--eval-size`` reviews scored at each
save. Each rank then writes what only it can tell, so that the test can check the guarantees from outside:

* ``<out>/rank<R>.json``: world size and rank as torch.distributed, the Trainer and the launcher see them;
  the best fields of ``state``; the leaderboard order; the held-out indices this rank evaluated at each
  save (its shard, recorded by wrapping ``trainer_ext.distributed.gather_rows``).
* ``<out>/writes-rank<R>.txt``: one line ``<rank>\t<path>`` per file trainer_ext wrote from this process
  (recorded by wrapping ``trainer_ext.records._replace_atomically``, the one function all of its writes
  go through). Created empty at start, so "no line" means "wrote nothing", not "not instrumented".

The Trainer's own output is in ``<out>/run``. The tokenizer is trained once by the test and loaded from
``--tokenizer`` so that every rank (and the 1-process reference) tokenizes with the very same vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "examples"))

TRAIN_SEED = 11  # reviews used for training
EVAL_SEED = 3  # held-out reviews; with this seed the first review is NEGATIVE, so N=1 has a defined recall_negative
MODEL_SEED = 0
OBJECTIVE = "recall_negative"


def held_out_dataset(tokenizer, size: int):
    """The held-out set of ``size`` reviews, tokenized (the same on every rank and in the reference)."""
    from synthetic_reviews import make_reviews, tokenize_reviews

    return tokenize_reviews(make_reviews(size, seed=EVAL_SEED), tokenizer)


def train_dataset(tokenizer, size: int = 256):
    from synthetic_reviews import make_reviews, tokenize_reviews

    return tokenize_reviews(make_reviews(size, seed=TRAIN_SEED), tokenizer)


def _launcher_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def _record_writes(out: Path) -> None:
    """Make every trainer_ext file write append ``<rank>\\t<path>`` to this rank's log first."""
    import trainer_ext.distributed as distributed
    import trainer_ext.records as records

    log = out / f"writes-rank{_launcher_rank()}.txt"
    log.write_text("", encoding="utf-8")
    original = records._replace_atomically

    def logged(path, write):
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{distributed.rank()}\t{path}\n")
        return original(path, write)

    records._replace_atomically = logged


def _record_shards(shards: list[list[int]]) -> None:
    """Remember, per evaluation, the held-out indices this rank contributes to the gather."""
    import trainer_ext.distributed as distributed

    original = distributed.gather_rows

    def logged(rows):
        shards.append(sorted(int(i) for i in rows[:, 0]))
        return original(rows)

    distributed.gather_rows = logged


def start_recording(out: Path) -> list[list[int]]:
    """Set this rank up to be checked from outside: one thread, ``out`` created, every trainer_ext write
    and every evaluation's shard recorded. Returns the shard list, which fills as the run saves."""
    import torch

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    _record_writes(out)
    shards: list[list[int]] = []
    _record_shards(shards)
    return shards


def write_rank_report(out: Path, trainer, shards: list[list[int]], extra: dict) -> None:
    """``<out>/rank<R>.json``: the world as torch.distributed, the Trainer and the launcher see it, the
    best fields of the Trainer's state, this rank's shards, and the worker's own ``extra`` fields."""
    import trainer_ext.distributed as distributed

    args, state = trainer.args, trainer.state
    report = {
        "rank": distributed.rank(),
        "world_size": distributed.world_size(),
        "launcher_rank": _launcher_rank(),
        "launcher_world_size": int(os.environ.get("WORLD_SIZE", "1") or 1),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0") or 0),
        "trainer_world_size": args.world_size,
        "trainer_process_index": args.process_index,
        "is_world_process_zero": state.is_world_process_zero,
        "best_model_checkpoint": state.best_model_checkpoint,
        "best_metric": state.best_metric,
        "best_global_step": state.best_global_step,
        "shards": shards,
        **extra,
    }
    # allow_nan: best_metric may be NaN; the test reads it back with json (which accepts NaN).
    (out / f"rank{_launcher_rank()}.json").write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")


def leave_together() -> None:
    """Leave together and tear the process group down: a rank whose interpreter exits while gloo still
    holds connections to a peer that is busy can abort ("terminate called without an active exception")."""
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tokenizer", required=True, type=Path)
    parser.add_argument("--eval-size", type=int, default=101)
    parser.add_argument("--batch-size", type=int, default=4, help="held-out batch size (token budget rows)")
    parser.add_argument("--max-steps", type=int, default=90)
    parser.add_argument("--save-steps", type=int, default=30)
    cli = parser.parse_args()

    shards = start_recording(cli.out)

    from synthetic_reviews import tiny_llama_classifier
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from trainer_ext import BestCheckpointCallback

    tokenizer = AutoTokenizer.from_pretrained(cli.tokenizer)
    model = tiny_llama_classifier(tokenizer, seed=MODEL_SEED)
    callback = BestCheckpointCallback(
        eval_dataset=held_out_dataset(tokenizer, cli.eval_size), objective=OBJECTIVE, batch_size=cli.batch_size
    )
    args = TrainingArguments(
        output_dir=str(cli.out / "run"),
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        max_steps=cli.max_steps,
        save_strategy="steps",
        save_steps=cli.save_steps,
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train_dataset(tokenizer), processing_class=tokenizer, callbacks=[callback]
    )
    trainer.train()

    board = callback.leaderboard
    write_rank_report(cli.out, trainer, shards, {
        "leaderboard": [entry["checkpoint"] for entry in board["entries"]] if board else None,
        "leaderboard_best": board["best_checkpoint"] if board else None,
    })
    leave_together()


if __name__ == "__main__":
    main()
