"""One rank of a multi-label or regression evaluation (issue 11); launched by test_tasks_launch.py.

    OMP_NUM_THREADS=1 python tests/distributed/worker_tasks.py --model DIR --rows rows.json --out one.json
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ... worker_tasks.py ...

Loads the saved model (``AutoModelForSequenceClassification``) and its tokenizer, reads the task from
the model, evaluates the held-out rows with every process (``evaluate_model``) and, on the global main
process, writes the task's keys, predictions, statistics and the objective's interval as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--rows", required=True, type=Path)
    parser.add_argument("--objective", required=True)
    parser.add_argument("--out", required=True, type=Path)
    cli = parser.parse_args()

    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainer_ext import Objective, distributed
    from trainer_ext.evaluation import default_collator, evaluate_model, prepare_held_out
    from trainer_ext.scoring import SetResult, score_checkpoint
    from trainer_ext.tasks import task_for_model

    torch.set_num_threads(1)
    device = distributed.join_launch()
    tokenizer = AutoTokenizer.from_pretrained(cli.model)
    model = AutoModelForSequenceClassification.from_pretrained(cli.model).to(device)
    task = task_for_model(model)
    rows = json.loads(cli.rows.read_text())
    held_out = prepare_held_out(rows, name="holdout", task=task, tokenizer=tokenizer, model=model)
    output = evaluate_model(model, held_out, task=task, collate=default_collator(tokenizer), batch_size=4)
    objective = Objective(cli.objective, bootstrap_resamples=100, seed=0)
    scores = score_checkpoint({None: SetResult(output.labels, output.predictions, output.probabilities)}, task, objective)
    if distributed.is_main():
        cli.out.write_text(json.dumps({
            "task": task.name, "processes": output.processes, "metrics": scores.metrics,
            "predictions": np.asarray(output.predictions).tolist(),
            "statistics": np.asarray(scores.confusion_matrices[None]).tolist(),
            "interval": None if scores.interval is None else scores.interval.to_dict(),
        }, sort_keys=True))
    distributed.barrier()
    distributed.leave_launch()


if __name__ == "__main__":
    main()
