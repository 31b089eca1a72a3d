"""One rank of a 2-process launch that runs several faulty training runs in turn; launched by
test_distributed_faults.py:

    ACCELERATE_USE_CPU=true OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 tests/reliability/worker_faults.py \
        --out DIR --tokenizer DIR --phases held_out_size,held_out_content,probe_raises,forward_raises,write_fails_on_main

Each phase builds a new Trainer with ``BestCheckpointCallback`` and trains until something fails:

* ``held_out_size``: rank 1's held-out set lacks its last example (DistributedSetupError expected);
* ``held_out_content``: rank 1's held-out set has one label flipped: same size, other fingerprint;
* ``probe_raises``: the model's forward raises a plain RuntimeError in eval mode on rank 1 from the start,
  i.e. in the callback's probe forward pass in ``on_train_begin``;
* ``forward_raises``: once training has started, the model's forward raises a plain RuntimeError in eval
  mode on rank 1 only, i.e. inside the held-out evaluation of the first save;
* ``write_fails_on_main``: rank 0's write of the first checkpoint record fails (OSError ENOSPC, injected).

Each rank writes ``<out>/<phase>-rank<R>.json``: the exception it got (type and message), the seconds from
``trainer.train()`` to the exception, the wall-clock time of the exception and the step. Rank 0 then waits
(at most ``--wait`` seconds) for rank 1's report before going on, so that rank 1 cannot have been released
by rank 0 leaving: only the library can have released it. When rank 1 has not reported by then (it hangs),
rank 0 exits at once without the final barrier, and the test sees the missing report.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "examples"))
sys.path.insert(0, str(HERE.parents[0] / "distributed"))

PHASES = ("held_out_size", "held_out_content", "probe_raises", "forward_raises", "write_fails_on_main")


def _trainer(cli, phase: str, rank: int):
    import torch
    from synthetic_reviews import tiny_llama_classifier
    from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
    from worker_train import held_out_dataset, train_dataset

    from trainer_ext import BestCheckpointCallback

    tokenizer = AutoTokenizer.from_pretrained(cli.tokenizer)
    held_out = held_out_dataset(tokenizer, 41)
    if rank == 1 and phase == "held_out_size":
        held_out = held_out.select(range(len(held_out) - 1))
    if rank == 1 and phase == "held_out_content":
        held_out = held_out.map(lambda row, i: {"labels": 1 - row["labels"] if i == 7 else row["labels"]},
                                with_indices=True)
    model = tiny_llama_classifier(tokenizer, seed=0)
    callbacks = []
    if phase in ("probe_raises", "forward_raises"):
        armed = {"on": phase == "probe_raises"}

        def raise_on_rank_1(module, inputs):
            if armed["on"] and not module.training and rank == 1:
                raise RuntimeError("injected: the model's forward failed on rank 1")

        model.register_forward_pre_hook(raise_on_rank_1)

        class ArmAfterFirstStep(TrainerCallback):  # placed before ours: armed before our first evaluation
            def on_step_end(self, args, state, control, **kwargs):
                armed["on"] = True

        callbacks.append(ArmAfterFirstStep())
    callbacks.append(BestCheckpointCallback(held_out, "recall_negative", batch_size=4))
    args = TrainingArguments(
        output_dir=str(cli.out / phase / "run"), per_device_train_batch_size=8, learning_rate=3e-3, max_steps=4,
        save_strategy="steps", save_steps=2, eval_strategy="no", logging_strategy="no", report_to=[],
        disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )
    torch.manual_seed(0)
    return Trainer(model=model, args=args, train_dataset=train_dataset(tokenizer, 64), processing_class=tokenizer,
                   callbacks=callbacks)


def _fail_record_writes_on_main(rank: int):
    """Rank 0 only: writing checkpoint_metrics.json fails as on a full disk. Returns the undo."""
    import trainer_ext.records as records

    original = records._replace_atomically
    if rank != 0:
        return lambda: None

    def full_disk(path, write):
        if Path(path).name == records.RECORD_FILENAME:
            raise OSError(errno.ENOSPC, "No space left on device (injected)", str(path))
        return original(path, write)

    records._replace_atomically = full_disk

    def undo():
        records._replace_atomically = original

    return undo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tokenizer", required=True, type=Path)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--wait", type=float, default=20.0)
    cli = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    cli.out.mkdir(parents=True, exist_ok=True)
    for phase in cli.phases.split(","):
        report = {"phase": phase, "rank": rank, "error": None, "message": None, "step": None}
        undo = _fail_record_writes_on_main(rank) if phase == "write_fails_on_main" else (lambda: None)
        trainer = _trainer(cli, phase, rank)
        start = time.monotonic()
        try:
            trainer.train()
        except Exception as exc:  # noqa: BLE001 - the test wants to see which exception each rank got
            report.update(error=type(exc).__name__, message=str(exc))
        finally:
            undo()
        report.update(seconds=time.monotonic() - start, ended_at=time.time(), step=trainer.state.global_step)
        (cli.out / f"{phase}-rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")
        if rank == 0:
            deadline = time.monotonic() + cli.wait
            while not (cli.out / f"{phase}-rank1.json").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not (cli.out / f"{phase}-rank1.json").exists():
                os._exit(3)  # rank 1 hangs: leave without a barrier it could mistake for its own
        torch.distributed.barrier()  # both reported: the next phase starts together
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
