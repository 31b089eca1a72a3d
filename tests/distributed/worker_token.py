"""One rank of a token-classification evaluation (issue 11); launched by test_token_launch.py.

    OMP_NUM_THREADS=1 python tests/distributed/worker_token.py --model /tmp/tagger --out /tmp/one.json
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ... worker_token.py --model ... --out ...

Loads the saved tagger (``AutoModelForTokenClassification``), prepares the held-out sentences of
examples/redact_pii.py through the task read from the model, evaluates with every process
(``evaluate_model``), and on the global main process writes the entity-level keys, the predictions,
the per-type statistics and a sentence-bootstrap interval of recall_per as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--eval-size", type=int, default=61)
    cli = parser.parse_args()

    import torch
    from redact_pii import build
    from transformers import AutoModelForTokenClassification

    from trainer_ext import distributed
    from trainer_ext.evaluation import default_collator, evaluate_model, prepare_held_out
    from trainer_ext.tasks import task_for_model
    from trainer_ext.uncertainty import bootstrap_interval

    torch.set_num_threads(1)
    device = distributed.join_launch()
    tokenizer, _, _, rows = build(160, cli.eval_size)
    model = AutoModelForTokenClassification.from_pretrained(cli.model).to(device)
    task = task_for_model(model)
    held_out = prepare_held_out(rows, name="holdout", task=task, tokenizer=tokenizer, model=model)
    output = evaluate_model(model, held_out, task=task, collate=default_collator(tokenizer), batch_size=4)
    metrics = task.metrics(output.labels, output.predictions, output.probabilities)
    per_sentence = task.resampling_statistics(output.labels, output.predictions)
    interval = bootstrap_interval(per_sentence, "recall_per", task, resamples=200, seed=0)
    if distributed.is_main():
        cli.out.write_text(json.dumps({
            "task": task.name, "processes": output.processes, "metrics": metrics,
            "predictions": output.predictions.tolist(), "statistics": task.statistics(output.labels, output.predictions).tolist(),
            "interval": interval.to_dict(),
        }, sort_keys=True))
    distributed.barrier()
    distributed.leave_launch()


if __name__ == "__main__":
    main()
