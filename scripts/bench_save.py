"""Issue 13 benchmark: checkpoints written, bytes written, wall time and the chosen checkpoint, for one
training run of a small model with 40 evaluations, done two ways:

* today: the callback evaluates at every save, so the Trainer saves at every evaluation
  (``save_strategy="steps", save_steps=EVAL_STEPS``);
* run control: ``save_strategy="no"``, ``BestCheckpointCallback(..., eval_steps=EVAL_STEPS, save="improved")``.

Prints a table (figures, not a timed test). Run:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_save.py [--steps 80] [--eval-steps 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from synthetic_reviews import (
    keyword_reviews,
    tiny_llama_classifier,
    tokenize_reviews,
    train_tokenizer,
)
from transformers import Trainer, TrainerCallback, TrainingArguments

from trainer_ext import BestCheckpointCallback


class CountWrites(TrainerCallback):
    """At each save: the new folder's size (rotation may delete it later; bytes were written anyway)."""

    def __init__(self) -> None:
        self.folders, self.bytes = 0, 0

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.folders += 1
        self.bytes += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(data, out: Path, *, steps: int, eval_steps: int, improved: bool) -> dict:
    counter = CountWrites()
    options = {"eval_steps": eval_steps, "save": "improved"} if improved else {}
    callback = BestCheckpointCallback(eval_dataset=data["holdout"], objective="accuracy", **options)
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=16, per_device_eval_batch_size=32,
        learning_rate=3e-3, save_strategy="no" if improved else "steps", save_steps=eval_steps, eval_strategy="no",
        report_to=[], use_cpu=True, seed=0, logging_steps=1000, disable_tqdm=True,
    )
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0), args=args, train_dataset=data["train"],
        processing_class=data["tokenizer"], callbacks=[callback, counter],
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    board = json.loads((out / "checkpoint_leaderboard.json").read_text())
    return {
        "evaluations": len(board["entries"]), "checkpoints written": counter.folders,
        "MB written": counter.bytes / 1e6, "wall s": seconds, "chosen": board["best_checkpoint"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--eval-steps", type=int, default=2)
    options = parser.parse_args()
    train_rows, eval_rows = keyword_reviews(640, seed=1), keyword_reviews(200, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    data = {"tokenizer": tokenizer, "train": tokenize_reviews(train_rows, tokenizer),
            "holdout": tokenize_reviews(eval_rows, tokenizer)}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, improved in (("save at every evaluation (today)", False), ('eval_steps + save="improved"', True)):
            rows[name] = run(data, Path(tmp) / name.split()[0], steps=options.steps, eval_steps=options.eval_steps,
                             improved=improved)
    keys = list(next(iter(rows.values())))
    print("| run | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in rows.items():
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    today, ours = rows.values()
    print(f"\nsame choice: {today['chosen'] == ours['chosen']}; bytes ratio: {ours['MB written'] / today['MB written']:.3f}; "
          f"wall time ratio: {ours['wall s'] / today['wall s']:.3f}")


if __name__ == "__main__":
    main()
