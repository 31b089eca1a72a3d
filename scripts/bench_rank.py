#!/usr/bin/env python
"""Benchmark ``trainer-ext rank``: how long ranking N checkpoints from their records takes, without a model.

Prints measured figures; it is not a test (``tests/integration/test_cli.py`` checks that 100 records rank
correctly). Builds N synthetic checkpoint folders (``checkpoint_metrics.json`` with a 2-class confusion
matrix and its count metrics, ``checkpoint_scores.npz`` with ``--examples`` rows) in a temporary folder,
then times, best of ``--repeats``:

* ``in-process``: ``trainer_ext.cli.main(["rank", DIR, ...])`` (read every record, rank, bootstrap interval
  of each checkpoint's objective, paired comparison of the best with the runner-up, render), output discarded;
* ``--apply``: the same, plus rewriting every ``trainer_state.json`` and the leaderboard files;
* ``command``: the installed ``trainer-ext rank`` as a new process (interpreter start and imports included).

Usage (from the repository root)::

    .venv/bin/python scripts/bench_rank.py                    # 100 and 1000 checkpoints
    .venv/bin/python scripts/bench_rank.py --checkpoints 100 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LABELS = ["NEGATIVE", "POSITIVE"]
TARGET_SECONDS_FOR_100 = 1.0  # issue 5: "100 checkpoints in under a second"


def build(folder: Path, checkpoints: int, examples: int, seed: int) -> None:
    from trainer_ext.metrics import class_slugs, compute_metrics, confusion_matrix
    from trainer_ext.objectives import Objective
    from trainer_ext.records import CheckpointRecord, save_scores

    rng = np.random.default_rng(seed)
    labels = (rng.random(examples) < 0.6).astype(np.int64)
    slugs = class_slugs(LABELS)
    for i in range(checkpoints):
        step = 10 * (i + 1)
        flip = rng.random(examples) < rng.uniform(0.02, 0.3)
        predictions = np.where(flip, 1 - labels, labels)
        probabilities = np.stack([1 - predictions * 0.8 - 0.1, predictions * 0.8 + 0.1], axis=1).astype(np.float32)
        target = folder / f"checkpoint-{step}"
        target.mkdir(parents=True)
        cm = confusion_matrix(labels, predictions, 2)
        CheckpointRecord(
            checkpoint=target.name, global_step=step, epoch=float(i + 1), labels=LABELS, num_samples=examples,
            metrics=compute_metrics(labels, predictions, probabilities, label_names=slugs),
            confusion_matrix=cm.tolist(), objective=Objective("accuracy").to_dict(), objective_value=None,
            feasible=True,
        ).write(target)
        save_scores(target, labels, predictions, probabilities)
        (target / "trainer_state.json").write_text(json.dumps({"global_step": step, "best_metric": None}))


def time_in_process(folder: Path, arguments: list[str], repeats: int) -> list[float]:
    from trainer_ext.cli import main

    times = []
    for _ in range(repeats):
        sink_out, sink_err = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(sink_out), contextlib.redirect_stderr(sink_err):
            status = main(["rank", str(folder), *arguments])
        times.append(time.perf_counter() - start)
        if status != 0:
            raise SystemExit(f"rank failed: {sink_err.getvalue()}")
    return times


def time_command(folder: Path, arguments: list[str], repeats: int) -> list[float]:
    script = Path(sys.executable).with_name("trainer-ext")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "trainer_ext"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([*command, "rank", str(folder), *arguments], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--examples", type=int, default=2000, help="held-out examples per checkpoint")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()

    arguments = ["--objective", "recall_negative", "--constraint", "precision_negative >= 0.8", "--format", "json"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"objective: {' '.join(arguments[:-2])}; {cli.examples} held-out examples per checkpoint; best of {cli.repeats}")
    print(f"{'checkpoints':>11}  {'in-process':>10}  {'--apply':>9}  {'command':>9}")
    for n in cli.checkpoints:
        folder = Path(tempfile.mkdtemp(prefix=f"bench_rank_{n}_"))
        try:
            build(folder, n, cli.examples, cli.seed)
            ranked = time_in_process(folder, arguments, cli.repeats)
            applied = time_in_process(folder, [*arguments, "--apply"], cli.repeats)
            command = time_command(folder, arguments, cli.repeats)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"{n:>11}  {min(ranked):>9.3f}s  {min(applied):>8.3f}s  {min(command):>8.3f}s")
        if n == 100:
            verdict = "meets" if min(command) < TARGET_SECONDS_FOR_100 else "MISSES"
            print(f"{'':>11}  100 checkpoints, whole command: {verdict} the target of {TARGET_SECONDS_FOR_100:.0f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
