"""Benchmark: bootstrap intervals on 1,000,000 held-out examples with 1,000 resamples, and the
selection-corrected estimate of the chosen checkpoint (issue 15) for 50 checkpoints x 100,000 examples
x 1,000 resamples.

Prints measured wall times (best of --repeats) next to the target (< 2 s); not a test. The estimate is
timed on two kinds of checkpoints: those of a run (they agree on most examples and differ on a hard
tenth, so examples share joint patterns) and independent random predictions (the worst case: no two
examples share a pattern, so nothing groups). BLAS threads follow OMP_NUM_THREADS; run it with 1 and 2.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_bootstrap.py [--examples 1000000] [--resamples 1000]
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_bootstrap.py --only-estimate
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_bootstrap.py --only-estimate --tasks

``--tasks`` also times the estimate of the other tasks with count-based keys, at the same sizes:
multi-label with 5 labels (each label resampled as its own binary set, the examples shared) and token
classification with 2 entity types on 8-token sentences (per-sentence statistics). The 2 s target is
the single-label one; these rows show what the other tasks cost (no target of their own).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from trainer_ext.estimate import CheckpointPredictions, estimate_best
from trainer_ext.metrics import confusion_matrix
from trainer_ext.objectives import Objective
from trainer_ext.tasks.multi_label import MultiLabel
from trainer_ext.tasks.token import TokenClassification
from trainer_ext.uncertainty import bootstrap_interval, paired_bootstrap


def best_of(repeats: int, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), max(times), result


def run_like_checkpoints(rng: np.random.Generator, labels: np.ndarray, count: int) -> list[np.ndarray]:
    """Checkpoints of one run: right on 90 % of the examples at every step; on the hard tenth each
    checkpoint is right with a probability that drifts up over the run."""
    hard = rng.random(labels.size) < 0.10
    return [
        np.where(hard & (rng.random(labels.size) > 0.35 + 0.3 * k / count), 1 - labels, labels) for k in range(count)
    ]


def independent_checkpoints(rng: np.random.Generator, labels: np.ndarray, count: int) -> list[np.ndarray]:
    """Each checkpoint right with probability 0.80 .. 0.85, independently of the others."""
    return [np.where(rng.random(labels.size) < 0.80 + 0.05 * k / count, labels, 1 - labels) for k in range(count)]


def estimate_rows(args: argparse.Namespace) -> list[tuple[str, float, float, str]]:
    rng = np.random.default_rng(1)
    labels = (rng.random(args.estimate_examples) < 0.3).astype(np.int64)  # 30 % NEGATIVE
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.5"], bootstrap_resamples=args.resamples)
    rows = []
    for name, build in (("run-like checkpoints", run_like_checkpoints), ("independent (worst case)", independent_checkpoints)):
        checkpoints = [
            CheckpointPredictions(f"checkpoint-{k + 1}", k + 1, {None: p})
            for k, p in enumerate(build(rng, labels, args.checkpoints))
        ]
        t, worst, result = best_of(args.repeats, lambda: estimate_best(
            {None: labels}, checkpoints, objective, ["negative", "positive"], reported_value=1.0))
        rows.append((
            f"selection-corrected estimate, {args.checkpoints} x {args.estimate_examples:,} x {args.resamples:,}: {name}",
            t, worst, f"value {result.value:.4f} [{result.low:.4f}, {result.high:.4f}]",
        ))
    return rows


def task_rows(args: argparse.Namespace) -> list[tuple[str, float, float, str]]:
    """The estimate for multi-label (5 labels) and token classification (PER, LOC), run-like checkpoints."""
    rng = np.random.default_rng(2)
    n, count = args.estimate_examples, args.checkpoints
    rows = []
    multi = MultiLabel(["toxic", "spam", "urgent", "billing", "other"])
    labels = (rng.random((n, 5)) < 0.3).astype(np.int64)
    hard = rng.random((n, 5)) < 0.10
    predictions = [np.where(hard & (rng.random((n, 5)) > 0.35 + 0.3 * k / count), 1 - labels, labels) for k in range(count)]
    rows.append(_task_row(args, "multi-label, 5 labels", multi, labels, predictions,
                          Objective("recall_toxic", constraints=["precision_toxic >= 0.5"], bootstrap_resamples=args.resamples)))
    token = TokenClassification(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    labels = np.zeros((n, 8), dtype=np.int64)
    labels[:, 0] = -100
    start = rng.integers(1, 5, n)
    labels[np.arange(n), start], labels[np.arange(n), start + 1] = 1, 2
    loc = rng.random(n) < 0.5
    labels[loc, 7] = 3
    hard = rng.random(n) < 0.10
    predictions = []
    for k in range(count):
        p = labels.copy()
        missed = hard & (rng.random(n) > 0.35 + 0.3 * k / count)
        p[missed, start[missed]], p[missed, start[missed] + 1] = 0, 0
        predictions.append(p)
    rows.append(_task_row(args, "token classification, 2 entity types", token, labels, predictions,
                          Objective("recall_per", constraints=["precision_per >= 0.5"], bootstrap_resamples=args.resamples)))
    return rows


def _task_row(args, name, task, labels, predictions, objective) -> tuple[str, float, float, str]:
    checkpoints = [CheckpointPredictions(f"checkpoint-{k + 1}", k + 1, {None: p}) for k, p in enumerate(predictions)]
    repeats = min(args.repeats, 2)
    t, worst, result = best_of(repeats, lambda: estimate_best({None: labels}, checkpoints, objective, task, reported_value=1.0))
    return (
        f"selection-corrected estimate, {args.checkpoints} x {args.estimate_examples:,} x {args.resamples:,}: {name} "
        f"(best of {repeats})", t, worst, f"value {result.value:.4f} [{result.low:.4f}, {result.high:.4f}]", "none (what it costs)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checkpoints", type=int, default=50, help="checkpoints for the estimate (default: %(default)s)")
    parser.add_argument("--estimate-examples", type=int, default=100_000, help="examples for the estimate (default: %(default)s)")
    parser.add_argument("--only-estimate", action="store_true", help="time the selection-corrected estimate only")
    parser.add_argument("--tasks", action="store_true", help="also time the estimate for multi-label and token classification")
    args = parser.parse_args()
    tasks = task_rows(args) if args.tasks else []
    if args.only_estimate:
        report(args, estimate_rows(args) + tasks)
        return

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, args.examples)
    first = np.where(rng.random(args.examples) < 0.90, labels, 1 - labels)
    second = np.where(rng.random(args.examples) < 0.895, labels, 1 - labels)
    slugs = ["negative", "positive"]

    rows = []
    t, worst, interval = best_of(args.repeats, lambda: bootstrap_interval(
        confusion_matrix(labels, first, 2), "recall_negative", slugs, resamples=args.resamples))
    rows.append(("interval of recall_negative (incl. confusion matrix)", t, worst, f"[{interval.low:.5f}, {interval.high:.5f}]"))
    t, worst, cmp = best_of(args.repeats, lambda: paired_bootstrap(
        labels, first, second, "recall_negative", slugs, greater_is_better=True, resamples=args.resamples))
    rows.append(("paired best vs runner-up (incl. joint counts)", t, worst, f"diff {cmp.difference:+.5f}, win share {cmp.win_share:.3f}"))
    t, worst, _ = best_of(args.repeats, lambda: paired_bootstrap(
        labels, first, second, "expected_cost", slugs, greater_is_better=False, resamples=args.resamples,
        cost_matrix=np.array([[0, 1], [50, 0]]), class_prior=np.array([0.995, 0.005])))
    rows.append(("paired expected_cost with class prior", t, worst, ""))

    report(args, rows + estimate_rows(args) + tasks)


def report(args: argparse.Namespace, rows: list[tuple[str, float, float, str]]) -> None:
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"{args.examples:,} examples (intervals), {args.resamples:,} resamples, best of {args.repeats}; "
          f"OMP_NUM_THREADS={threads}; python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print("| computation | best s | worst s | target | result |")
    print("|---|---|---|---|---|")
    for name, best, worst, result, *target in rows:
        verdict = target[0] if target else f"< 2 s: {'met' if best < 2 else 'MISSED'}"
        print(f"| {name} | {best:.3f} | {worst:.3f} | {verdict} | {result} |")


if __name__ == "__main__":
    main()
