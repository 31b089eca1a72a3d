"""Kill a training run with SIGKILL around its saves, resume it until it finishes, then check what is on disk.

    python scripts/kill_resume.py --kills 20                # 20 kills, prints every attempt and the checks
    python scripts/kill_resume.py --kills 20 --out /tmp/kr  # keep the folders for inspection

The run: the tiny Llama classifier of ``examples/synthetic_reviews.py`` on ``make_reviews`` data (seeded,
CPU, one thread), ``BestCheckpointCallback(objective=recall_negative, tie-breaker log_loss)``, a save every
``--save-steps`` steps, ``save_total_limit=3`` (so rotation deletes folders the leaderboard must keep).

Each attempt is a child process (forked from a server that imported torch and transformers once, so an
attempt costs about a second, not ten). The attempt resumes from the newest checkpoint folder whose
``trainer_state.json`` parses (none: from scratch) and is killed with SIGKILL at one of these points:

* ``evaluation``: during the held-out evaluation of the N-th save of the attempt (at its second forward
  pass, from a forward hook that the wrapped ``trainer_ext.evaluation.evaluate_model`` installs);
* ``write``: in the middle of the N-th file trainer_ext writes (``trainer_ext.records._replace_atomically``
  is wrapped: half of the bytes reach the temporary file, then the process dies before ``os.replace``).
  Per save the writes are, in order: checkpoint_metrics.json, checkpoint_scores.npz,
  checkpoint_leaderboard.json, checkpoint_leaderboard.md, trainer_state.json;
* ``save``: between the Trainer's save and ours (at the N-th ``BestCheckpointCallback.on_save``: the
  checkpoint folder and its trainer_state.json exist, our record does not);
* ``random``: by the parent, at a random time after the attempt started training.

After the planned kills one more attempt runs to the end (more if a random kill lands late). A reference
run with the same seed runs uninterrupted. The checks (``check_*``, reused by
``tests/reliability/test_kill_resume.py``): every record and leaderboard file parses and has every schema
field; temporary files left by a kill mid-write are ignored by every reader; the leaderboard lists every
checkpoint the reference run evaluated, with bit-identical metrics; the best is the reference's best and
its folder exists.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "examples") not in sys.path:
    sys.path.insert(0, str(REPO / "examples"))

KILL_POINTS = ("evaluation", "write", "save", "random")
WRITES_PER_SAVE = ("checkpoint_metrics.json", "checkpoint_scores.npz", "checkpoint_leaderboard.json",
                   "checkpoint_leaderboard.md", "trainer_state.json")
TEMP_FILE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")  # records._replace_atomically's mkstemp names
ATTEMPT_TIMEOUT = 180.0  # seconds; an attempt that neither finishes nor dies by then is a hang


@dataclass(frozen=True)
class RunConfig:
    """The training run; the same for the reference and for the run that is killed."""

    save_steps: int = 3
    saves: int = 40
    save_total_limit: int | None = 3
    train_size: int = 192
    eval_size: int = 101
    batch_size: int = 8
    learning_rate: float = 3e-3
    seed: int = 0
    eval_steps: int | None = None  # issue 13's run control: the callback's own schedule (None: at every save)
    save: str = "all"  # "improved" / "top_k": the callback asks for the saves (the Trainer's save_strategy="no")

    @property
    def max_steps(self) -> int:
        return self.save_steps * self.saves

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.train_size // self.batch_size)

    @property
    def checkpoints(self) -> list[str]:
        return [f"checkpoint-{self.save_steps * i}" for i in range(1, self.saves + 1)]


@dataclass(frozen=True)
class Kill:
    point: str  # one of KILL_POINTS
    nth: int = 1  # evaluation / write / save: the N-th call in the attempt (1-based)
    delay: float = 0.0  # random: seconds after the attempt began training

    def __post_init__(self) -> None:
        if self.point not in KILL_POINTS:
            raise ValueError(f"Kill.point must be one of {KILL_POINTS}; got {self.point!r}.")

    def __str__(self) -> str:
        return f"random@{self.delay:.2f}s" if self.point == "random" else f"{self.point}#{self.nth}"


@dataclass
class Attempt:
    kill: Kill | None
    resumed_from: str | None
    exitcode: int | None
    seconds: float
    hit: str = ""  # what the child was doing when it died (from its kill log), or "finished"

    @property
    def killed(self) -> bool:
        return self.exitcode == -signal.SIGKILL


@dataclass
class KilledRun:
    out: Path
    attempts: list[Attempt] = field(default_factory=list)
    skipped_folders: list[str] = field(default_factory=list)  # newer folders without a usable trainer_state.json

    @property
    def kills(self) -> list[Attempt]:
        return [a for a in self.attempts if a.killed]


OBJECTIVE_KWARGS = {"metric": "recall_negative", "tie_breakers": ["log_loss"]}


def objective():
    from trainer_ext import Objective

    return Objective(**OBJECTIVE_KWARGS)


# ---- the child: one attempt of the training run ----------------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _note(kill_log: Path, text: str) -> None:
    """Say what the attempt is doing when it dies (written and synced before the kill)."""
    with open(kill_log, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _install_kill(kill: Kill, kill_log: Path) -> None:
    import trainer_ext.callback as callback_module
    import trainer_ext.evaluation as evaluation_module
    import trainer_ext.records as records

    calls = itertools.count(1)
    if kill.point == "evaluation":
        original_evaluate = evaluation_module.evaluate_model

        def evaluate_then_die(model, held_out, **kwargs):
            if next(calls) != kill.nth:
                return original_evaluate(model, held_out, **kwargs)
            forwards = itertools.count(1)

            def second_forward_dies(module, inputs, output):
                if next(forwards) == 2:
                    _note(kill_log, "evaluation: second forward pass of the held-out evaluation")
                    _die()

            model.register_forward_hook(second_forward_dies)
            original_evaluate(model, held_out, **kwargs)
            _note(kill_log, "evaluation: end of a one-batch held-out evaluation")
            _die()

        evaluation_module.evaluate_model = evaluate_then_die
    elif kill.point == "write":
        original_replace = records._replace_atomically

        def replace_then_die(path, write):
            if next(calls) != kill.nth:
                return original_replace(path, write)

            def half_then_die(handle):
                buffer = io.BytesIO()
                write(buffer)
                data = buffer.getvalue()
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
                _note(kill_log, f"write: {Path(path).parent.name}/{Path(path).name} half written")
                _die()

            return original_replace(path, half_then_die)

        records._replace_atomically = replace_then_die
    elif kill.point == "save":
        cls = callback_module.BestCheckpointCallback
        original_on_save = cls.on_save

        def on_save_dies(self, args, state, control, **kwargs):
            if next(calls) == kill.nth:
                _note(kill_log, f"save: checkpoint-{state.global_step} saved by the Trainer, not yet by trainer_ext")
                _die()
            return original_on_save(self, args, state, control, **kwargs)

        cls.on_save = on_save_dies


def build_data(config: RunConfig) -> dict[str, Any]:
    """Tokenizer, training set and held-out set: plain lists of features (no datasets import needed)."""
    from synthetic_reviews import make_reviews, train_tokenizer

    train_rows = make_reviews(config.train_size, seed=11)
    eval_rows = make_reviews(config.eval_size, seed=3)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])

    def features(rows):
        encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=128)
        return [
            {"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i], "labels": r["label"]}
            for i, r in enumerate(rows)
        ]

    return {"tokenizer": tokenizer, "train": features(train_rows), "holdout": features(eval_rows)}


def train(out: Path, config: RunConfig, *, resume: str | None = None, started: Path | None = None):
    """One attempt of the run (also the reference run, with no kill installed). Returns the trainer."""
    import torch
    from synthetic_reviews import tiny_llama_classifier
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from trainer_ext import BestCheckpointCallback

    torch.set_num_threads(1)
    data = build_data(config)
    collator = DataCollatorWithPadding(data["tokenizer"])

    class Started(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if started is not None:
                _note(started, "started")

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        save_strategy="steps" if config.save == "all" else "no",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=config.seed),
        args=args,
        train_dataset=data["train"],
        data_collator=collator,
        callbacks=[
            BestCheckpointCallback(
                data["holdout"], objective(), data_collator=collator, eval_steps=config.eval_steps, save=config.save
            ),
            Started(),
        ],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def child_main(out: str, config: RunConfig, kill: Kill | None, resume: str | None, log: str, kill_log: str) -> None:
    """Entry point of an attempt (in a forked child): output to ``log``, then train until done or killed."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    import trainer_ext

    print(f"attempt: kill {kill}, resume from {resume}, trainer_ext from {Path(trainer_ext.__file__).parent}", flush=True)
    if kill is not None and kill.point != "random":
        _install_kill(kill, Path(kill_log))
    train(Path(out), config, resume=resume, started=Path(kill_log))
    _note(Path(kill_log), "finished")


# ---- the parent: attempts until the run is done --------------------------------------------------


def forkserver_context():
    """Children forked from a server that imported torch, transformers and trainer_ext once."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    context = multiprocessing.get_context("forkserver")
    # Third-party modules only: the server does not get this process's sys.path (Python 3.11 ignores it),
    # so trainer_ext and this script are imported in each child, which does, and is then the same copy.
    context.set_forkserver_preload(["torch", "transformers", "transformers.trainer", "sklearn.metrics", "scipy.stats"])
    return context


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[1])


def newest_resumable_checkpoint(out: Path) -> tuple[Path | None, list[str]]:
    """The newest ``checkpoint-*`` folder whose trainer_state.json parses, and the newer ones skipped.

    The Trainer writes trainer_state.json last (after weights, optimizer and RNG state), so a folder
    that has it is complete; one without it was being saved when the process died. transformers writes
    it without an atomic swap, so a kill in that write leaves a file that does not parse: skipped too.
    """
    skipped = []
    folders = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()]
    for folder in sorted(folders, key=checkpoint_step, reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            return folder, skipped
        except (FileNotFoundError, json.JSONDecodeError):
            skipped.append(folder.name)
    return None, skipped


def _run_attempt(context, out: Path, config: RunConfig, kill: Kill | None, logs: Path, index: int,
                 run: KilledRun) -> Attempt:
    resume, skipped = newest_resumable_checkpoint(out)
    run.skipped_folders += skipped
    kill_log = logs / f"attempt{index:02d}.kill"
    process = context.Process(
        target=child_main,
        args=(str(out), config, kill, str(resume) if resume else None, str(logs / f"attempt{index:02d}.log"),
              str(kill_log)),
    )
    start = time.monotonic()
    process.start()
    if kill is not None and kill.point == "random":
        if _wait_for_start(kill_log, process, start + ATTEMPT_TIMEOUT):
            process.join(kill.delay)
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                _note(kill_log, f"random: killed {kill.delay:.2f} s after the start of training")
    process.join(max(1.0, ATTEMPT_TIMEOUT - (time.monotonic() - start)))
    if process.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.join()
        raise RuntimeError(f"attempt {index} ({kill}) hung for {ATTEMPT_TIMEOUT:.0f} s; log: {logs / f'attempt{index:02d}.log'}")
    hit = kill_log.read_text(encoding="utf-8").strip().splitlines()[-1] if kill_log.exists() else ""
    return Attempt(kill, resume.name if resume else None, process.exitcode, time.monotonic() - start, hit)


def _wait_for_start(kill_log: Path, process, deadline: float) -> bool:
    """Until the child's on_train_begin noted "started" (True), or it ended / the deadline passed (False)."""
    while time.monotonic() < deadline and process.is_alive():
        if kill_log.exists() and "started" in kill_log.read_text(encoding="utf-8"):
            return True
        time.sleep(0.01)
    return False


def run_with_kills(out: Path, config: RunConfig, kills: list[Kill], *, logs: Path, context=None,
                   max_final_attempts: int = 3) -> KilledRun:
    """Run ``config`` in ``out``, one attempt per kill, then attempts without a kill until it finishes."""
    context = context or forkserver_context()
    logs.mkdir(parents=True, exist_ok=True)
    run = KilledRun(out)
    plan = list(kills) + [None] * max_final_attempts
    for index, kill in enumerate(plan):
        attempt = _run_attempt(context, out, config, kill, logs, index, run)
        run.attempts.append(attempt)
        if attempt.exitcode not in (0, -signal.SIGKILL):
            log = (logs / f"attempt{index:02d}.log").read_text(encoding="utf-8", errors="replace")
            raise RuntimeError(f"attempt {index} ({kill}) failed with exit code {attempt.exitcode}:\n{log[-6000:]}")
        if attempt.exitcode == 0:  # finished (before its kill point, if it had one: the caller sees it)
            return run
    raise RuntimeError(f"the run did not finish within {max_final_attempts} attempts after the kills")


def run_reference(out: Path, config: RunConfig, *, logs: Path, context=None) -> None:
    context = context or forkserver_context()
    logs.mkdir(parents=True, exist_ok=True)
    run = KilledRun(out)
    attempt = _run_attempt(context, out, config, None, logs, 0, run)
    if attempt.exitcode != 0:
        raise RuntimeError(f"the reference run failed: {(logs / 'attempt00.log').read_text(errors='replace')[-6000:]}")


def plan_kills(count: int, config: RunConfig, seed: int) -> list[Kill]:
    """``count`` kills cycling through the points; N-th calls chosen so every file kind gets hit."""
    rng = random.Random(seed)
    kills = []
    for i in range(count):
        point = KILL_POINTS[i % len(KILL_POINTS)]
        if point == "write":  # any file of the first two saves of the attempt
            nth = rng.randint(1, 2 * len(WRITES_PER_SAVE))
        elif point == "random":  # an attempt trains a save's worth of steps in about 0.1 s here
            kills.append(Kill("random", delay=rng.uniform(0.05, 0.8)))
            continue
        else:
            nth = rng.randint(1, 2)
        kills.append(Kill(point, nth))
    return kills


# ---- the checks ------------------------------------------------------------------------------------

LEADERBOARD_FIELDS = {"schema_version", "objective", "best_checkpoint", "reason", "comparison", "labels", "entries"}
ENTRY_FIELDS = {"rank", "checkpoint", "global_step", "epoch", "objective_value", "feasible", "violations", "exists",
                "protected", "interval", "decision_threshold", "metrics"}


def _board(out: Path) -> dict[str, Any]:
    from trainer_ext.records import LEADERBOARD_FILENAME, read_json

    return read_json(out / LEADERBOARD_FILENAME)


def check_files_parse(out: Path, config: RunConfig) -> dict[str, Any]:
    """Every record, scores file and leaderboard parses and is complete. Returns the records by folder."""
    import numpy as np

    from trainer_ext.records import RECORD_FILENAME, SCORES_FILENAME, CheckpointRecord, load_record, load_scores

    record_fields = {f.name for f in dataclasses.fields(CheckpointRecord)}
    records = {}
    for folder in sorted(out.glob("checkpoint-*"), key=checkpoint_step):
        raw = json.loads((folder / RECORD_FILENAME).read_text(encoding="utf-8"))  # raises if missing / partial
        missing = record_fields - set(raw)
        assert not missing, f"{folder.name}/{RECORD_FILENAME} lacks {sorted(missing)}"
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))  # a complete Trainer checkpoint
        record = load_record(folder)
        assert record.checkpoint == folder.name and record.global_step == checkpoint_step(folder), folder
        assert record.num_samples == config.eval_size and np.sum(record.confusion_matrix) == config.eval_size, folder
        scores = load_scores(folder / SCORES_FILENAME)
        assert scores["labels"].shape == scores["predictions"].shape == (config.eval_size,), folder
        assert scores["probabilities"].shape == (config.eval_size, 2), folder
        records[folder.name] = record
    board = _board(out)
    assert LEADERBOARD_FIELDS <= set(board), f"leaderboard lacks {sorted(LEADERBOARD_FIELDS - set(board))}"
    for entry in board["entries"]:
        assert ENTRY_FIELDS <= set(entry), f"entry {entry.get('checkpoint')} lacks {sorted(ENTRY_FIELDS - set(entry))}"
    markdown = (out / "checkpoint_leaderboard.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Checkpoint leaderboard") and f"Best: **{board['best_checkpoint']}**" in markdown
    return records


def temp_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(".*.tmp"))


def check_temp_files_harmless(out: Path) -> list[str]:
    """Temporary files a kill mid-write leaves behind are named ``.<target>.<random>.tmp``: hidden, never
    matched by ``checkpoint-*`` or by our file names, so neither the Trainer (rotation, resume), nor the
    callback on resume, nor ``trainer-ext rank`` reads them. Checked here: each one's target exists and
    parses (the kill left the previous or the next complete version), and ``trainer-ext rank`` re-ranks the
    folder to the leaderboard's own ranking with them present. Returns their paths, relative to ``out``."""
    from trainer_ext.cli import main as cli_main

    found = temp_files(out)
    for path in found:
        match = TEMP_FILE.match(path.name)
        assert match, f"{path}: a temporary file not named like records._replace_atomically names them"
        target = path.parent / match["target"]
        assert not re.match(r"^checkpoint-\d+$", path.name) and path.name != target.name
        assert target.is_file(), f"{path} was left while its target {target.name} does not exist"
        if target.suffix == ".json":
            json.loads(target.read_text(encoding="utf-8"))
    board = _board(out)
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        status = cli_main(["rank", str(out), "--objective", OBJECTIVE_KWARGS["metric"], "--tie-breaker",
                           OBJECTIVE_KWARGS["tie_breakers"][0], "--format", "json"])
    assert status == 0, listing.getvalue()
    ranked = json.loads(listing.getvalue())
    assert ranked["best_checkpoint"] == board["best_checkpoint"]
    assert [e["checkpoint"] for e in ranked["entries"]] == [e["checkpoint"] for e in board["entries"]]
    return [str(p.relative_to(out)) for p in found]


def past_the_end(run: KilledRun, config: RunConfig) -> list[str]:
    """The checkpoint transformers adds when an attempt resumes from the run's last checkpoint.

    transformers 5.23 trains one step past ``max_steps`` when resumed from a checkpoint at ``max_steps``
    that is not at the end of an epoch: ``Trainer._run_epoch`` runs the rest of the resumed epoch's first
    step before ``DefaultFlowCallback`` compares ``global_step`` with ``max_steps``, then saves
    ``checkpoint-<max_steps + 1>``. At an epoch's end no epoch is left to run. (Seen after a kill between
    the last save and the end of the process, then a resume.)"""
    resumed_from_last = any(a.resumed_from == config.checkpoints[-1] for a in run.attempts)
    if resumed_from_last and config.max_steps % config.steps_per_epoch:
        return [f"checkpoint-{config.max_steps + 1}"]
    return []


def check_leaderboard_complete(out: Path, config: RunConfig, records: dict[str, Any], *, extra: list[str] = ()) -> None:
    """Every save of the schedule (plus ``extra``, see ``past_the_end``) is on the leaderboard; folders on
    disk and ``exists`` agree; the records on disk and the entries agree; the best's folder exists."""
    board = _board(out)
    entries = {e["checkpoint"]: e for e in board["entries"]}
    assert sorted(entries, key=lambda c: int(c.rsplit("-", 1)[1])) == config.checkpoints + list(extra), (
        f"leaderboard entries {sorted(entries)} != the saves of the run {config.checkpoints + list(extra)}"
    )
    folders = {p.name for p in out.glob("checkpoint-*")}
    assert {c for c, e in entries.items() if e["exists"]} == folders
    for name, record in records.items():
        assert _same_metrics(entries[name]["metrics"], record.metrics), f"{name}: leaderboard and record differ"
    assert board["best_checkpoint"] in folders, f"the best {board['best_checkpoint']} was deleted"


def _same_metrics(written: dict[str, Any], metrics: dict[str, float]) -> bool:
    return set(written) == set(metrics) and all(
        (v is None and math.isnan(metrics[k])) or v == metrics[k] for k, v in written.items()
    )


def check_same_as_reference(out: Path, reference: Path, *, extra: list[str] = ()) -> dict[str, Any]:
    """Same entries (plus ``extra``), bit-identical metrics, same best as the uninterrupted run: among the
    reference's checkpoints when there is an extra one. Returns the differences found in a field that
    may legitimately differ (the best-vs-runner-up comparison)."""
    from trainer_ext.selection import Candidate, select_best

    board, expected = _board(out), _board(reference)
    got = {e["checkpoint"]: e for e in board["entries"]}
    want = {e["checkpoint"]: e for e in expected["entries"]}
    assert set(got) == set(want) | set(extra), f"entries differ: {sorted(set(got) ^ (set(want) | set(extra)))}"
    different = {c: _metric_differences(got[c]["metrics"], want[c]["metrics"]) for c in want}
    different = {c: d for c, d in different.items() if d}
    assert not different, f"metrics differ from the uninterrupted run (checkpoint: key: resumed vs reference): {different}"
    same_checkpoints = [Candidate(c, got[c]["global_step"], got[c]["metrics"]) for c in want]
    best = select_best(same_checkpoints, objective()).best_checkpoint if extra else board["best_checkpoint"]
    assert best == expected["best_checkpoint"], f"best {best} != uninterrupted run's {expected['best_checkpoint']}"
    if not extra:
        assert [e["checkpoint"] for e in board["entries"]] == [e["checkpoint"] for e in expected["entries"]]
    last = max(out.glob("checkpoint-*"), key=checkpoint_step)
    state = json.loads((last / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["best_model_checkpoint"] == str(out / board["best_checkpoint"]), state["best_model_checkpoint"]
    if extra or board["comparison"] == expected["comparison"]:
        return {}
    return {"comparison": (board["comparison"], expected["comparison"])}


def _metric_differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple]:
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


def check_all(run: KilledRun, reference: Path, config: RunConfig) -> dict[str, Any]:
    extra = past_the_end(run, config)
    records = check_files_parse(run.out, config)
    temps = check_temp_files_harmless(run.out)
    check_leaderboard_complete(run.out, config, records, extra=extra)
    soft = check_same_as_reference(run.out, reference, extra=extra)
    return {"temp_files": temps, "soft_differences": soft, "best": _board(run.out)["best_checkpoint"], "extra": extra}


# ---- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--saves", type=int, default=RunConfig.saves)
    parser.add_argument("--save-steps", type=int, default=RunConfig.save_steps)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill plan (the run itself uses seed 0)")
    parser.add_argument("--out", type=Path, default=None, help="keep the folders here (default: a temp folder)")
    cli = parser.parse_args(argv)

    config = RunConfig(save_steps=cli.save_steps, saves=cli.saves)
    base = cli.out or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    if cli.out and base.exists():
        shutil.rmtree(base)
    context = forkserver_context()
    t0 = time.monotonic()
    run_reference(base / "reference", config, logs=base / "logs-reference", context=context)
    reference_seconds = time.monotonic() - t0
    kills = plan_kills(cli.kills, config, cli.seed)
    t0 = time.monotonic()
    run = run_with_kills(base / "killed", config, kills, logs=base / "logs-killed", context=context)
    killed_seconds = time.monotonic() - t0

    print(f"run: {config.saves} saves every {config.save_steps} steps ({config.max_steps} steps), "
          f"save_total_limit={config.save_total_limit}; reference {reference_seconds:.1f} s, killed run "
          f"{killed_seconds:.1f} s in {len(run.attempts)} attempts")
    print(f"{'#':>3} {'kill':<14} {'resumed from':<15} {'exit':>5} {'s':>5}  what it was doing")
    for i, a in enumerate(run.attempts):
        print(f"{i:>3} {str(a.kill or '-'):<14} {a.resumed_from or 'scratch':<15} {a.exitcode!s:>5} "
              f"{a.seconds:5.1f}  {a.hit}")
    print(f"kills that landed: {len(run.kills)} of {len(kills)} planned; folders skipped on resume "
          f"(no usable trainer_state.json): {run.skipped_folders or 'none'}")
    try:
        facts = check_all(run, base / "reference", config)
    except AssertionError as exc:
        print(f"CHECK FAILED: {exc}")
        print(f"folders kept in {base}")
        return 1
    print(f"checks passed: best {facts['best']} (same as the uninterrupted run), every file parses, "
          f"{len(config.checkpoints)} entries with bit-identical metrics")
    print(f"temporary files left by kills mid-write (ignored by readers): {facts['temp_files'] or 'none'}")
    if facts["extra"]:
        print(f"resumed from the last checkpoint: transformers trained one step more and saved {facts['extra']}")
    if facts["soft_differences"]:
        print(f"differences in the best-vs-runner-up comparison: {facts['soft_differences']}")
    if cli.out is None:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"folders kept in {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
