"""Everything trainer_ext does across processes, in one place.

Each function is a collective: EVERY rank must call it, in the same order, or the launch hangs. Each
is the identity (no communication) when one process runs. Only side effects (writing files,
printing) are conditional, and only on the global main process (``is_main``), never on "local main",
which on several machines is one process per machine.

Two-process example (both ranks run the same lines)::

    rows = np.array([[index, prediction, p0, p1], ...])   # this rank's shard, any number of rows
    everything = gather_rows(rows)                         # every rank: all rows of all ranks
    if is_main():
        write_files(...)
    barrier()                                              # nobody moves on before the files exist
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import DistributedSetupError

__all__ = [
    "world_size",
    "rank",
    "is_main",
    "check_launch",
    "gather_rows",
    "broadcast_object",
    "all_gather_objects",
    "barrier",
    "any_rank",
    "agree",
    "raise_if_any",
    "join_launch",
    "leave_launch",
]


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if _initialized() else 1


def rank() -> int:
    return torch.distributed.get_rank() if _initialized() else 0


def is_main() -> bool:
    """The global main process (rank 0 of all machines)."""
    return rank() == 0


def check_launch(trainer_world_size: int) -> None:
    """Refuse a launch where every rank would evaluate everything.

    ``WORLD_SIZE`` > 1 in the environment means a launcher started several processes; if the Trainer
    (through accelerate) nevertheless sees one process, each process would train and evaluate alone.
    Seen with ``accelerate launch --cpu --num_processes 2`` (no mpirun) and with ``torchrun`` on CPU
    without ``use_cpu=True``.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and trainer_world_size == 1:
        raise DistributedSetupError(
            f"WORLD_SIZE={launched} processes were launched but the Trainer sees 1 process (args.world_size=1), "
            f"so every process would evaluate the whole held-out set on its own. On CPU, launch with "
            f"'ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes {launched} ...' "
            f"(not 'accelerate launch --cpu --num_processes {launched}', which starts independent processes), "
            f"or 'ACCELERATE_USE_CPU=true torchrun --nproc_per_node {launched} ...'; or pass use_cpu=True in "
            f"TrainingArguments."
        )
    if _initialized() and torch.distributed.get_world_size() != trainer_world_size:
        raise DistributedSetupError(
            f"torch.distributed has {torch.distributed.get_world_size()} processes but the Trainer sees "
            f"{trainer_world_size}; launch through accelerate or torchrun so that both agree."
        )


def _device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo only CPU tensors.
    if _initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Concatenate every rank's ``rows`` (float64, shape [n_rank, width]) on every rank, rank order.

    Ranks may hold different numbers of rows, including zero: counts are exchanged first, each rank
    pads to the largest count, and the padding is cut off again, so each row appears exactly once.
    """
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    if not _initialized() or world_size() == 1:
        return rows
    device = _device()
    count = torch.tensor([rows.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    torch.distributed.all_gather(counts, count)
    counts_list = [int(c.item()) for c in counts]
    longest = max(counts_list)
    padded = torch.zeros((longest, rows.shape[1]), dtype=torch.float64, device=device)
    if rows.shape[0]:
        padded[: rows.shape[0]] = torch.from_numpy(rows).to(device)
    # gloo has no all_gather_into_tensor: gather into a list of tensors.
    gathered = [torch.empty_like(padded) for _ in range(world_size())]
    torch.distributed.all_gather(gathered, padded)
    parts = [g[:n].cpu().numpy() for g, n in zip(gathered, counts_list)]
    return np.concatenate(parts, axis=0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled). Used for facts only the main process reads
    from disk, so that no rank can decide differently."""
    if not _initialized() or world_size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src, device=_device())
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank, in rank order."""
    if not _initialized() or world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one."""
    if not _initialized() or world_size() == 1:
        return bool(flag)
    value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_device())
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def raise_if_any(failure: BaseException | None, what: str, *, on: str = "another process") -> None:
    """COLLECTIVE: raise on every rank when any rank holds a ``failure``.

    The rank where it happened re-raises its own exception; every other rank raises a RuntimeError
    naming ``what`` and where it failed (``on``: "another process", or "the main process" for work only
    the main process does). Used in place of a barrier after work that may fail on one rank only (a forward
    pass, a write on the main process), so that no rank waits forever for one that left::

        failure = None
        try:
            work()
        except Exception as exc:
            failure = exc
        raise_if_any(failure, "writing the records of checkpoint-10")
    """
    if any_rank(failure is not None):
        if failure is not None:
            raise failure
        raise RuntimeError(f"trainer_ext: {what} failed on {on}; see that process's error.")


def barrier() -> None:
    if _initialized() and world_size() > 1:
        torch.distributed.barrier()


def agree(value: Any, what: str, describe: Sequence[str] | None = None) -> None:
    """Raise :class:`DistributedSetupError` on every rank when ranks hold different ``value`` s."""
    values = all_gather_objects(value)
    if any(v != values[0] for v in values):
        detail = ", ".join(f"rank {i}: {v}" for i, v in enumerate(describe or values))
        raise DistributedSetupError(f"{what} differs between processes ({detail}); every process must pass the same one.")


def join_launch() -> torch.device:
    """Outside a Trainer (``trainer-ext evaluate``): join the process group when a launcher started
    several processes (``accelerate launch``, ``torchrun``); return the device this process evaluates on."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        # accelerate launch passes the CPU choice in ACCELERATE_USE_CPU; PartialState reads it only
        # through its argument (AcceleratorState reads the variable), and without it sees one process.
        state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        check_launch(state.num_processes)
        return state.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def leave_launch() -> None:
    if _initialized():
        torch.distributed.destroy_process_group()
