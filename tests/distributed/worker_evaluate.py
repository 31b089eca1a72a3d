"""The 1-process reference: evaluate saved checkpoints with one plain process; launched by test_launch.py.

    OMP_NUM_THREADS=1 python tests/distributed/worker_evaluate.py --tokenizer /tmp/tokenizer \
        --eval-size 101 --out /tmp/reference /tmp/run/run/checkpoint-8 /tmp/run/run/checkpoint-16 ...

For each checkpoint folder it loads the saved weights (``AutoModelForSequenceClassification.from_pretrained``),
runs ``trainer_ext.evaluation.evaluate_model`` with one process (no launcher, no process group) on the same
held-out set and batch size as ``worker_train.py``, and computes ``trainer_ext.metrics.compute_metrics``.
Writes ``<out>/<checkpoint>.npz`` (labels, predictions, probabilities) and ``<out>/reference.json``
(metrics per checkpoint, and the selection ``select_best`` makes from them: best checkpoint and ranking).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import worker_train  # same folder: sys.path[0] is this script's directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tokenizer", required=True, type=Path)
    parser.add_argument("--eval-size", type=int, default=101)
    parser.add_argument("--batch-size", type=int, default=4)
    cli = parser.parse_args()

    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    import trainer_ext.distributed as distributed
    from trainer_ext.evaluation import evaluate_model, prepare_held_out
    from trainer_ext.metrics import class_slugs, compute_metrics
    from trainer_ext.objectives import as_objective
    from trainer_ext.selection import Candidate, select_best

    torch.set_num_threads(1)
    if distributed.world_size() != 1 or int(os.environ.get("WORLD_SIZE", "1") or 1) != 1:
        raise SystemExit("worker_evaluate.py is the 1-process reference: run it with plain python, not a launcher")
    cli.out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(cli.tokenizer)
    collate = DataCollatorWithPadding(tokenizer)
    results: dict[str, dict] = {}
    candidates = []
    for folder in cli.checkpoints:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        if torch.cuda.is_available():  # scripts/gpu_distributed.sh: the reference runs on one GPU
            model = model.cuda()
        names = [model.config.id2label[i] for i in sorted(model.config.id2label)]
        held_out = prepare_held_out(
            worker_train.held_out_dataset(tokenizer, cli.eval_size), name="holdout", label_names=names
        )
        output = evaluate_model(
            model, held_out, collate=collate, batch_size=cli.batch_size, num_classes=len(names)
        )
        assert output.processes == 1, output.processes
        metrics = compute_metrics(output.labels, output.predictions, output.probabilities, label_names=class_slugs(names))
        np.savez(
            cli.out / f"{folder.name}.npz",
            labels=output.labels,
            predictions=output.predictions,
            probabilities=output.probabilities,
        )
        step = int(folder.name.rsplit("-", 1)[1])
        candidates.append(Candidate(folder.name, step, metrics))
        # NaN (zero support) is written as null, as the records do.
        results[folder.name] = {k: (None if math.isnan(v) else v) for k, v in metrics.items()}
    selection = select_best(candidates, as_objective(worker_train.OBJECTIVE), final=True)
    report = {
        "metrics": results,
        "best_checkpoint": selection.best_checkpoint,
        "best_metric": None if selection.best is None else selection.best.objective_value,
        "best_global_step": None if selection.best is None else selection.best.global_step,
        "ranking": [r.checkpoint for r in selection.ranking],
    }
    (cli.out / "reference.json").write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main()
