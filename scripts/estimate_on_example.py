#!/usr/bin/env python
"""The selection-corrected estimate on the repository's own example, against fresh data (issue 15).

1. Trains ``examples/route_negative_reviews.py``'s scenario (its ``main``: synthetic reviews, tiny Llama
   classifier, one checkpoint per epoch, the callback ranking every checkpoint by ``recall_negative``).
2. From the output folder: the value the leaderboard reports for the chosen checkpoint, and
   :func:`trainer_ext.estimate.estimate_best` from every checkpoint's saved ``checkpoint_scores.npz``.
3. The chosen checkpoint on fresh reviews from the example's generator (``make_reviews`` with another
   seed), which no checkpoint was chosen on: the number the estimate should be close to.

Prints the three side by side. Not a test; it takes about a minute on two idle CPU cores.

    .venv/bin/python scripts/estimate_on_example.py
    .venv/bin/python scripts/estimate_on_example.py --epochs 10 --fresh-size 50000
    .venv/bin/python scripts/estimate_on_example.py --skip-training --output-dir outputs/route_negative_reviews
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))

import route_negative_reviews as example  # noqa: E402  (examples/ is not a package)
from synthetic_reviews import make_reviews  # noqa: E402

from trainer_ext.estimate import CheckpointPredictions, EstimateUnavailable, estimate_best  # noqa: E402
from trainer_ext.metrics import class_slugs, compute_metrics  # noqa: E402
from trainer_ext.objectives import Objective  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/estimate_on_example"))
    parser.add_argument("--epochs", type=int, default=5, help="checkpoints to choose among (default: %(default)s)")
    parser.add_argument("--train-size", type=int, default=example.DEFAULT_TRAIN_SIZE)
    parser.add_argument("--eval-size", type=int, default=example.DEFAULT_EVAL_SIZE)
    parser.add_argument("--seed", type=int, default=example.DEFAULT_SEED)
    parser.add_argument("--fresh-size", type=int, default=20_000, help="fresh reviews (default: %(default)s)")
    parser.add_argument("--fresh-seed", type=int, default=20_251_201, help="their seed (default: %(default)s)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--skip-training", action="store_true", help="use the checkpoints already in --output-dir")
    return parser.parse_args(argv)


def saved_predictions(output_dir: Path) -> tuple[np.ndarray, list[CheckpointPredictions]]:
    """Every checkpoint's saved held-out labels and predictions (one held-out set)."""
    labels, checkpoints = None, []
    for folder in sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        path = folder / "checkpoint_scores.npz"
        if not path.is_file():
            continue
        with np.load(path) as arrays:
            if labels is None:
                labels = arrays["labels"]
            checkpoints.append(CheckpointPredictions(folder.name, int(folder.name.split("-")[1]), {None: arrays["predictions"]}))
    if labels is None:
        raise SystemExit(f"{output_dir}: no checkpoint_scores.npz; train first (without --skip-training)")
    return labels, checkpoints


def fresh_value(checkpoint_dir: Path, key: str, slugs: list[str], size: int, seed: int) -> float:
    """``key`` of the checkpoint in ``checkpoint_dir`` on ``size`` fresh reviews (argmax predictions)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(1)  # the tiny model's matrices are too small to share between threads
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint_dir).eval()
    rows = make_reviews(size, seed=seed)
    predictions = []
    with torch.no_grad():
        for start in range(0, size, 256):
            texts = [row["text"] for row in rows[start : start + 256]]
            batch = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
            predictions.append(model(**batch).logits.argmax(dim=-1).numpy())
    labels = np.array([row["label"] for row in rows])
    return compute_metrics(labels, np.concatenate(predictions), label_names=slugs)[key]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.skip_training:
        status = example.main([
            "--output-dir", str(args.output_dir), "--epochs", str(args.epochs), "--train-size", str(args.train_size),
            "--eval-size", str(args.eval_size), "--seed", str(args.seed),
        ])
        if status != 0:
            return status
    board = json.loads((args.output_dir / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))
    objective = Objective.from_dict({**board["objective"], "bootstrap_resamples": args.resamples})
    slugs = class_slugs(board["labels"])
    chosen = board["best_checkpoint"]
    reported = next(e["objective_value"] for e in board["entries"] if e["checkpoint"] == chosen)
    labels, checkpoints = saved_predictions(args.output_dir)
    try:
        result = estimate_best({None: labels}, checkpoints, objective, slugs, reported_value=reported)
        estimate_text = (
            f"{result.value:.3f} [{result.low:.3f}, {result.high:.3f}] at {result.confidence:.0%} "
            f"(selection-corrected, {result.resamples} resamples, seed {result.seed}; optimism {result.optimism:+.3f})"
        )
    except EstimateUnavailable as reason:
        estimate_text = f"not available: {reason}"
    fresh = fresh_value(args.output_dir / chosen, objective.metric, slugs, args.fresh_size, args.fresh_seed)

    print()
    print(f"{objective.metric} of {chosen}, chosen among {len(checkpoints)} checkpoints with saved predictions:")
    print(f"  reported on the held-out set ({labels.size:,} reviews):  {reported:.3f}")
    print(f"  expected on new data:                        {estimate_text}")
    print(f"  measured on {args.fresh_size:,} fresh reviews (seed {args.fresh_seed}):  {fresh:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
