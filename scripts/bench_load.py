"""Load: a held-out set of 200,000 examples and a run of 100 saves. Does memory stay flat across saves, and
how long does the leaderboard update take per save?

    python scripts/bench_load.py                                # 200,000 examples, 100 saves
    python scripts/bench_load.py --examples 5000 --saves 5      # a quick look

The model is trivially cheap so that the figures are the callback's, not the model's: a bag-of-words
classifier (``nn.EmbeddingBag`` of a 2,000-token vocabulary, 16 dimensions, mean pooling, then a linear
layer to 2 classes) with a ``PretrainedConfig`` carrying ``id2label``, returning ``{"loss", "logits"}``.
Examples are 4 to 16 token ids; the label is whether most tokens come from the lower half of the vocabulary
(flipped for 10 % of them). A real ``Trainer`` trains it on 2,048 examples (batch 32) with a save at every
step, ``save_total_limit=2``, and ``BestCheckpointCallback(objective="recall_negative")`` (the default
Objective: a 1,000-resample bootstrap interval per checkpoint and a paired comparison with the runner-up).

Measured at every save, after the callback's ``on_save`` (a callback placed after it):

* RSS of the process (``/proc/self/statm``), and what the callback holds by design: one record per
  checkpoint and the objective set's predictions of every checkpoint (int16, 2 bytes per example), which
  the paired comparison and ``require_significance`` read;
* the leaderboard update: ``RunTracker.select`` (``select_best`` over every checkpoint so far, plus the paired
  bootstrap of the best against the runner-up) and the files written (record, per-example scores,
  leaderboard JSON and Markdown, trainer_state.json), each write timed in ``records._replace_atomically``;
* the held-out evaluation itself, for scale.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

VOCAB, DIM, MIN_LEN, MAX_LEN = 2000, 16, 4, 16
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * PAGE / 2**20


def make_examples(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, size=n)
    low_share = rng.beta(2, 2, size=n)
    rows = []
    for length, share in zip(lengths.tolist(), low_share.tolist()):
        low = rng.random(length) < share
        ids = np.where(low, rng.integers(1, VOCAB // 2, size=length), rng.integers(VOCAB // 2, VOCAB, size=length))
        label = int(low.mean() <= 0.5)  # 0 = NEGATIVE: mostly low-half tokens
        if rng.random() < 0.1:
            label = 1 - label
        rows.append({"input_ids": ids.tolist(), "labels": label})
    return rows


def collate(rows: list[dict]) -> dict:
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row["input_ids"])] = row["input_ids"]
    batch = {"input_ids": torch.from_numpy(ids)}
    if "labels" in rows[0]:
        batch["labels"] = torch.tensor([r["labels"] for r in rows])
    return batch


def bag_of_words_classifier(seed: int = 0):
    import torch
    from transformers import PretrainedConfig

    class BagOfWordsClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = PretrainedConfig(id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
            self.bag = torch.nn.EmbeddingBag(VOCAB, DIM, mode="mean", padding_idx=0)
            self.head = torch.nn.Linear(DIM, 2)

        def forward(self, input_ids, labels=None):
            logits = self.head(self.bag(input_ids))
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
            return out

    torch.manual_seed(seed)
    return BagOfWordsClassifier()


class Timers:
    """Seconds spent per save in the wrapped functions, by name."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self._originals: list[tuple] = []

    def wrap(self, owner, attribute: str, name: str | None = None, key=None) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                label = key(*args, **kwargs) if key else (name or attribute)
                self.current[label] += time.perf_counter() - start

        self._originals.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def restore(self) -> None:
        for owner, attribute, original in reversed(self._originals):
            setattr(owner, attribute, original)
        self._originals.clear()

    def take(self) -> dict[str, float]:
        taken, self.current = dict(self.current), defaultdict(float)
        return taken


def run(examples: int, saves: int, out: Path, *, batch_size: int = 1024, quiet: bool = False) -> list[dict]:
    import torch
    from transformers.utils import logging as hf_logging

    import trainer_ext.evaluation as evaluation_module
    import trainer_ext.tracker as tracker_module
    import trainer_ext.records as records

    threads, verbosity = torch.get_num_threads(), hf_logging.get_verbosity()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    timers = Timers()
    timers.wrap(tracker_module.RunTracker, "select", "select")
    timers.wrap(evaluation_module, "evaluate_model", "evaluate")
    timers.wrap(records, "_replace_atomically", key=lambda path, write: f"write {Path(path).name}")
    try:
        return _run(examples, saves, out, batch_size, quiet, timers)
    finally:
        timers.restore()
        torch.set_num_threads(threads)
        hf_logging.set_verbosity(verbosity)


def _run(examples: int, saves: int, out: Path, batch_size: int, quiet: bool, timers: Timers) -> list[dict]:
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    from trainer_ext import BestCheckpointCallback

    t0 = time.perf_counter()
    held_out = make_examples(examples, seed=1)
    train = make_examples(2048, seed=2)
    seconds_data = time.perf_counter() - t0
    callback = BestCheckpointCallback(held_out, "recall_negative", data_collator=collate, batch_size=batch_size)
    rows: list[dict] = []

    class Measure(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.rss_start = rss_mib()
            timers.take()

        def on_save(self, args, state, control, **kwargs):
            spent = timers.take()
            writes = {k[len("write "):]: v for k, v in spent.items() if k.startswith("write ")}
            predictions = sum(a.nbytes for sets in callback._run.predictions.values() for a in sets.values())
            rows.append({
                "save": len(rows) + 1, "step": state.global_step, "rss_mib": rss_mib(),
                "evaluate_s": spent.get("evaluate", 0.0), "select_s": spent.get("select", 0.0),
                "write_s": sum(writes.values()), "writes": writes, "predictions_mib": predictions / 2**20,
                "records": len(callback._run.records),
            })
            if not quiet and (len(rows) <= 3 or len(rows) % 10 == 0):
                r = rows[-1]
                print(f"save {r['save']:>3}: rss {r['rss_mib']:7.1f} MiB, evaluate {r['evaluate_s']:5.2f} s, "
                      f"select {1e3 * r['select_s']:6.1f} ms, write {1e3 * r['write_s']:6.1f} ms", flush=True)

    measure = Measure()
    args = TrainingArguments(
        output_dir=str(out), max_steps=saves, per_device_train_batch_size=32, learning_rate=0.05,
        save_strategy="steps", save_steps=1, save_total_limit=2, eval_strategy="no", logging_strategy="no",
        report_to=[], use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = Trainer(model=bag_of_words_classifier(), args=args, train_dataset=train, data_collator=collate,
                      callbacks=[callback, measure])
    trainer.remove_callback(PrinterCallback)  # the logs of 100 saves would bury the figures
    rss_before = rss_mib()
    trainer.train()
    rows[0]["rss_before_train_mib"] = rss_before
    rows[0]["rss_train_begin_mib"] = measure.rss_start
    rows[0]["seconds_data"] = seconds_data
    return rows


def summarize(rows: list[dict], examples: int) -> str:
    update = [r["select_s"] + r["write_s"] for r in rows]
    select = [r["select_s"] for r in rows]
    first, last = rows[0], rows[-1]
    growth = last["rss_mib"] - first["rss_mib"]
    held = last["predictions_mib"] - first["predictions_mib"]
    tail = rows[len(rows) // 2:]  # second half: after allocator warm-up
    tail_growth = tail[-1]["rss_mib"] - tail[0]["rss_mib"]
    tail_held = tail[-1]["predictions_mib"] - tail[0]["predictions_mib"]
    writes = defaultdict(list)
    for r in rows:
        for name, seconds in r["writes"].items():
            writes[name].append(seconds)
    lines = [
        f"held-out examples: {examples:,}; saves: {len(rows)}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
        f"leaderboard update per save (select + write files): first {1e3 * update[0]:.1f} ms, last "
        f"{1e3 * update[-1]:.1f} ms, max {1e3 * max(update):.1f} ms (save {1 + int(np.argmax(update))}), "
        f"median {1e3 * float(np.median(update)):.1f} ms",
        f"  of which RunTracker.select (select_best over all checkpoints + paired bootstrap vs runner-up): first "
        f"{1e3 * select[0]:.1f} ms, last {1e3 * select[-1]:.1f} ms, max {1e3 * max(select):.1f} ms",
        "  files, median per save: " + ", ".join(f"{n} {1e3 * float(np.median(v)):.1f} ms" for n, v in sorted(writes.items())),
        f"held-out evaluation per save: median {float(np.median([r['evaluate_s'] for r in rows])):.2f} s",
        f"RSS after save 1: {first['rss_mib']:.1f} MiB; after save {last['save']}: {last['rss_mib']:.1f} MiB; "
        f"growth {growth:+.1f} MiB ({1024 * growth / max(1, len(rows) - 1):+.0f} KiB per save)",
        f"  held by design over the same saves: predictions {held:+.1f} MiB ({examples * 2 / 1024:.0f} KiB per save), "
        f"{last['records']} records; growth beyond them {growth - held:+.1f} MiB",
        f"  second half only (saves {tail[0]['save']}-{tail[-1]['save']}): RSS {tail_growth:+.1f} MiB, predictions "
        f"{tail_held:+.1f} MiB, beyond them {tail_growth - tail_held:+.1f} MiB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--saves", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024, help="held-out rows per batch for the longest examples")
    parser.add_argument("--out", type=Path, default=None)
    cli = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_load_") as scratch:
        out = cli.out or Path(scratch)
        start = time.perf_counter()
        rows = run(cli.examples, cli.saves, out, batch_size=cli.batch_size)
        print(summarize(rows, cli.examples))
        print(f"total {time.perf_counter() - start:.0f} s (data generation {rows[0]['seconds_data']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
