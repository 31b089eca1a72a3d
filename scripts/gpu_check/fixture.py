"""What every part of the GPU check shares: the data, the tiny model, the Trainer run, the result lines.

Only the public API of trainer_ext is used here (``BestCheckpointCallback``, ``Objective``, the files
it writes and the ``trainer-ext`` command), so that the check does not break when internals move.
The data and model builders come from ``examples/synthetic_reviews.py``; no ``datasets`` object is
built (plain lists of dicts are valid Trainer and callback inputs), so a ``datasets`` wheel that does
not import on the GPU machine cannot stop the check.

Result lines: each part writes ``{"lines": [{"status", "part", "name", "detail"}, ...], "seconds"}``
to the ``--result`` file; ``status`` is PASS or FAIL (a check), SKIP (what this machine cannot do,
with the reason) or INFO (a figure with no target).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO))

OBJECTIVE = "accuracy"
BATCH_SIZE = 16


class Results:
    """Result lines of one part, written to its ``--result`` file (JSON) by :meth:`write`."""

    def __init__(self, part: str, path: Path | None) -> None:
        self.part = part
        self.path = path
        self.lines: list[dict[str, str]] = []
        self.start = time.perf_counter()

    def add(self, status: str, name: str, detail: str) -> None:
        if status not in ("PASS", "FAIL", "SKIP", "INFO"):
            raise ValueError(f"status must be PASS, FAIL, SKIP or INFO; got {status!r}.")
        self.lines.append({"status": status, "part": self.part, "name": name, "detail": detail})
        print(f"[{self.part}] {status} {name}: {detail}", flush=True)

    def check(self, ok: bool, name: str, detail: str) -> bool:
        self.add("PASS" if ok else "FAIL", name, detail)
        return ok

    def write(self) -> None:
        if self.path is None:
            return
        payload = {"lines": self.lines, "seconds": time.perf_counter() - self.start}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        os.replace(tmp, self.path)


def quiet() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def reviews(*, train: int, held_out: int, flip_held_out: bool = False) -> tuple[list[dict], list[dict]]:
    """Easy keyword reviews (the tiny model learns them in a few dozen steps), deterministic.

    ``flip_held_out`` swaps the held-out labels: the better the model learns, the worse it does on
    them, so the business-best checkpoint is an early one, not the last (loading it is then visible).
    """
    from synthetic_reviews import keyword_reviews

    train_rows = keyword_reviews(train, seed=11)
    held_out_rows = keyword_reviews(held_out, seed=12)
    if flip_held_out:
        held_out_rows = [{"text": r["text"], "label": 1 - r["label"]} for r in held_out_rows]
    return train_rows, held_out_rows


def tokenizer_and_model(train_rows: list[dict], *, hidden_size: int, num_layers: int):
    from synthetic_reviews import tiny_llama_classifier, train_tokenizer

    tokenizer = train_tokenizer([r["text"] for r in train_rows], vocab_size=400)
    model = tiny_llama_classifier(tokenizer, hidden_size=hidden_size, num_layers=num_layers, seed=0)
    return tokenizer, model


def features(rows: list[dict], tokenizer) -> list[dict]:
    """Model-ready training examples as a plain list (a valid map-style dataset for the Trainer)."""
    encoded = tokenizer([r["text"] for r in rows], truncation=True)
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": int(r["label"])}
        for ids, mask, r in zip(encoded["input_ids"], encoded["attention_mask"], rows)
    ]


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({"text": row["text"], "label": int(row["label"])}) + "\n")


def train_with_callback(
    output_dir: Path,
    *,
    train_rows: list[dict],
    held_out_rows: list[dict],
    hidden_size: int = 64,
    num_layers: int = 2,
    max_steps: int = 12,
    save_steps: int = 4,
    use_cpu: bool,
    bf16: bool = False,
):
    """Train the tiny classifier with BestCheckpointCallback (raw-text held-out set, tokenized by the
    callback with ``processing_class``); return the Trainer after ``train()``."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from trainer_ext import BestCheckpointCallback, Objective

    tokenizer, model = tokenizer_and_model(train_rows, hidden_size=hidden_size, num_layers=num_layers)
    callback = BestCheckpointCallback(
        eval_dataset=held_out_rows, objective=Objective(OBJECTIVE), batch_size=BATCH_SIZE, name="holdout"
    )
    args = TrainingArguments(
        str(output_dir),
        max_steps=max_steps,
        save_strategy="steps",
        save_steps=save_steps,
        learning_rate=3e-3,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=BATCH_SIZE,
        bf16=bf16,
        use_cpu=use_cpu,
        report_to=[],
        disable_tqdm=True,
        logging_strategy="no",
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=features(train_rows, tokenizer),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # disable_tqdm=True prints every log dict otherwise
    trainer.train()
    return trainer


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def read_record(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "checkpoint_metrics.json").read_text(encoding="utf-8"))


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
