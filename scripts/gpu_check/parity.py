#!/usr/bin/env python
"""Part 1, evaluation parity: the callback's records made on DEVICE against a CPU fp32 re-evaluation.

Two short training runs of the tiny Llama classifier on ``--device`` (cuda, or cpu for the dry run),
each with BestCheckpointCallback: one in fp32, one with ``bf16=True`` (the callback then evaluates
under bf16 autocast; its record says ``evaluation.precision == "bf16"``). Each run's output folder is
copied, and ``trainer-ext evaluate`` re-evaluates the copy's checkpoints on the CPU in fp32
(``CUDA_VISIBLE_DEVICES=""``, same batch size). Then per checkpoint, ``checkpoint_scores.npz`` of the
run against the copy's:

* fp32 run: predictions must be identical for every checkpoint and example (PASS/FAIL); the largest
  probability difference is reported;
* bf16 run: the share of changed predictions and the largest probability difference are reported
  (INFO: bf16 has 8 mantissa bits, so a difference is expected; there is no target).

    python scripts/gpu_check/parity.py --device cuda --workdir W --result W/parity.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import fixture

RUNS = ("fp32", "bf16")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--result", type=Path, default=None)
    parser.add_argument("--train-examples", type=int, default=192)
    parser.add_argument("--held-out-examples", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--save-steps", type=int, default=4)
    return parser.parse_args(argv)


def evaluate_on_cpu(folders: list[Path], data: Path) -> None:
    """``trainer-ext evaluate`` on the CPU, fp32, one process (the public command, not internals); one
    Python process for every folder, to pay the imports once."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    calls = [["evaluate", str(folder), "--data", str(data), "--batch-size", str(fixture.BATCH_SIZE),
              "--objective", fixture.OBJECTIVE] for folder in folders]
    program = f"import sys\nfrom trainer_ext.cli import main\nsys.exit(max(main(a) for a in {calls!r}))\n"
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        print(done.stderr[-6000:], file=sys.stderr)  # into the part's log
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"trainer-ext evaluate (cpu) exited {done.returncode}: {last}")


def compare(run_dir: Path, cpu_dir: Path) -> dict:
    """Per-example comparison of every checkpoint's scores: the run's against the CPU re-evaluation's."""
    import numpy as np

    changed = total = 0
    max_diff = 0.0
    precisions = set()
    checkpoints = fixture.checkpoint_dirs(run_dir)
    for checkpoint in checkpoints:
        ours = np.load(checkpoint / "checkpoint_scores.npz")
        cpu = np.load(cpu_dir / checkpoint.name / "checkpoint_scores.npz")
        if not np.array_equal(ours["labels"], cpu["labels"]):
            raise RuntimeError(f"{checkpoint.name}: the held-out labels differ between the run and the CPU evaluation")
        changed += int((ours["predictions"] != cpu["predictions"]).sum())
        total += int(ours["predictions"].size)
        max_diff = max(max_diff, float(np.abs(ours["probabilities"] - cpu["probabilities"]).max()))
        precisions.add(fixture.read_record(checkpoint)["evaluation"]["precision"])
        cpu_precision = fixture.read_record(cpu_dir / checkpoint.name)["evaluation"]["precision"]
        if cpu_precision != "fp32":
            raise RuntimeError(f"{checkpoint.name}: the CPU re-evaluation says precision {cpu_precision!r}, not fp32")
    distinct = len({tuple(np.load(c / "checkpoint_scores.npz")["predictions"]) for c in checkpoints})
    return {"checkpoints": len(checkpoints), "changed": changed, "total": total, "max_diff": max_diff,
            "precisions": sorted(precisions), "distinct": distinct}


def main(argv=None) -> int:
    cli = parse_args(argv)
    results = fixture.Results("parity", cli.result)
    try:
        run(cli, results)
    except Exception as exc:  # one FAIL line with the reason; the table shows it, the log the traceback
        traceback.print_exc()
        results.add("FAIL", "parity", f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}")
    results.write()
    return 0


def run(cli: argparse.Namespace, results: fixture.Results) -> None:
    import torch

    fixture.quiet()
    if cli.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch.cuda.is_available() is False")
    where = f"cuda ({torch.cuda.get_device_name(0)})" if cli.device == "cuda" else "cpu"
    cli.workdir.mkdir(parents=True, exist_ok=True)
    train_rows, held_out_rows = fixture.reviews(train=cli.train_examples, held_out=cli.held_out_examples)
    data = cli.workdir / "held_out.jsonl"
    fixture.write_jsonl(held_out_rows, data)

    run_dirs, cpu_dirs = {}, {}
    for precision in RUNS:
        start = time.perf_counter()
        run_dirs[precision] = cli.workdir / f"run_{precision}"
        shutil.rmtree(run_dirs[precision], ignore_errors=True)
        trainer = fixture.train_with_callback(
            run_dirs[precision], train_rows=train_rows, held_out_rows=held_out_rows,
            max_steps=cli.max_steps, save_steps=cli.save_steps, use_cpu=cli.device == "cpu", bf16=precision == "bf16",
        )
        device = next(trainer.model.parameters()).device
        if device.type != cli.device:
            raise RuntimeError(f"the {precision} run trained on {device}, not on {cli.device}")
        del trainer
        cpu_dirs[precision] = cli.workdir / f"run_{precision}_cpu"
        shutil.rmtree(cpu_dirs[precision], ignore_errors=True)
        shutil.copytree(run_dirs[precision], cpu_dirs[precision])
        print(f"[parity] {precision} run on {where}: {fixture.fmt_seconds(time.perf_counter() - start)}", flush=True)
    start = time.perf_counter()
    evaluate_on_cpu([cpu_dirs[p] for p in RUNS], data)
    print(f"[parity] trainer-ext evaluate on cpu (fp32): {fixture.fmt_seconds(time.perf_counter() - start)}", flush=True)

    fp32, bf16 = compare(run_dirs["fp32"], cpu_dirs["fp32"]), compare(run_dirs["bf16"], cpu_dirs["bf16"])
    examples = f"{fp32['checkpoints']} checkpoints x {cli.held_out_examples} examples"
    results.check(
        fp32["changed"] == 0 and fp32["precisions"] == ["fp32"] and fp32["checkpoints"] >= 2,
        f"{cli.device} fp32 records == cpu fp32",
        f"{fp32['changed']} of {fp32['total']} predictions differ ({examples}; records say {fp32['precisions']}); "
        f"max |dp| = {fp32['max_diff']:.2e}; {fp32['distinct']} distinct prediction vectors",
    )
    results.check(
        bf16["precisions"] == ["bf16"] and bf16["checkpoints"] >= 2,
        f"{cli.device} bf16 run evaluated under bf16 autocast",
        f"records say evaluation.precision {bf16['precisions']} ({bf16['checkpoints']} checkpoints)",
    )
    results.add(
        "INFO", f"{cli.device} bf16 autocast vs cpu fp32",
        f"changed predictions {bf16['changed']}/{bf16['total']} = {bf16['changed'] / max(1, bf16['total']):.2%}; "
        f"max |dp| = {bf16['max_diff']:.2e} (no target)",
    )


if __name__ == "__main__":
    sys.exit(main())
