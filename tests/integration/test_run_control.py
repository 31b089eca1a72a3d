"""Issue 13 on real Trainer runs (tiny Llama classifier built from config, keyword reviews that it learns):
the callback's own evaluation schedule, saves only of checkpoints that can win, early stopping on the
business objective, the best loaded at the end, and resume.

References are computed here from the logged evaluations with plain Python (a running best; the k best so
far), not with trainer_ext's selection.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from synthetic_reviews import (
    keyword_reviews,
    tiny_llama_classifier,
    tokenize_reviews,
    train_tokenizer,
)
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

from trainer_ext import BestCheckpointCallback

TRAIN_SIZE = 160  # 10 steps per epoch at batch 16; 3 epochs: 30 steps
OBJECTIVE = "recall_negative"


@pytest.fixture(scope="module")
def data():
    train_rows = keyword_reviews(TRAIN_SIZE, seed=1)
    eval_rows = keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    return {"tokenizer": tokenizer, "train": tokenize_reviews(train_rows, tokenizer),
            "holdout": tokenize_reviews(eval_rows, tokenizer)}


def _train(data, out: Path, *, cb_kwargs, callbacks=(), resume=None, objective=OBJECTIVE, **overrides):
    args = dict(
        output_dir=str(out), num_train_epochs=3, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        learning_rate=3e-3, save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True, seed=0,
        logging_steps=100, disable_tqdm=True,
    )
    args.update(overrides)
    callback = BestCheckpointCallback(eval_dataset=data["holdout"], objective=objective, **cb_kwargs)
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0), args=TrainingArguments(**args),
        train_dataset=data["train"], eval_dataset=data["holdout"] if args["eval_strategy"] != "no" else None,
        processing_class=data["tokenizer"], callbacks=[callback, *callbacks],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback


def _board(out: Path) -> dict:
    return json.loads((out / "checkpoint_leaderboard.json").read_text())


def _evaluations(out: Path) -> list[tuple[int, float, bool]]:
    """(step, objective value, saved) of every leaderboard entry, in step order."""
    entries = _board(out)["entries"]
    return sorted((e["global_step"], e["objective_value"], e["saved"]) for e in entries)


def _folders(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


def _running_bests(evaluations) -> list[int]:
    """Steps at which the value beats every earlier one (ties: the earlier stays best)."""
    steps, best = [], None
    for step, value, _ in evaluations:
        if best is None or value > best:
            steps.append(step)
            best = value
    return steps


def _same_weights(model: torch.nn.Module, checkpoint: Path) -> bool:
    saved = load_file(str(checkpoint / "model.safetensors"))
    state = model.state_dict()
    return all(torch.equal(state[k].cpu(), v) for k, v in saved.items() if k in state)


@pytest.mark.parametrize(
    ("save_strategy", "eval_strategy"), [("no", "no"), ("epoch", "no"), ("steps", "steps")]
)
def test_own_schedule_whatever_the_trainer_strategies(data, tmp_path, save_strategy, eval_strategy):
    _train(
        data, tmp_path, cb_kwargs={"eval_steps": 4, "save": "improved"},
        save_strategy=save_strategy, eval_strategy=eval_strategy, save_steps=7, eval_steps=7,
    )
    evaluations = _evaluations(tmp_path)
    assert [s for s, _, _ in evaluations] == [4, 8, 12, 16, 20, 24, 28, 30]  # every 4th step and the last
    values = [v for _, v, _ in evaluations]
    assert len(set(values)) > 2, "the objective did not change: the test would show nothing"
    expected = _running_bests(evaluations)
    assert [s for s, _, saved in evaluations if saved] == expected
    assert _folders(tmp_path) == expected  # the callback owns should_save: no Trainer save besides
    best = max(expected, key=lambda s: (values[[e[0] for e in evaluations].index(s)], -s))
    assert _board(tmp_path)["best_checkpoint"] == f"checkpoint-{best}"


def test_save_all_with_unaligned_eval_steps_lists_unsaved_entries(data, tmp_path):
    trainer, _ = _train(data, tmp_path, cb_kwargs={"eval_steps": 4}, save_strategy="epoch")
    evaluations = _evaluations(tmp_path)
    assert [s for s, _, _ in evaluations] == [4, 8, 10, 12, 16, 20, 24, 28, 30]
    assert [s for s, _, saved in evaluations if saved] == [10, 20, 30]
    unsaved = [e for e in _board(tmp_path)["entries"] if not e["saved"]]
    assert all(e["rank"] is None and not e["exists"] and OBJECTIVE in e["metrics"] for e in unsaved)
    saved_values = {s: v for s, v, saved in evaluations if saved}
    best = max(saved_values, key=lambda s: (saved_values[s], -s))
    assert trainer.state.best_model_checkpoint == str(tmp_path / f"checkpoint-{best}")

    # trainer-ext rank (and rank --apply, which rewrites the leaderboard) keeps them listed, never ranked.
    from trainer_ext.cli import main

    assert main(["rank", str(tmp_path), "--objective", OBJECTIVE, "--apply"]) == 0
    board = _board(tmp_path)
    assert sorted(e["global_step"] for e in board["entries"] if not e["saved"]) == [4, 8, 12, 16, 24, 28]
    assert board["best_checkpoint"] == f"checkpoint-{best}"
    assert "| - | checkpoint-4 |" in (tmp_path / "checkpoint_leaderboard.md").read_text(encoding="utf-8")


def test_top_k_saves_the_evaluations_entering_the_k_best(data, tmp_path):
    _train(data, tmp_path, cb_kwargs={"eval_steps": 3, "save": "top_k", "keep_top_k": 2})
    evaluations = _evaluations(tmp_path)
    expected, seen = [], []
    for step, value, _ in evaluations:
        rank = sum(1 for v in seen if v >= value)  # earlier ties stay ahead
        if rank < 2:
            expected.append(step)
        seen.append(value)
    assert [s for s, _, saved in evaluations if saved] == expected
    assert _folders(tmp_path) == expected


@pytest.mark.parametrize("trainer_loads", [False, True])
def test_the_best_is_loaded_at_the_end_and_save_total_limit_keeps_it(data, tmp_path, trainer_loads):
    trainer, _ = _train(
        data, tmp_path, cb_kwargs={"eval_steps": 3, "save": "improved"}, save_total_limit=1,
        load_best_model_at_end=trainer_loads,
    )
    evaluations = _evaluations(tmp_path)
    best = _running_bests(evaluations)[-1]
    assert trainer.state.best_model_checkpoint == str(tmp_path / f"checkpoint-{best}")
    assert best in _folders(tmp_path) and len(_folders(tmp_path)) <= 2  # the limit (the newest may stay beside)
    assert _same_weights(trainer.model, tmp_path / f"checkpoint-{best}")


def _stop_step(entries, patience: int, threshold: float, feasible=lambda metrics: True) -> int | None:
    """Plain replay of early stopping: the step at which `patience` evaluations in a row did not improve
    the best (feasible before infeasible, then by more than `threshold`)."""
    best, stale = None, 0
    for entry in sorted(entries, key=lambda e: e["global_step"]):
        value, ok = entry["objective_value"], feasible(entry["metrics"])
        if best is None or (ok and not best[1]):
            improved = True
        elif ok == best[1] and value > best[0]:
            improved = value - best[0] > threshold
        else:
            improved = False
        if best is None or (ok and not best[1]) or (ok == best[1] and value > best[0]):
            best = (value, ok)
        stale = 0 if improved else stale + 1
        if stale >= patience:
            return entry["global_step"]
    return None


def test_early_stopping_beside_early_stopping_callback(data, tmp_path, caplog):
    # Threshold 1.0: no evaluation can improve recall by more than 1, so the run stops after the first
    # evaluation and two stale ones, at step 3 * 4; EarlyStoppingCallback (on the Trainer's eval_loss) is there too.
    with caplog.at_level("INFO", logger="trainer_ext.callback"):
        trainer, _ = _train(
            data, tmp_path, cb_kwargs={"eval_steps": 4, "early_stopping_patience": 2, "early_stopping_threshold": 1.0},
            callbacks=[EarlyStoppingCallback(early_stopping_patience=100)], save_strategy="steps", save_steps=4,
            eval_strategy="steps", eval_steps=4, metric_for_best_model="eval_loss",
        )
    assert trainer.state.global_step == 12
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Early stopping")]
    assert len(lines) == 1 and "best checkpoint checkpoint-4" in lines[0]
    assert _same_weights(trainer.model, Path(trainer.state.best_model_checkpoint))


@pytest.mark.parametrize("constraint", [None, "precision_negative >= 0.9"])
def test_early_stopping_at_the_expected_step_without_trainer_evaluation(data, tmp_path, constraint):
    from trainer_ext import Objective

    objective = Objective(OBJECTIVE, constraints=[constraint]) if constraint else OBJECTIVE
    callback = BestCheckpointCallback(
        eval_dataset=data["holdout"], objective=objective, eval_steps=4, save="improved", early_stopping_patience=2
    )
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0),
        args=TrainingArguments(output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=16,
                               learning_rate=3e-3, save_strategy="no", eval_strategy="no", report_to=[],
                               use_cpu=True, seed=0, logging_steps=100, disable_tqdm=True),
        train_dataset=data["train"], processing_class=data["tokenizer"], callbacks=[callback],
    )
    trainer.train()
    entries = _board(tmp_path)["entries"]
    feasible = (lambda m: m["precision_negative"] >= 0.9) if constraint else (lambda m: True)
    expected = _stop_step(entries, patience=2, threshold=0.0, feasible=feasible)
    assert expected is not None and trainer.state.global_step == expected
    assert _same_weights(trainer.model, Path(trainer.state.best_model_checkpoint))


def test_resume_brings_back_unsaved_entries_and_ends_with_the_same_best(data, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _train(data, full, cb_kwargs={"eval_steps": 3, "save": "improved"}, objective="accuracy")
    evaluations = _evaluations(full)
    saved = [s for s, _, ok in evaluations if ok]
    cut = next(s for s in saved if any(not ok for t, _, ok in evaluations if t < s) and s < 30)
    shutil.copytree(full, resumed)
    for step in _folders(resumed):
        if step > cut:
            shutil.rmtree(resumed / f"checkpoint-{step}")
    # The interrupted run's leaderboard is the one written at its save of `cut`.
    board = _board(resumed)
    board["entries"] = [e for e in board["entries"] if e["global_step"] <= cut]
    (resumed / "checkpoint_leaderboard.json").write_text(json.dumps(board))
    _train(data, resumed, cb_kwargs={"eval_steps": 3, "save": "improved"}, objective="accuracy",
           resume=str(resumed / f"checkpoint-{cut}"))
    assert [(s, ok) for s, _, ok in _evaluations(resumed)] == [(s, ok) for s, _, ok in evaluations]
    assert _board(resumed)["best_checkpoint"] == _board(full)["best_checkpoint"]


def test_early_stopping_on_two_processes_at_the_same_step(tmp_path):
    """A real 2-process launch (accelerate, CPU, gloo): every rank stops at the step the leaderboard's
    evaluations give, with the same best."""
    distributed = Path(__file__).resolve().parents[1] / "distributed"
    sys.path.insert(0, str(distributed))
    from test_launch import (
        WORLD,
        accelerate_launch,
        check_succeeded,
        free_port,
        launch_env,
        run_concurrently,
    )

    out = tmp_path / "run"
    command = accelerate_launch("--num_processes", str(WORLD), "--num_machines", "1", "--main_process_port",
                                str(free_port())) + [str(distributed / "worker_early_stop.py"), "--out", str(out)]
    check_succeeded(run_concurrently([command], launch_env(), tmp_path / "logs"))
    seen = [json.loads((out / f"rank-{rank}.json").read_text()) for rank in range(WORLD)]
    assert all(s["world_size"] == WORLD for s in seen)
    assert len({(s["global_step"], s["best_model_checkpoint"]) for s in seen}) == 1, seen
    expected = _stop_step(_board(out)["entries"], patience=2, threshold=0.0)
    assert expected is not None and seen[0]["global_step"] == expected < 40
    assert seen[0]["best_model_checkpoint"] == str(out / _board(out)["best_checkpoint"])


def test_kill_and_resume_under_save_improved(tmp_path):
    """The kill/resume harness (scripts/kill_resume.py) at a small size with eval_steps + save="improved":
    killed during an evaluation, between the Trainer's save and ours, and at a random time, then resumed;
    the leaderboard has the uninterrupted run's entries (saved and unsaved), bit-identical metrics, and
    the same best, whose folder exists."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import kill_resume as kr

    config = kr.RunConfig(save_steps=6, saves=4, eval_steps=3, save="improved", save_total_limit=None)
    kills = [kr.Kill("evaluation", 2), kr.Kill("save", 1), kr.Kill("random", delay=0.3)]
    context = kr.forkserver_context()
    kr.run_reference(tmp_path / "reference", config, logs=tmp_path / "logs-reference", context=context)
    run = kr.run_with_kills(tmp_path / "killed", config, kills, logs=tmp_path / "logs-killed", context=context)
    reference = _board(tmp_path / "reference")
    assert any(not e["saved"] for e in reference["entries"]) and sum(e["saved"] for e in reference["entries"]) > 1
    kr.check_same_as_reference(run.out, tmp_path / "reference", extra=kr.past_the_end(run, config))
    got = {e["checkpoint"]: e["saved"] for e in _board(run.out)["entries"]}
    assert all(got[e["checkpoint"]] == e["saved"] for e in reference["entries"])
    assert (run.out / reference["best_checkpoint"]).is_dir()
