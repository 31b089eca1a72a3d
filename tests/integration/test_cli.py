"""The ``trainer-ext`` command (rank, evaluate, report) on real output folders, and every error it reports.

The module fixture trains the tiny Llama classifier twice on ``keyword_reviews`` with the same seed:
once with ``BestCheckpointCallback`` (objective accuracy, a raw-text held-out set) and once with a plain
Trainer (no records). Training is deterministic on CPU, so both runs save the same weights (asserted),
and what ``trainer-ext evaluate`` writes for the plain run must be exactly what the callback wrote.
Tests that change a folder work on a copy. The command runs in-process through ``trainer_ext.cli.main``;
one test runs the installed ``trainer-ext`` console script and one ``python -m trainer_ext`` (in the
two-process comparison, as its one-process reference).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from synthetic_reviews import keyword_reviews, tiny_llama_classifier, tokenize_reviews, train_tokenizer
from transformers import Trainer, TrainingArguments

from trainer_ext import BestCheckpointCallback, Objective
from trainer_ext.cli import main
from trainer_ext.metrics import class_slugs, count_metrics
from trainer_ext.records import CheckpointRecord, load_record, read_json
from trainer_ext.selection import Candidate, select_best

REPO = Path(__file__).resolve().parents[2]
TRAIN_SIZE = 80  # 5 steps per epoch at batch 16; 3 epochs -> checkpoint-5, -10, -15
EVAL_SIZE = 61
LAUNCH_TIMEOUT = 240  # seconds for a subprocess evaluation (about 15 s on 2 idle cores)
LABELS = ["NEGATIVE", "POSITIVE"]
_LAUNCHER_VARIABLES = (
    "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU", "ACCELERATE_CONFIG_FILE",
)


@dataclass
class Runs:
    callback: Path
    plain: Path
    csv: Path
    jsonl: Path
    tokenizer: object
    train: Dataset
    holdout: Dataset  # tokenized, for a Trainer's eval_dataset

    @property
    def checkpoints(self) -> list[str]:
        return sorted((p.name for p in self.callback.glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))


def _args(out: Path, **overrides) -> TrainingArguments:
    base = dict(
        output_dir=str(out), num_train_epochs=3, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        learning_rate=3e-3, save_strategy="epoch", eval_strategy="no", report_to=[], use_cpu=True, seed=0,
        logging_steps=100, disable_tqdm=True,
    )
    base.update(overrides)
    return TrainingArguments(**base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    base = tmp_path_factory.mktemp("cli")
    train_rows = keyword_reviews(TRAIN_SIZE, seed=1)
    eval_rows = keyword_reviews(EVAL_SIZE, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    train = tokenize_reviews(train_rows, tokenizer)
    raw_holdout = Dataset.from_dict({"text": [r["text"] for r in eval_rows], "labels": [r["label"] for r in eval_rows]})

    # The same held-out set as files: class ids on even rows, class names on odd rows.
    csv_path, jsonl_path = base / "holdout.csv", base / "holdout.jsonl"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        for i, row in enumerate(eval_rows):
            writer.writerow({"text": row["text"], "label": LABELS[row["label"]] if i % 2 else row["label"]})
    with open(jsonl_path, "w", encoding="utf-8") as handle:
        for row in eval_rows:
            handle.write(json.dumps({"review": row["text"], "gold": row["label"]}) + "\n")

    for name, callbacks in (
        ("callback", [BestCheckpointCallback(eval_dataset=raw_holdout, objective="accuracy")]),
        ("plain", []),
    ):
        Trainer(
            model=tiny_llama_classifier(tokenizer, seed=0), args=_args(base / name), train_dataset=train,
            processing_class=tokenizer, callbacks=callbacks,
        ).train()
    runs = Runs(base / "callback", base / "plain", csv_path, jsonl_path, tokenizer, train,
                tokenize_reviews(eval_rows, tokenizer))
    assert runs.checkpoints == ["checkpoint-5", "checkpoint-10", "checkpoint-15"]
    for checkpoint in runs.checkpoints:
        a = load_file(str(runs.callback / checkpoint / "model.safetensors"))
        b = load_file(str(runs.plain / checkpoint / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), f"{checkpoint}: the two runs must save the same weights"
    assert not list(runs.plain.glob("checkpoint-*/checkpoint_metrics.json"))
    return runs


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _board(folder: Path) -> dict:
    return json.loads((folder / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))


def _run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _without_timing(record: dict) -> dict:
    return {**record, "evaluation": {k: v for k, v in record["evaluation"].items() if k not in ("seconds", "processes")}}


def _same_weights(model: torch.nn.Module, checkpoint: Path) -> bool:
    saved = load_file(str(checkpoint / "model.safetensors"))
    state = model.state_dict()
    return all(torch.equal(state[k].cpu(), v) for k, v in saved.items())


# ---- evaluate ---------------------------------------------------------------------------------------


def test_evaluate_a_run_trained_without_the_callback_writes_the_callbacks_records(runs, tmp_path, capsys):
    plain = _copy(runs.plain, tmp_path / "plain")
    status, out, err = _run(capsys, "evaluate", plain, "--data", runs.csv, "--objective", "accuracy", "--batch-size", 16)
    assert status == 0, err
    for checkpoint in runs.checkpoints:
        ours = json.loads((plain / checkpoint / "checkpoint_metrics.json").read_text(encoding="utf-8"))
        theirs = json.loads((runs.callback / checkpoint / "checkpoint_metrics.json").read_text(encoding="utf-8"))
        assert _without_timing(ours) == _without_timing(theirs), checkpoint
        with np.load(plain / checkpoint / "checkpoint_scores.npz") as a, np.load(runs.callback / checkpoint / "checkpoint_scores.npz") as b:
            assert a.files == b.files
            for key in a.files:
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), (checkpoint, key)
    assert _board(plain) == _board(runs.callback)
    assert (plain / "checkpoint_leaderboard.md").read_text() == (runs.callback / "checkpoint_leaderboard.md").read_text()
    # progress on stderr: checkpoints done / total and examples per second; the ranking on stdout
    assert "[1/3] checkpoint-5: 61 examples" in err and "[3/3] checkpoint-15" in err and "examples/s" in err
    assert f"Best: {_board(plain)['best_checkpoint']}" in out


def test_evaluate_reads_jsonl_with_other_columns_and_a_tokenizer_folder(runs, tmp_path, capsys):
    plain = _copy(runs.plain, tmp_path / "plain")
    for tokenizer_file in plain.glob("checkpoint-*/tokenizer*"):
        tokenizer_file.unlink()  # as saved without processing_class
    status, _, err = _run(capsys, "evaluate", plain, "--data", runs.jsonl, "--text-column", "review",
                          "--label-column", "gold", "--batch-size", 16)
    assert status == 1 and "--tokenizer" in err and err.count("\n") == 1, err
    runs.tokenizer.save_pretrained(tmp_path / "tokenizer")
    status, _, err = _run(capsys, "evaluate", plain, "--data", runs.jsonl, "--text-column", "review",
                          "--label-column", "gold", "--batch-size", 16, "--tokenizer", tmp_path / "tokenizer")
    assert status == 0, err
    for checkpoint in runs.checkpoints:
        ours, theirs = load_record(plain / checkpoint), load_record(runs.callback / checkpoint)
        assert ours.confusion_matrix == theirs.confusion_matrix
        assert ours.metrics["accuracy"] == theirs.metrics["accuracy"]
        assert ours.objective["metric"] == "f1_macro"  # no --objective and no leaderboard: the default


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
               PYTHONUNBUFFERED="1")
    return env


def test_evaluate_on_two_processes_equals_one_process(runs, tmp_path):
    """``accelerate launch -m trainer_ext evaluate`` on 2 processes against ``python -m trainer_ext evaluate``
    on 1 (both 1 thread per process): records and saved scores identical, bit for bit."""
    one, two = _copy(runs.plain, tmp_path / "one"), _copy(runs.plain, tmp_path / "two")
    arguments = ["evaluate", None, "--data", str(runs.csv), "--objective", "recall_negative",
                 "--constraint", "precision_negative >= 0.5", "--batch-size", "4"]
    commands = {
        "one": [sys.executable, "-m", "trainer_ext", *[str(one) if a is None else a for a in arguments]],
        "two": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--num_processes", "2", "--num_machines", "1",
                "--main_process_port", str(_free_port()), "-m", "trainer_ext",
                *[str(two) if a is None else a for a in arguments]],
    }
    env = _env()
    started = {}
    for name, command in commands.items():
        launch_env = {**env, "ACCELERATE_USE_CPU": "true"} if name == "two" else env
        log = open(tmp_path / f"{name}.log", "w+b")
        started[name] = (subprocess.Popen(command, env=launch_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True), log, time.monotonic())
    results = {}
    for name, (process, log, start) in started.items():
        try:
            process.wait(timeout=max(1.0, LAUNCH_TIMEOUT - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # the group this command leads: launcher and workers
            process.wait()
        log.seek(0)
        results[name] = (process.returncode, log.read().decode("utf-8", "replace"))
        log.close()
    for name, (code, text) in results.items():
        assert code == 0, f"$ {' '.join(commands[name])}\n[exit {code}]\n{text[-6000:]}"

    assert "2 processes" in results["two"][1] and "1 process)" in results["one"][1]
    for checkpoint in runs.checkpoints:
        a, b = (json.loads((d / checkpoint / "checkpoint_metrics.json").read_text()) for d in (one, two))
        assert (a["evaluation"]["processes"], b["evaluation"]["processes"]) == (1, 2)
        assert _without_timing(a) == _without_timing(b), checkpoint
        with np.load(one / checkpoint / "checkpoint_scores.npz") as x, np.load(two / checkpoint / "checkpoint_scores.npz") as y:
            for key in ("labels", "predictions", "probabilities"):
                assert np.array_equal(x[key], y[key]), (checkpoint, key)
    assert _board(one) == _board(two)
    assert not list(two.rglob(".*.tmp")), "temporary files left behind"


# ---- rank -------------------------------------------------------------------------------------------------


def test_rank_with_the_callbacks_objective_reproduces_its_leaderboard(runs, capsys):
    """Same objective, same records: the command line writes exactly the leaderboard the callback wrote."""
    status, out, err = _run(capsys, "rank", runs.callback, "--objective", "accuracy", "--format", "json")
    assert status == 0, err
    assert json.loads(out) == _board(runs.callback)
    status, out, _ = _run(capsys, "rank", runs.callback, "--objective", "accuracy", "--format", "markdown")
    assert out == (runs.callback / "checkpoint_leaderboard.md").read_text(encoding="utf-8")
    status, out, _ = _run(capsys, "rank", runs.callback, "--objective", "accuracy")
    best = _board(runs.callback)["best_checkpoint"]
    assert status == 0 and f"Best: {best}" in out and f"{best} *" in out


def test_rank_apply_new_objective_then_resume_loads_the_new_best(runs, tmp_path, capsys):
    run = _copy(runs.callback, tmp_path / "run")
    old = _board(run)
    records = {c: load_record(run / c) for c in runs.checkpoints}
    top_accuracy = max(r.metrics["accuracy"] for r in records.values())
    constraint = f"accuracy < {top_accuracy!r}"  # rules out the callback's choice (the most accurate)
    objective = Objective("recall_negative", constraints=[constraint])
    expected = select_best([Candidate(c, r.global_step, r.metrics) for c, r in records.items()], objective, final=True)
    assert expected.best_checkpoint != old["best_checkpoint"], "the scenario must change the choice"
    assert expected.best.feasible, "the scenario needs a checkpoint that meets the constraint"

    status, out, err = _run(capsys, "rank", run, "--objective", "recall_negative", "--constraint", constraint,
                            "--apply", "--format", "json")
    assert status == 0, err
    winner = expected.best_checkpoint
    assert json.loads(out)["best_checkpoint"] == winner == _board(run)["best_checkpoint"]
    assert _board(run)["objective"]["constraints"] == [constraint]
    assert f"| {winner} (best) |" in (run / "checkpoint_leaderboard.md").read_text(encoding="utf-8")
    winner_step = int(winner.split("-")[1])
    for checkpoint in runs.checkpoints:
        state = json.loads((run / checkpoint / "trainer_state.json").read_text())
        step = int(checkpoint.split("-")[1])
        # each checkpoint names the best among the checkpoints up to its own step
        so_far = select_best([Candidate(c, r.global_step, r.metrics) for c, r in records.items() if r.global_step <= step], objective).best
        assert state["best_model_checkpoint"] == str(run / so_far.checkpoint), checkpoint
        assert state["best_global_step"] == so_far.global_step and state["best_metric"] == so_far.objective_value
        if step >= winner_step:
            assert state["best_model_checkpoint"] == str(run / winner)

    last = runs.checkpoints[-1]
    trainer = Trainer(
        model=tiny_llama_classifier(runs.tokenizer, seed=0),
        args=_args(run, eval_strategy="epoch", load_best_model_at_end=True),
        train_dataset=runs.train, eval_dataset=runs.holdout, processing_class=runs.tokenizer,
    )
    trainer.train(resume_from_checkpoint=str(run / last))
    assert trainer.state.best_model_checkpoint == str(run / winner)
    assert trainer.state.best_global_step == winner_step
    assert _same_weights(trainer.model, run / winner) and not _same_weights(trainer.model, run / last)


def test_console_script_is_wired(runs):
    script = Path(sys.executable).with_name("trainer-ext")
    assert script.is_file(), f"{script}: reinstall the package (pip install -e .) to create the console script"
    done = subprocess.run([str(script), "rank", str(runs.callback), "--objective", "f1_negative", "--format", "json"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["objective"]["metric"] == "f1_negative"
    assert [e["checkpoint"] for e in payload["entries"]][0] == payload["best_checkpoint"]
    assert all({"checkpoint", "objective_value", "feasible"} <= set(e) for e in payload["entries"])


# ---- report -------------------------------------------------------------------------------------------------


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_report_writes_figures_and_marks_the_chosen_and_lowest_loss_checkpoints(runs, tmp_path, capsys):
    import matplotlib.image

    from trainer_ext import report

    run = _copy(runs.callback, tmp_path / "run")
    top = max(load_record(run / c).metrics["accuracy"] for c in runs.checkpoints)
    assert main(["rank", str(run), "--objective", "recall_negative", "--constraint", f"accuracy < {top!r}", "--apply"]) == 0
    capsys.readouterr()
    chosen = _board(run)["best_checkpoint"]
    lowest_loss = min((load_record(run / c) for c in runs.checkpoints), key=lambda r: (r.metrics["log_loss"], r.global_step))

    status, out, err = _run(capsys, "report", run)
    assert status == 0, err
    folder = run / "report"
    assert out.strip() == str(folder / "report.md")
    for name in ("per_class_metrics.png", "confusion_matrix.png", "precision_recall.png"):
        data = (folder / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        image = matplotlib.image.imread(folder / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, (name, image.shape)
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert f"**Chosen: {chosen}**" in text
    assert f"**Lowest log_loss: {lowest_loss.checkpoint}**" in text
    for name in ("per_class_metrics.png", "confusion_matrix.png", "precision_recall.png"):
        assert f"]({name})" in text
    cm = load_record(run / chosen).confusion_matrix
    assert f"| NEGATIVE | {cm[0][0]} | {cm[0][1]} |" in text

    # The legend names both marked checkpoints.
    records = {c: load_record(run / c) for c in runs.checkpoints}
    figure_class, _ = report._matplotlib()
    marks = report._marks(run, records)
    figure = report._per_class_figure(figure_class, sorted(records.values(), key=lambda r: r.global_step), LABELS, marks)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert f"chosen: {chosen}" in legend and f"lowest log_loss: {lowest_loss.checkpoint}" in legend

    out_dir = tmp_path / "elsewhere"
    assert main(["report", str(run), "--out", str(out_dir)]) == 0
    assert (out_dir / "report.md").is_file() and (out_dir / "per_class_metrics.png").is_file()


def test_report_without_matplotlib_says_how_to_install_it(runs, tmp_path, monkeypatch, capsys):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # `import matplotlib` now raises ImportError
    status, out, err = _run(capsys, "report", runs.callback, "--out", tmp_path / "report")
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "pip install 'trainer-ext[plot]'" in err and "Traceback" not in err
    assert not (tmp_path / "report").exists()


# ---- ranking without a model: many records, rotated-away checkpoints, costs ---------------------------------


def _write_record(folder: Path, step: int, cm: list[list[int]], *, schema_version: int | None = None) -> CheckpointRecord:
    slugs = class_slugs(LABELS)
    record = CheckpointRecord(
        checkpoint=folder.name, global_step=step, epoch=step / 10, labels=LABELS, num_samples=int(np.sum(cm)),
        metrics=count_metrics(np.asarray(cm), slugs), confusion_matrix=cm, objective=Objective("accuracy").to_dict(),
        objective_value=None, feasible=True,
    )
    record.write(folder)
    if schema_version is not None:
        data = json.loads((folder / "checkpoint_metrics.json").read_text())
        data["schema_version"] = schema_version
        (folder / "checkpoint_metrics.json").write_text(json.dumps(data))
    return record


def test_rank_100_records_and_rotated_away_entries(tmp_path, capsys):
    rng = np.random.default_rng(0)
    records = {}
    for step in range(10, 1010, 10):
        negatives, positives = 40, 60
        tn = int(rng.integers(10, negatives))  # recall_negative < 1: the rotated-away checkpoint-1 wins
        tp = int(rng.integers(30, positives + 1))
        folder = tmp_path / f"checkpoint-{step}"
        records[folder.name] = _write_record(folder, step, [[tn, negatives - tn], [positives - tp, tp]])
    # Three checkpoints rotated away before: only their leaderboard entries remain.
    rotated = {f"checkpoint-{s}": {"accuracy": a, "recall_negative": r, "precision_negative": p}
               for s, a, r, p in ((1, 0.5, 1.0, 0.95), (2, 0.6, 0.2, 0.9), (3, 0.7, 0.99, 0.5))}
    board = {
        "schema_version": 1, "objective": Objective("accuracy").to_dict(), "best_checkpoint": "checkpoint-1",
        "reason": "", "labels": LABELS,
        "entries": [{"rank": i + 1, "checkpoint": c, "global_step": int(c.split("-")[1]), "epoch": None,
                     "objective_value": m["accuracy"], "feasible": True, "violations": {}, "exists": False,
                     "protected": False, "metrics": m} for i, (c, m) in enumerate(rotated.items())],
    }
    (tmp_path / "checkpoint_leaderboard.json").write_text(json.dumps(board))

    constraint = "precision_negative >= 0.9"
    status, out, err = _run(capsys, "rank", tmp_path, "--objective", "recall_negative", "--constraint", constraint,
                            "--tie-breaker", "accuracy", "--format", "json")
    assert status == 0, err
    payload = json.loads(out)
    objective = Objective("recall_negative", constraints=[constraint], tie_breakers=["accuracy"])
    candidates = [Candidate(c, r.global_step, r.metrics) for c, r in records.items()]
    candidates += [Candidate(c, int(c.split("-")[1]), m) for c, m in rotated.items()]
    expected = select_best(candidates, objective, final=True)
    assert payload["best_checkpoint"] == expected.best_checkpoint == "checkpoint-1"  # rotated away, still ranked
    assert [e["checkpoint"] for e in payload["entries"]] == [r.checkpoint for r in expected.ranking]
    assert len(payload["entries"]) == 103
    assert {e["checkpoint"] for e in payload["entries"] if not e["exists"]} == set(rotated)
    assert [e["objective_value"] for e in payload["entries"]] == [r.objective_value for r in expected.ranking]
    assert [e["feasible"] for e in payload["entries"]] == [r.feasible for r in expected.ranking]

    # --apply refuses a best whose folder is gone: the Trainer could not load it.
    status, _, err = _run(capsys, "rank", tmp_path, "--objective", "recall_negative", "--constraint", constraint, "--apply")
    assert status == 1 and "checkpoint-1" in err and "no longer on disk" in err and err.count("\n") == 1

    # expected_cost from each record's confusion matrix; rotated-away entries have none: ranked as missing.
    cost = [[0, 1], [5, 0]]
    status, out, err = _run(capsys, "rank", tmp_path, "--objective", "expected_cost", "--cost-matrix", json.dumps(cost),
                            "--format", "json")
    assert status == 0, err
    assert "no confusion matrix or saved scores" in err
    payload = json.loads(out)
    for entry in payload["entries"]:
        if entry["checkpoint"] in rotated:
            assert entry["objective_value"] is None
        else:
            cm = np.asarray(records[entry["checkpoint"]].confusion_matrix)
            assert entry["objective_value"] == pytest.approx(float((cm * np.asarray(cost)).sum() / cm.sum()), abs=1e-12)
    values = [e["objective_value"] for e in payload["entries"] if e["objective_value"] is not None]
    assert values == sorted(values)  # lower is better, best first


# ---- one-line errors ---------------------------------------------------------------------------------------


def _assert_one_line_error(status, out, err, expected_status: int, command: str, *needles: str) -> None:
    assert status == expected_status, err
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"trainer-ext {command}: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def recorded(tmp_path) -> Path:
    for step, cm in ((10, [[5, 5], [2, 8]]), (20, [[8, 2], [3, 7]])):
        _write_record(tmp_path / "run" / f"checkpoint-{step}", step, cm)
    return tmp_path / "run"


@pytest.mark.parametrize("command", ["rank", "report", "evaluate"])
def test_missing_folder(command, tmp_path, capsys):
    extra = {"rank": ["--objective", "accuracy"], "report": [], "evaluate": ["--data", tmp_path / "x.csv"]}[command]
    status, out, err = _run(capsys, command, tmp_path / "nope", *extra)
    _assert_one_line_error(status, out, err, 1, command, "does not exist")


@pytest.mark.parametrize("command", ["rank", "report", "evaluate"])
def test_no_checkpoints(command, tmp_path, capsys):
    extra = {"rank": ["--objective", "accuracy"], "report": [], "evaluate": ["--data", tmp_path / "x.csv"]}[command]
    status, out, err = _run(capsys, command, tmp_path, *extra)
    _assert_one_line_error(status, out, err, 1, command, "no checkpoint-<step> folders")


@pytest.mark.parametrize("command", ["rank", "report"])
def test_no_records_suggests_evaluate(command, tmp_path, capsys):
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "config.json").write_text("{}")
    extra = ["--objective", "accuracy"] if command == "rank" else []
    status, out, err = _run(capsys, command, tmp_path, *extra)
    _assert_one_line_error(status, out, err, 1, command, "checkpoint_metrics.json",
                           f"trainer-ext evaluate {tmp_path}")


@pytest.mark.parametrize("command", ["rank", "report"])
def test_newer_schema_version(command, recorded, capsys):
    _write_record(recorded / "checkpoint-30", 30, [[1, 1], [1, 1]], schema_version=99)
    extra = ["--objective", "accuracy"] if command == "rank" else []
    status, out, err = _run(capsys, command, recorded, *extra)
    _assert_one_line_error(status, out, err, 1, command, "schema_version 99", "Upgrade")


@pytest.mark.parametrize(
    ("arguments", "needles"),
    [
        (["--objective", "recal_negative"], ["--objective: unknown metric key 'recal_negative'",
                                              "Keys in the records: accuracy, balanced_accuracy, f1_macro"]),
        (["--objective", "accuracy", "--constraint", "precison_negative >= 0.5"], ["--constraint", "'precison_negative'"]),
        (["--objective", "accuracy", "--tie-breaker", "f1_negatve"], ["--tie-breaker", "'f1_negatve'"]),
        (["--objective", "recall_negative", "--minimize"], ["--minimize", "higher is better"]),
        (["--objective", "support_negative"], ["no direction", "--maximize", "--minimize"]),
        (["--objective", "expected_cost"], ["expected_cost", "--cost-matrix"]),
        (["--objective", "expected_cost", "--cost-matrix", "[[0, 1, 2], [1, 0, 2], [1, 1, 0]]"], ["cost_matrix", "2x2"]),
        (["--objective", "expected_cost", "--cost-matrix", "[[0, 1], [5"], ["--cost-matrix", "expected JSON"]),
        (["--objective", "accuracy", "--constraint", "accuracy => 0.5"], ["cannot parse", ">="]),
        (["--objective", "accuracy", "--format", "xml"], ["invalid choice: 'xml'"]),
        (["--constraint", "accuracy >= 0.5"], ["--objective"]),
    ],
    ids=["unknown-key", "unknown-constraint-key", "unknown-tie-breaker", "direction-contradiction",
         "no-direction", "cost-without-matrix", "cost-matrix-shape", "cost-matrix-json", "bad-constraint",
         "bad-format", "missing-objective"],
)
def test_command_line_mistakes_exit_2(arguments, needles, recorded, capsys):
    status, out, err = _run(capsys, "rank", recorded, *arguments)
    _assert_one_line_error(status, out, err, 2, "rank", *needles)


def test_custom_key_with_a_direction_is_ranked(recorded, capsys):
    status, out, err = _run(capsys, "rank", recorded, "--objective", "support_negative", "--minimize", "--format", "json")
    assert status == 0, err
    assert json.loads(out)["objective"]["greater_is_better"] is False


def test_rank_does_not_import_torch():
    code = ("import sys, trainer_ext.cli, trainer_ext.run_folder, trainer_ext.render, trainer_ext.report, "
            "trainer_ext.provenance; "
            "heavy = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_nan_is_written_as_null_and_never_best(tmp_path, capsys):
    _write_record(tmp_path / "checkpoint-1", 1, [[0, 0], [3, 7]])  # no negative example: recall 0/0 = 0.0
    record = load_record(tmp_path / "checkpoint-1")
    record.metrics["roc_auc_negative"] = math.nan
    record.write(tmp_path / "checkpoint-1")
    _write_record(tmp_path / "checkpoint-2", 2, [[1, 0], [3, 6]])
    record = load_record(tmp_path / "checkpoint-2")
    record.metrics["roc_auc_negative"] = 0.5
    record.write(tmp_path / "checkpoint-2")
    status, out, err = _run(capsys, "rank", tmp_path, "--objective", "roc_auc_negative", "--format", "json")
    assert status == 0, err
    payload = json.loads(out)
    assert payload["best_checkpoint"] == "checkpoint-2"
    assert payload["entries"][1]["objective_value"] is None
    assert read_json(tmp_path / "checkpoint-1" / "checkpoint_metrics.json")["metrics"]["roc_auc_negative"] is None


def test_apply_writes_the_best_so_far_into_every_trainer_state(tmp_path, capsys):
    """--apply without a model, on 40 records: each trainer_state.json names the best among the checkpoints
    up to its own step (what the callback writes during training), the last one the overall best."""
    rng = np.random.default_rng(1)
    records = {}
    for step in range(5, 205, 5):
        tn, tp = int(rng.integers(5, 21)), int(rng.integers(10, 31))
        folder = tmp_path / "run" / f"checkpoint-{step}"
        records[folder.name] = _write_record(folder, step, [[tn, 20 - tn], [30 - tp, tp]])
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "best_metric": None}))
    run = tmp_path / "run"
    objective = Objective("f1_negative", constraints=["recall_positive >= 0.6"], tie_breakers=["accuracy"])
    status, _, err = _run(capsys, "rank", run, "--objective", "f1_negative", "--constraint", "recall_positive >= 0.6",
                          "--tie-breaker", "accuracy", "--apply")
    assert status == 0, err
    changes = set()
    for name, record in records.items():
        state = json.loads((run / name / "trainer_state.json").read_text())
        earlier = [Candidate(c, r.global_step, r.metrics) for c, r in records.items() if r.global_step <= record.global_step]
        expected = select_best(earlier, objective).best
        assert state["best_model_checkpoint"] == str(run / expected.checkpoint), name
        assert (state["best_global_step"], state["best_metric"]) == (expected.global_step, expected.objective_value)
        changes.add(expected.checkpoint)
    assert len(changes) > 1, "the best must change during the run for this test to mean something"
    assert _board(run)["best_checkpoint"] == expected.checkpoint


# ---- no command loses a record (issue 12, point 5) ----------------------------------------------------------


def _without_fingerprints(folder: Path) -> None:
    """The leaderboard as the previous version wrote it: entries without a held-out fingerprint."""
    board = _board(folder)
    for entry in board["entries"]:
        entry.pop("fingerprint")
    (folder / "checkpoint_leaderboard.json").write_text(json.dumps(board))


@pytest.mark.parametrize("written_by", ["this version", "the previous version"])
def test_evaluate_keeps_rotated_away_entries_of_the_same_held_out_set(written_by, runs, tmp_path, capsys):
    run = _copy(runs.callback, tmp_path / "run")
    trained = _board(runs.callback)
    assert all(entry["fingerprint"] for entry in trained["entries"])
    if written_by == "the previous version":
        _without_fingerprints(run)
    rotated = runs.checkpoints[0]
    shutil.rmtree(run / rotated)  # as save_total_limit would have
    status, out, err = _run(capsys, "evaluate", run, "--data", runs.csv, "--objective", "accuracy", "--batch-size", 16)
    assert status == 0, err
    assert f"kept the leaderboard entry of 1 checkpoint(s) no longer on disk ({rotated})" in err
    assert "same held-out set" in err and "moved" not in err
    # The callback's leaderboard of the training run, but for the folder that is gone; the
    # selection-corrected estimate now covers the checkpoints whose predictions are still on disk, and
    # the reason says so.
    expected = {**trained, "entries": [{**e, "exists": e["checkpoint"] != rotated} for e in trained["entries"]]}
    board = _board(run)
    note = "; the selection-corrected estimate covers the 2 checkpoints with saved predictions (1 without them"
    assert note in board["reason"] and board["best_estimate"] is not None
    assert board["reason"].split("; the selection-corrected")[0] == trained["reason"].split("; the selection-corrected")[0]
    for key in ("reason", "best_estimate"):
        board.pop(key), expected.pop(key)
    assert board == expected
    assert f"| {rotated} |" in (run / "checkpoint_leaderboard.md").read_text(encoding="utf-8")
    assert not (run / "checkpoint_leaderboard.previous.json").exists()


def test_evaluate_on_another_held_out_set_moves_the_earlier_entries_aside(runs, tmp_path, capsys):
    run = _copy(runs.callback, tmp_path / "run")
    trained = _board(runs.callback)
    shutil.rmtree(run / runs.checkpoints[0])
    with open(runs.csv, encoding="utf-8") as handle:
        rows = handle.read().splitlines()
    other = tmp_path / "other.csv"
    other.write_text("\n".join(rows[:41]) + "\n", encoding="utf-8")  # the header and 40 of the 61 rows

    status, out, err = _run(capsys, "evaluate", run, "--data", other, "--objective", "accuracy", "--batch-size", 16)
    assert status == 0, err
    names = ", ".join(e["checkpoint"] for e in trained["entries"])
    assert f"moved 3 leaderboard entries measured on another held-out set ({names}) to " \
           f"checkpoint_leaderboard.previous.json" in err
    board = _board(run)
    assert sorted(e["checkpoint"] for e in board["entries"]) == sorted(runs.checkpoints[1:])
    assert all(e["exists"] for e in board["entries"])
    assert {load_record(run / c).num_samples for c in runs.checkpoints[1:]} == {40}
    previous = read_json(run / "checkpoint_leaderboard.previous.json")
    assert len(previous["moves"]) == 1
    move = previous["moves"][0]
    assert move["entries"] == trained["entries"]  # every measurement of the training run, as it was
    assert move["objective"] == trained["objective"] and move["best_checkpoint"] == trained["best_checkpoint"]

    # Back on the training run's set: the 40-row entries move aside too; the earlier move stays.
    status, _, err = _run(capsys, "evaluate", run, "--data", runs.csv, "--objective", "accuracy", "--batch-size", 16)
    assert status == 0, err
    assert "moved 2 leaderboard entries" in err
    moves = read_json(run / "checkpoint_leaderboard.previous.json")["moves"]
    assert [len(m["entries"]) for m in moves] == [3, 2] and moves[0] == move
    assert {e["checkpoint"]: e["metrics"] for e in _board(run)["entries"]} == {
        e["checkpoint"]: e["metrics"] for e in trained["entries"] if e["checkpoint"] != runs.checkpoints[0]
    }


# ---- a closed output pipe --------------------------------------------------------------------------------


def _run_with_closed_stdout(arguments: list[str]) -> tuple[int, str]:
    """Run ``python -m trainer_ext ARGUMENTS`` whose stdout pipe is closed by its reader before it writes."""
    process = subprocess.Popen([sys.executable, "-m", "trainer_ext", *map(str, arguments)], cwd=REPO, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    try:
        _, err = process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err.decode("utf-8", "replace")


@pytest.mark.parametrize("command", ["rank table", "rank json", "rank markdown", "report", "evaluate", "--help"])
def test_every_command_exits_quietly_when_its_output_pipe_closes(command, runs, tmp_path):
    run = _copy(runs.plain if command == "evaluate" else runs.callback, tmp_path / "run")
    arguments = {
        "rank table": ["rank", run, "--objective", "accuracy"],
        "rank json": ["rank", run, "--objective", "accuracy", "--format", "json"],
        "rank markdown": ["rank", run, "--objective", "accuracy", "--format", "markdown"],
        "report": ["report", run],
        "evaluate": ["evaluate", run, "--data", runs.csv, "--objective", "accuracy", "--batch-size", 16],
        "--help": ["--help"],
    }[command]
    status, err = _run_with_closed_stdout(arguments)
    assert status == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    if command == "evaluate":  # the work was done; only the table was not read
        assert _board(run) == _board(runs.callback)


def test_rank_json_piped_into_head(tmp_path):
    """The issue's own command line: ``trainer-ext rank DIR --objective x --format json | head -1``, with more
    output than a pipe holds, so the command is still writing when head leaves."""
    rng = np.random.default_rng(2)
    for step in range(1, 301):
        tn, tp = int(rng.integers(5, 21)), int(rng.integers(10, 31))
        _write_record(tmp_path / f"checkpoint-{step}", step, [[tn, 20 - tn], [30 - tp, tp]])
    command = (f"set -o pipefail; {sys.executable} -m trainer_ext rank {tmp_path} --objective accuracy "
               f"--format json | head -1")
    done = subprocess.run(["bash", "-c", command], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{\n" and done.stderr == ""
    full = subprocess.run([sys.executable, "-m", "trainer_ext", "rank", str(tmp_path), "--objective", "accuracy",
                           "--format", "json"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert len(full.stdout) > 4 * 65536, "the output must not fit in the pipe for this test to mean something"
