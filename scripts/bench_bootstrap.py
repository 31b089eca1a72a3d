"""Benchmark: bootstrap intervals on 1,000,000 held-out examples with 1,000 resamples.

Prints measured wall times (best of --repeats) next to the target (< 2 s); not a test.

    .venv/bin/python scripts/bench_bootstrap.py [--examples 1000000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from trainer_ext.metrics import confusion_matrix
from trainer_ext.uncertainty import bootstrap_interval, paired_bootstrap


def best_of(repeats: int, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), max(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

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

    print(f"{args.examples:,} examples, {args.resamples:,} resamples, best of {args.repeats}; "
          f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print("| computation | best s | worst s | target | result |")
    print("|---|---|---|---|---|")
    for name, best, worst, result in rows:
        print(f"| {name} | {best:.3f} | {worst:.3f} | < 2 s: {'met' if best < 2 else 'MISSED'} | {result} |")


if __name__ == "__main__":
    main()
