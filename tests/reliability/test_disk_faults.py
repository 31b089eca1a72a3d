"""Disk and permissions: the output folder turns read-only, or the disk fills up, in the middle of a run.

Real file systems, not mocks, when the test may mount (as root here): the Trainer's output folder is a small
``tmpfs`` mounted for the test. "Read-only" is ``mount -o remount,ro`` (as root, ``chmod`` would not stop a
write); "full" is a file grown until the kernel answers ENOSPC. Without mount rights the same faults are
injected instead (``tempfile.mkstemp`` raising EROFS, ``os.fsync`` raising ENOSPC); the ``disk`` property
of each test in the JUnit report says which ran.

The fault strikes at the second save, after the Trainer has written checkpoint-4 and before our
``on_save`` writes its record (a callback placed before ours), or, in the last case, before the Trainer's
own save. Each test asserts the error says what failed and which file, that nothing half-written is left,
and that the records of checkpoint-2 and the leaderboard are byte for byte what they were before the fault.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from reliability_data import keyword_data

from trainer_ext.records import _replace_atomically, load_record, read_json, write_json_atomic

OURS = ("checkpoint_metrics.json", "checkpoint_scores.npz")
BOARD = ("checkpoint_leaderboard.json", "checkpoint_leaderboard.md")


class Disk:
    """A folder on a small tmpfs of its own (``mounted``), or a plain folder with injected faults."""

    def __init__(self, path: Path, mounted: bool, monkeypatch):
        self.path, self.mounted, self._monkeypatch = path, mounted, monkeypatch

    @property
    def kind(self) -> str:
        return "tmpfs" if self.mounted else "injected"

    def make_read_only(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True, capture_output=True)
            return
        import tempfile

        def refuse(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))

        self._monkeypatch.setattr(tempfile, "mkstemp", refuse)

    def fill(self) -> None:
        if self.mounted:
            chunk = b"\0" * (1 << 16)
            with contextlib.suppress(OSError), open(self.path / "filler.bin", "wb") as handle:
                while True:
                    handle.write(chunk)
                    handle.flush()
            return

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self._monkeypatch.setattr(os, "fsync", full)


@pytest.fixture
def disk(tmp_path, monkeypatch, record_property):
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True
    ).returncode == 0
    record_property("disk", "tmpfs" if mounted else "injected")
    try:
        yield Disk(path, mounted, monkeypatch)
    finally:
        if mounted and subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def data():
    return keyword_data()


def _trainer(data, out: Path, fault_callback):
    from synthetic_reviews import tiny_llama_classifier
    from transformers import Trainer, TrainingArguments

    from trainer_ext import BestCheckpointCallback

    args = TrainingArguments(
        output_dir=str(out), num_train_epochs=3, per_device_train_batch_size=16, learning_rate=1e-2,
        save_strategy="steps", save_steps=2, eval_strategy="no", report_to=[], use_cpu=True, seed=0,
        logging_strategy="no", disable_tqdm=True,
    )
    ours = BestCheckpointCallback(data["flipped"], "accuracy", data_collator=data["collator"])
    before, after = (fault_callback, None) if fault_callback.before_ours else (None, fault_callback)
    return Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0), args=args, train_dataset=data["train"],
        data_collator=data["collator"], callbacks=[c for c in (before, ours, after) if c is not None],
    )


def _our_files(out: Path) -> dict[str, bytes]:
    files = {name: (out / name).read_bytes() for name in BOARD}
    for folder in out.glob("checkpoint-*"):
        files.update({f"{folder.name}/{n}": (folder / n).read_bytes() for n in OURS if (folder / n).exists()})
    return files


def _fault_at(step: int, fault, *, hook: str, before_ours: bool):
    from transformers import TrainerCallback

    class Fault(TrainerCallback):
        snapshot: dict[str, bytes] = {}

        def _strike(self, args, state):
            if state.global_step == step:
                type(self).snapshot = _our_files(Path(args.output_dir))
                fault()

    Fault.before_ours = before_ours
    setattr(Fault, hook, lambda self, args, state, control, **kwargs: self._strike(args, state))
    return Fault()


def _assert_earlier_files_intact(out: Path, snapshot: dict[str, bytes]) -> None:
    assert "checkpoint-2/checkpoint_metrics.json" in snapshot, sorted(snapshot)
    assert _our_files(out) == snapshot, "a file written before the fault changed, or a new one appeared"
    assert load_record(out / "checkpoint-2").global_step == 2
    board = read_json(out / "checkpoint_leaderboard.json")
    assert [e["checkpoint"] for e in board["entries"]] == ["checkpoint-2"]
    assert not list(out.rglob(".*.tmp")), f"half-written files left: {list(out.rglob('.*.tmp'))}"


@pytest.mark.parametrize("fault", ["read_only", "full"])
def test_our_write_fails_with_a_clear_error_and_earlier_records_stay_intact(quick_runs, data, disk, fault):
    out = disk.path / "run"
    strike = _fault_at(4, disk.make_read_only if fault == "read_only" else disk.fill, hook="on_save", before_ours=True)
    trainer = _trainer(data, out, strike)
    with pytest.raises(OSError) as raised:
        trainer.train()
    expected = errno.EROFS if fault == "read_only" else errno.ENOSPC
    assert raised.value.errno == expected, f"{disk.kind}: {raised.value!r}"
    message = str(raised.value)
    assert os.strerror(expected) in message, message  # what failed
    assert "trainer_ext could not write checkpoint_metrics.json" in message, message
    assert raised.value.filename == str(out / "checkpoint-4" / "checkpoint_metrics.json"), message  # which file
    assert trainer.state.global_step == 4
    _assert_earlier_files_intact(out, type(strike).snapshot)


def test_a_full_disk_during_the_trainers_save_leaves_our_records_intact(quick_runs, data, disk):
    """The disk fills after our evaluation of step 4 and before the Trainer saves checkpoint-4: the
    Trainer's own save fails (its error, not ours); nothing of ours was written for checkpoint-4."""
    if not disk.mounted:
        pytest.skip("needs a real full disk: the Trainer's save does not fsync, so the injection would not reach it")
    out = disk.path / "run"
    strike = _fault_at(4, disk.fill, hook="on_step_end", before_ours=False)
    trainer = _trainer(data, out, strike)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever the Trainer raises on a full disk
        trainer.train()
    assert "No space left on device" in repr(raised.value) or getattr(raised.value, "errno", None) == errno.ENOSPC, (
        repr(raised.value)
    )
    assert not (out / "checkpoint-4" / "checkpoint_metrics.json").exists()
    _assert_earlier_files_intact(out, type(strike).snapshot)


def test_files_keep_a_readable_mode(quick_runs, data, tmp_path):
    """``mkstemp`` creates 0600 files: a record or leaderboard written through it would be unreadable to
    the rest of a team, and trainer_state.json, which the callback rewrites, would lose its mode."""
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.json"
        write_json_atomic(fresh, {"schema_version": 1})
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        fresh.chmod(0o640)
        write_json_atomic(fresh, {"schema_version": 1, "again": True})
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640, "replacing a file keeps its mode"

        out = tmp_path / "run"
        _trainer(data, out, _fault_at(-1, lambda: None, hook="on_save", before_ours=True)).train()
        folder = out / "checkpoint-2"
        trainer_written = stat.S_IMODE((folder / "config.json").stat().st_mode)
        for path in [folder / "trainer_state.json", folder / "checkpoint_metrics.json", out / BOARD[0], out / BOARD[1]]:
            assert stat.S_IMODE(path.stat().st_mode) == trainer_written == 0o644, path
        assert json.loads((folder / "trainer_state.json").read_text())["best_model_checkpoint"]
    finally:
        os.umask(umask)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), ValueError("not an OSError")])
def test_a_failed_write_leaves_the_previous_file_and_no_temporary_file(tmp_path, error):
    """Without a mount: the writer fails half-way. An OSError comes back naming the file (same errno); any
    other exception comes back unchanged; either way the temporary file is gone and the old file intact."""
    target = tmp_path / "checkpoint_leaderboard.json"
    write_json_atomic(target, {"schema_version": 1, "entries": []})
    before = target.read_bytes()

    def half_then_fail(handle):
        handle.write(b'{"schema_version": 1, "entr')
        raise error

    with pytest.raises(type(error)) as raised:
        _replace_atomically(target, half_then_fail)
    if isinstance(error, OSError):
        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
        assert "trainer_ext could not write checkpoint_leaderboard.json" in str(raised.value)
    else:
        assert raised.value is error
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [target.name]

