"""``scripts/gpu_check.sh --dry-run``: the GPU check (issue 14) runs every part on the CPU and prints its table.

The dry run is honest: the parity part trains the tiny classifier with the callback and compares its fp32
records with ``trainer-ext evaluate`` of the same checkpoints (identical predictions, or FAIL); the FSDP2
config runs under ``accelerate launch`` (accelerate makes it MULTI_CPU on gloo, so sharding is a SKIP, but
the best checkpoint must be loaded and its weights must equal the checkpoint's); ZeRO-3 is a SKIP; the
benchmark's methods must agree, and its speed targets are SKIPs (judged on a GPU only). About 2 minutes on
2 busy cores. Without ``gpu_wheels/`` (made by ``scripts/fetch_gpu_wheels.sh``) the wheels part is a SKIP.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (PASS|FAIL|SKIP|INFO) \| (\w+) \| (.+?) \| (.*) \|$")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHON"] = sys.executable
    return env


def test_dry_run_prints_every_part_and_no_failure(tmp_path):
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=840,
    )
    output = done.stdout + done.stderr
    table = (tmp_path / "out" / "gpu_check_table.md").read_text(encoding="utf-8")
    rows = [ROW.match(line).groups() for line in table.splitlines() if ROW.match(line)]
    assert done.returncode == 0, output[-6000:]
    assert {part for _, part, _, _ in rows} == {"wheels", "parity", "zero3", "fsdp2", "speed"}, table
    assert not [r for r in rows if r[0] == "FAIL"], table
    status = {(part, name): s for s, part, name, _ in rows}
    # The checks that must really run on the CPU are PASS lines, not SKIPs.
    assert status[("parity", "cpu fp32 records == cpu fp32")] == "PASS"
    assert status[("parity", "cpu bf16 run evaluated under bf16 autocast")] == "PASS"
    assert status[("parity", "cpu bf16 autocast vs cpu fp32")] == "INFO"
    launched = [name for s, part, name, _ in rows if part == "fsdp2" and s == "PASS"]
    assert any(name.endswith("callback evaluated during training") for name in launched), table
    assert any(re.search(r"loaded weights == checkpoint-\d+$", name) for name in launched), table
    assert status[("fsdp2", "fsdp2: sharding on cpu")] == "SKIP"
    assert status[("zero3", "zero3: not launched on cpu")] == "SKIP"
    assert status[("speed", "every method predicts as the callback")] == "PASS"
    for target in ("callback / Trainer.evaluate", "callback / length-sorted floor", "naive / callback"):
        assert status[("speed", target)] == "SKIP", table  # never a PASS for a target measured on a CPU
    assert re.search(r"^RESULT: PASS \(\d+ PASS, 0 FAIL, \d+ SKIP, \d+ INFO\)$", table, re.M), table
    assert re.search(r"^Elapsed: wheels \d+ s .*; total \d+ s\.$", table, re.M), table


def test_unknown_part_is_a_usage_error():
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--parts", "parity,warp"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--parts: unknown ['warp']" in done.stderr


def test_without_cuda_the_gpu_run_refuses():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real check would run")
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--parts", "parity"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr
