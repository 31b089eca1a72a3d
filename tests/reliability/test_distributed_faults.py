"""Faults under a real 2-process launch (torchrun, CPU, gloo): every rank stops with a clear error, in bounded
time, and none waits for a peer that will never come.

One launch runs four faulty training runs in turn (``worker_faults.py``), which costs one start-up of two
processes instead of four:

* held-out sets of different size, or same size and different content, on the two ranks: each rank raises
  ``DistributedSetupError`` naming "the held-out set" in ``on_train_begin`` (size and fingerprint are
  compared with ``distributed.agree``), before the first step;
* a plain ``RuntimeError`` raised inside the model's forward on rank 1 only, during the held-out evaluation
  of the first save: rank 1 raises it, rank 0 raises "failed on another process", both within seconds;
* the same error from the start, i.e. in the callback's one-example probe forward pass in
  ``on_train_begin``: every rank must stop there too, not go on to the first training step;
* the main process fails to write the first record (a full disk, injected): it raises the OSError; rank 1
  must not stay in the barrier at the end of ``on_save``.

``tests/distributed/test_launch.py::test_a_failure_on_one_rank_is_raised_on_every_rank`` covers the same
guarantee for ``evaluate_model`` alone, with the failure on rank 0. The launch helpers (free port, timeout,
process-tree kill, logs shown on failure) are that module's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "distributed"))

from test_launch import WORLD, free_port, launch_env, run_concurrently  # noqa: E402

PHASES = ("held_out_size", "held_out_content", "probe_raises", "forward_raises", "write_fails_on_main")
BOUND = 15.0  # seconds: a peer's error follows the first within this (a hang would last until the timeout)


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    from synthetic_reviews import make_reviews, train_tokenizer

    import worker_train

    base = tmp_path_factory.mktemp("faults")
    tokenizer = base / "tokenizer"
    train_tokenizer([r["text"] for r in make_reviews(256, seed=worker_train.TRAIN_SEED)]).save_pretrained(tokenizer)
    out = base / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(HERE / "worker_faults.py"), "--out", str(out),
        "--tokenizer", str(tokenizer), "--phases", ",".join(PHASES), "--wait", "20",
    ]
    (finished,) = run_concurrently([command], launch_env(), base / "logs", timeout=180)
    return {"out": out, "finished": finished}


def _reports(launch, phase: str) -> list[dict]:
    reports = []
    for rank in range(WORLD):
        path = launch["out"] / f"{phase}-rank{rank}.json"
        assert path.is_file(), f"rank {rank} never reported on {phase!r}:\n{launch['finished'].describe()}"
        reports.append(json.loads(path.read_text(encoding="utf-8")))
    return reports


def _bounded(reports: list[dict]) -> None:
    spread = max(r["ended_at"] for r in reports) - min(r["ended_at"] for r in reports)
    assert spread < BOUND, f"the ranks stopped {spread:.1f} s apart: {reports}"


@pytest.mark.parametrize("phase", ["held_out_size", "held_out_content"])
def test_ranks_with_different_held_out_sets_stop_before_training(launch, phase):
    reports = _reports(launch, phase)
    for report in reports:
        assert report["error"] == "DistributedSetupError", report
        assert "the held-out set (size, fingerprint) differs between processes" in report["message"], report
        assert report["step"] == 0, f"training started despite the mismatch: {report}"
    if phase == "held_out_size":  # the message shows each rank's size
        assert "rank 0: {'None': (41, " in reports[0]["message"] and "rank 1: {'None': (40, " in reports[0]["message"]
    _bounded(reports)
    assert not list((launch["out"] / phase / "run").glob("checkpoint-*"))


def test_forward_error_on_one_rank_stops_every_rank(launch):
    rank0, rank1 = _reports(launch, "forward_raises")
    assert rank1["error"] == "RuntimeError" and "forward failed on rank 1" in rank1["message"], rank1
    assert rank0["error"] == "RuntimeError" and "failed on another process" in rank0["message"], rank0
    assert rank0["step"] == rank1["step"] == 2, "both stop at the first save's evaluation"
    # Bounded, and not by a dead peer: rank 1 does not exit (it waits for rank 0 in the worker's barrier).
    _bounded([rank0, rank1])


def test_probe_error_on_one_rank_stops_every_rank_before_training(launch):
    rank0, rank1 = _reports(launch, "probe_raises")
    assert rank1["error"] == "RuntimeError" and "forward failed on rank 1" in rank1["message"], rank1
    assert rank0["error"] == "RuntimeError" and "failed on another process" in rank0["message"], rank0
    assert rank0["step"] == rank1["step"] == 0
    _bounded([rank0, rank1])


def test_write_error_on_the_main_process_stops_every_rank(launch):
    rank0, rank1 = _reports(launch, "write_fails_on_main")
    assert rank0["error"] == "OSError" and "checkpoint_metrics.json" in rank0["message"], rank0
    assert rank1["error"] == "RuntimeError" and "failed on the main process" in rank1["message"], rank1
    _bounded([rank0, rank1])


def test_the_launch_ended_in_order(launch):
    """Every phase reported on both ranks and the processes left together (exit code 0)."""
    finished = launch["finished"]
    assert finished.returncode == 0, finished.describe()
    for phase in PHASES:
        _reports(launch, phase)
