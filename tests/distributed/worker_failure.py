"""One rank of a launch where ``evaluate_model`` fails on rank 0 only; launched by test_launch.py.

    ACCELERATE_USE_CPU=true OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 tests/distributed/worker_failure.py --out DIR

The model gives no logits for inputs longer than 10 tokens. The held-out set has one long example and
three short ones, so rank 0 gets the long batch (a ``ConfigurationError`` there) and rank 1 the short
ones (nothing wrong there). ``evaluate_model`` promises that every rank raises and none waits forever.
Each rank writes ``<out>/rank<R>.json`` with the exception it got and how long it took; rank 0 then stays
alive (as a process whose caller catches the error would) until rank 1 has reported, at most ``--wait`` s,
so that rank 1 cannot be released by rank 0's exit instead of by the library. Then both leave together.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--wait", type=float, default=30.0)
    cli = parser.parse_args()

    import numpy as np
    import torch
    import torch.distributed as dist

    from trainer_ext.evaluation import HeldOutSet, assign_batches, evaluate_model, plan_batches

    torch.set_num_threads(1)
    cli.out.mkdir(parents=True, exist_ok=True)
    dist.init_process_group("gloo")
    rank = dist.get_rank()

    class NoLogitsWhenLong(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.score = torch.nn.Linear(1, 2)

        def forward(self, input_ids):
            if input_ids.shape[1] > 10:
                return {"logits": None}
            return {"logits": self.score(input_ids[:, :1].float())}

    lengths = np.array([20, 3, 3, 3])
    features = [{"input_ids": list(range(1, n + 1))} for n in lengths]
    held_out = HeldOutSet("failing", features, np.array([0, 1, 0, 1]), lengths, "fingerprint")
    # The premise of the test: rank 0 holds the long example, rank 1 only short ones.
    shards = assign_batches(plan_batches(lengths, 1), lengths, dist.get_world_size())
    assert [sorted(lengths[i] for b in s for i in plan_batches(lengths, 1)[b]) for s in shards] == [[20], [3, 3, 3]]

    def collate(rows):
        ids = [torch.tensor(r["input_ids"]) for r in rows]
        return {"input_ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)}

    start = time.monotonic()
    report = {"rank": rank, "error": None, "message": None}
    try:
        evaluate_model(NoLogitsWhenLong(), held_out, collate=collate, batch_size=1, num_classes=2)
    except Exception as exc:  # noqa: BLE001 - the test wants to see which exception each rank got
        report.update(error=type(exc).__name__, message=str(exc))
    report["seconds"] = time.monotonic() - start
    (cli.out / f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")
    if rank == 0:
        deadline = time.monotonic() + cli.wait
        while not (cli.out / "rank1.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    # An orderly exit: a rank leaving while its peer still holds the connection can abort the peer.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
