"""One rank of a label-words training run with ``BestCheckpointCallback`` (issue 11); launched by
test_label_words_launch.py, once on 1 plain process and once under a 2-process accelerate launch::

    OMP_NUM_THREADS=1 python tests/distributed/worker_label_words.py --out /tmp/one --tokenizer /tmp/tok \\
        --label-words '{"NEGATIVE": " negative", "POSITIVE": " positive"}'
    ACCELERATE_USE_CPU=true OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --main_process_port 29533 tests/distributed/worker_label_words.py --out /tmp/two --tokenizer /tmp/tok \\
        --label-words '{"NEGATIVE": " negative", "POSITIVE": " positive"}'

A tiny ``LlamaForCausalLM`` (examples/route_reviews_with_llm.py) learns to complete ``"<review> Sentiment:"``
with the label text, the loss on the answer only (``LabelWords.encode_example``: labels -100 on the
prompt); the callback scores each save with ``LabelWords`` and ranks by recall_negative.

Each optimizer step takes ``BATCHES_PER_STEP`` = 2 batches of 8: accumulated on 1 process
(``gradient_accumulation_steps=2``), one per rank on 2. That makes them the same run: accelerate deals the
batches of one seeded permutation to the ranks in turn (rank r gets batch 2k + r at step k), and 1 process
accumulates those very two batches, each padded as on its rank. With ``average_tokens_across_devices=True``
(the default in recent transformers, not in 4.50: set here) both divide the summed token losses by the
answer tokens of the whole step (label texts of different lengths give the ranks different counts), and
the 2-process loss is scaled by the world size that DDP's mean divides back out: scalings by 2, exact in
floating point. So the gradients, and with them the weights, are expected to be bit for bit those of 1
process; the test measures it. (A plain 2-process run with the 1-process batch size would see other
batches per step, and weights that differ from the first step on.)

Writes, per rank (the recorders of worker_train.py):

* ``<out>/rank<R>.json``: world size as torch.distributed, the Trainer and the launcher see it, the best
  fields of ``state``, the callback's leaderboard (``board``), the held-out indices of this rank per save (``shards``),
  and ``loaded``: how the model the Trainer holds at the end compares with the best checkpoint's saved
  weights (tensor names on both sides, largest absolute difference);
* ``<out>/writes-rank<R>.txt``: one ``<rank>\\t<path>`` line per file trainer_ext wrote from this process.

The Trainer's own output is in ``<out>/run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "examples"))
sys.path.insert(0, str(HERE))

TRAIN_SEED = 11
EVAL_SEED = 3
TRAIN_SIZE = 480  # 60 batches of 8: 30 steps an epoch on 1 process and on 2
EVAL_SIZE = 61  # odd: the two ranks hold different numbers of examples
BATCHES_PER_STEP = 2  # batches of 8 per optimizer step: accumulated on 1 process, one per rank on 2
OBJECTIVE = "recall_negative"


def reviews(train_size: int, eval_size: int) -> tuple[list[dict], list[dict]]:
    """The training and held-out reviews (the test trains the tokenizer on the same training reviews)."""
    from synthetic_reviews import make_reviews

    return make_reviews(train_size, seed=TRAIN_SEED), make_reviews(eval_size, seed=EVAL_SEED)


def _loaded_against(model, checkpoint: Path) -> dict:
    """The Trainer's model at the end against ``checkpoint``'s saved weights (same names, largest gap)."""
    from safetensors.torch import load_file

    saved = load_file(str(checkpoint / "model.safetensors"))
    state = model.state_dict()
    common = sorted(set(saved) & set(state))
    gap = max(float((state[n].detach().cpu().float() - saved[n].float()).abs().max()) for n in common) if common else None
    return {"only_in_model": sorted(set(state) - set(saved)), "only_in_file": sorted(set(saved) - set(state)),
            "compared": len(common), "max_abs_difference": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tokenizer", required=True, type=Path)
    parser.add_argument("--label-words", required=True, help="JSON: class name -> label text")
    parser.add_argument("--train-size", type=int, default=TRAIN_SIZE)
    parser.add_argument("--eval-size", type=int, default=EVAL_SIZE)
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--save-steps", type=int, default=30)
    cli = parser.parse_args()

    from worker_train import leave_together, start_recording, write_rank_report

    shards = start_recording(cli.out)

    from datasets import Dataset
    from route_reviews_with_llm import held_out_rows, tiny_causal_llama, training_rows
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from trainer_ext import BestCheckpointCallback, LabelWords

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if BATCHES_PER_STEP % world:
        raise SystemExit(f"WORLD_SIZE: {world} processes cannot share {BATCHES_PER_STEP} batches per step; launch 1 or 2")
    tokenizer = AutoTokenizer.from_pretrained(cli.tokenizer)
    task = LabelWords(json.loads(cli.label_words))
    train, held = reviews(cli.train_size, cli.eval_size)
    callback = BestCheckpointCallback(Dataset.from_list(held_out_rows(held)), OBJECTIVE, task=task, batch_size=8)
    args = TrainingArguments(
        output_dir=str(cli.out / "run"), per_device_train_batch_size=8,
        gradient_accumulation_steps=BATCHES_PER_STEP // world, average_tokens_across_devices=True,
        learning_rate=5e-3, max_steps=cli.max_steps, save_strategy="steps", save_steps=cli.save_steps,
        eval_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True, seed=0, data_seed=0,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=tiny_causal_llama(tokenizer, seed=0), args=args,
        train_dataset=Dataset.from_list(training_rows(train, task, tokenizer)),
        data_collator=DataCollatorForSeq2Seq(tokenizer), processing_class=tokenizer, callbacks=[callback],
    )
    trainer.train()

    best = trainer.state.best_model_checkpoint
    write_rank_report(cli.out, trainer, shards, {
        "board": callback.leaderboard,
        "loaded": None if best is None else _loaded_against(trainer.model, Path(best)),
    })
    leave_together()


if __name__ == "__main__":
    main()
