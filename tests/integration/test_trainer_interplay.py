"""Real Trainer runs on a tiny Llama classifier built from config: the interplay points a-f of the core issue.

A trick makes the Trainer's own choice and ours disagree on purpose: the callback's held-out set is the
Trainer's eval set with every label flipped, and the objective is accuracy. As the model learns, the
Trainer's eval loss falls (it prefers late checkpoints) while accuracy on flipped labels falls too (we
prefer early ones). Each test asserts the disagreement really happened, so none passes by accident.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from synthetic_reviews import keyword_reviews, tiny_llama_classifier, tokenize_reviews, train_tokenizer  # noqa: E402
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from trainer_ext import BestCheckpointCallback, Objective  # noqa: E402
from trainer_ext.records import load_record, load_scores  # noqa: E402
from trainer_ext.selection import Candidate, select_best  # noqa: E402

TRAIN_SIZE = 160  # 10 steps per epoch at batch 16
@pytest.fixture(scope="module")
def data():
    train_rows = keyword_reviews(TRAIN_SIZE, seed=1)
    eval_rows = keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    train = tokenize_reviews(train_rows, tokenizer)
    holdout = tokenize_reviews(eval_rows, tokenizer)
    flipped = holdout.map(lambda row: {"labels": 1 - row["labels"]})
    return {"tokenizer": tokenizer, "train": train, "holdout": holdout, "flipped": flipped}


def _args(out: Path, **overrides) -> TrainingArguments:
    base = dict(
        output_dir=str(out),
        num_train_epochs=3,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        learning_rate=3e-3,
        save_strategy="epoch",
        eval_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        logging_steps=100,
        disable_tqdm=True,
    )
    base.update(overrides)
    return TrainingArguments(**base)


def _train(data, out: Path, *, objective="accuracy", held_out="flipped", callbacks=(), cb_kwargs=None, resume=None, **args):
    callback = BestCheckpointCallback(eval_dataset=data[held_out], objective=objective, **(cb_kwargs or {}))
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0),
        args=_args(out, **args),
        train_dataset=data["train"],
        eval_dataset=data["holdout"] if args.get("eval_strategy", "no") != "no" else None,
        processing_class=data["tokenizer"],
        callbacks=[callback, *callbacks],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback


def _board(out: Path) -> dict:
    return json.loads((out / "checkpoint_leaderboard.json").read_text())


def _same_weights(model: torch.nn.Module, checkpoint: Path) -> bool:
    saved = load_file(str(checkpoint / "model.safetensors"))
    state = model.state_dict()
    return all(torch.equal(state[k].cpu(), v) for k, v in saved.items())


def _trainer_loss_best_step(trainer) -> int:
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    return min(evals, key=lambda h: (h["eval_loss"], h["step"]))["step"]


def _independent_best(out: Path, objective) -> str:
    """Recompute the choice from the records on disk (a reference that does not use the callback's memory)."""
    board = _board(out)
    candidates = [Candidate(e["checkpoint"], e["global_step"], e["metrics"]) for e in board["entries"]]
    return select_best(candidates, objective if isinstance(objective, Objective) else Objective(objective)).best_checkpoint


# ---- a. rotation never deletes the business-best ------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_rotation_keeps_business_best_against_trainer_loss(data, tmp_path, limit):
    trainer, _ = _train(
        data, tmp_path, num_train_epochs=4, save_total_limit=limit, eval_strategy="epoch",
        metric_for_best_model="loss", load_best_model_at_end=False,
    )
    board = _board(tmp_path)
    ours = board["best_checkpoint"]
    assert ours == _independent_best(tmp_path, "accuracy")
    assert f"checkpoint-{_trainer_loss_best_step(trainer)}" != ours, "the scenario must make the Trainer disagree"
    assert (tmp_path / ours).is_dir()
    assert trainer.state.best_model_checkpoint == str(tmp_path / ours)
    assert trainer.state.best_global_step == int(ours.split("-")[1])
    assert trainer.state.best_metric == pytest.approx(board["entries"][0]["objective_value"])
    assert len(board["entries"]) == 4  # every evaluated checkpoint stays, folders or not
    assert {e["checkpoint"] for e in board["entries"] if e["exists"]} == {
        p.name for p in tmp_path.glob("checkpoint-*")
    }


# ---- b. the business-best weights are in trainer.model at the end --------------------------------


def test_load_best_model_at_end_loads_business_best(data, tmp_path):
    trainer, _ = _train(
        data, tmp_path, eval_strategy="epoch", load_best_model_at_end=True, save_total_limit=2,
    )
    ours = _board(tmp_path)["best_checkpoint"]
    assert f"checkpoint-{_trainer_loss_best_step(trainer)}" != ours
    assert _same_weights(trainer.model, tmp_path / ours)
    last = max(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert last.name != ours and not _same_weights(trainer.model, last)
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(tmp_path / ours)
    assert state["best_global_step"] == int(ours.split("-")[1])


def test_callback_loads_best_when_trainer_does_not(data, tmp_path):
    trainer, _ = _train(data, tmp_path)  # eval_strategy="no", no Trainer eval set
    ours = _board(tmp_path)["best_checkpoint"]
    assert ours != "checkpoint-30"
    assert _same_weights(trainer.model, tmp_path / ours)


def test_load_best_at_end_false_keeps_last_weights(data, tmp_path):
    trainer, _ = _train(data, tmp_path, cb_kwargs={"load_best_at_end": False})
    ours = _board(tmp_path)["best_checkpoint"]
    assert ours != "checkpoint-30"
    assert _same_weights(trainer.model, tmp_path / "checkpoint-30")


# ---- c. steps and epoch save strategies; every save is evaluated ---------------------------------


def test_save_strategy_steps_records_every_save(data, tmp_path):
    trainer, callback = _train(data, tmp_path, save_strategy="steps", save_steps=7, num_train_epochs=2)
    steps = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("checkpoint-*"))
    assert steps == [7, 14, 20]  # 20 = the final step, saved at the end of training
    for step in steps:
        record = load_record(tmp_path / f"checkpoint-{step}")
        assert record.global_step == step and record.num_samples == 61
        assert sum(map(sum, record.confusion_matrix)) == 61
    logged = [h for h in trainer.state.log_history if "holdout_accuracy" in h]
    assert [h["step"] for h in logged] == steps


class _SaveAtStep(TrainerCallback):
    """Asks for a save from a callback placed after ours: the callback must still evaluate it."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5:
            control.should_save = True


def test_save_requested_by_another_callback_is_evaluated(data, tmp_path):
    _train(data, tmp_path, num_train_epochs=1, callbacks=[_SaveAtStep()])
    assert (tmp_path / "checkpoint-5" / "checkpoint_metrics.json").is_file()
    assert {e["checkpoint"] for e in _board(tmp_path)["entries"]} == {"checkpoint-5", "checkpoint-10"}


# ---- d. beside EarlyStoppingCallback ----------------------------------------------------------------


def test_early_stopping_follows_business_objective(data, tmp_path):
    trainer, _ = _train(
        data, tmp_path, num_train_epochs=6, eval_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="holdout_accuracy", greater_is_better=True,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
    )
    board = _board(tmp_path)
    best_step = int(board["best_checkpoint"].split("-")[1])
    # patience 2: training stops two evaluations after the last business improvement
    assert trainer.state.global_step == best_step + 20 < 60
    assert trainer.state.best_metric == pytest.approx(board["entries"][0]["objective_value"])
    assert _same_weights(trainer.model, tmp_path / board["best_checkpoint"])


def test_early_stopping_on_trainer_loss_still_runs(data, tmp_path):
    trainer, _ = _train(
        data, tmp_path, num_train_epochs=4, eval_strategy="epoch", load_best_model_at_end=True,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=1)],
    )
    board = _board(tmp_path)
    assert _same_weights(trainer.model, tmp_path / board["best_checkpoint"])
    assert trainer.state.best_model_checkpoint == str(tmp_path / board["best_checkpoint"])


# ---- e. resume continues the same leaderboard ---------------------------------------------------------


class _Crash(TrainerCallback):
    def __init__(self, after_step):
        self.after_step = after_step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.after_step:
            raise RuntimeError("simulated crash")


def test_resume_continues_leaderboard_and_best(data, tmp_path):
    full = tmp_path / "full"
    _train(data, full, num_train_epochs=3, objective="recall_negative", held_out="holdout")
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(data, crashed, num_train_epochs=3, objective="recall_negative", held_out="holdout", callbacks=[_Crash(20)])
    assert {e["checkpoint"] for e in _board(crashed)["entries"]} == {"checkpoint-10", "checkpoint-20"}
    _train(data, crashed, num_train_epochs=3, objective="recall_negative", held_out="holdout", resume=str(crashed / "checkpoint-20"))
    a, b = _board(full), _board(crashed)
    assert b["best_checkpoint"] == a["best_checkpoint"]
    assert [e["checkpoint"] for e in b["entries"]] == [e["checkpoint"] for e in a["entries"]]
    for ea, eb in zip(a["entries"], b["entries"]):
        assert eb["metrics"]["recall_negative"] == pytest.approx(ea["metrics"]["recall_negative"], abs=1e-6)


# ---- f. ties keep the earlier checkpoint unless a tie-breaker decides; NaN is never best ------------


def test_ties_keep_earliest_and_tie_breaker_decides(data, tmp_path):
    positives_only = data["holdout"].filter(lambda row: row["labels"] == 1)
    data = {**data, "positives": positives_only}
    _train(data, tmp_path / "tie", held_out="positives", objective="recall_negative")  # zero support: 0.0 everywhere
    board = _board(tmp_path / "tie")
    assert {e["objective_value"] for e in board["entries"]} == {0.0}
    assert board["best_checkpoint"] == "checkpoint-10"

    _train(data, tmp_path / "broken", held_out="positives", objective=Objective("recall_negative", tie_breakers=["log_loss"]))
    board = _board(tmp_path / "broken")
    lowest = min(board["entries"], key=lambda e: (e["metrics"]["log_loss"], e["global_step"]))
    assert board["best_checkpoint"] == lowest["checkpoint"]
    assert "log_loss" in board["reason"]


def test_nan_objective_is_never_best(data, tmp_path):
    data = {**data, "positives": data["holdout"].filter(lambda row: row["labels"] == 1)}
    trainer, _ = _train(data, tmp_path, held_out="positives", objective="roc_auc_negative")  # undefined: NaN
    board = _board(tmp_path)
    assert board["best_checkpoint"] is None
    assert all(e["objective_value"] is None for e in board["entries"])
    assert trainer.state.best_model_checkpoint is None


# ---- the records agree with scikit-learn on the saved predictions --------------------------------------


def test_records_match_sklearn_on_saved_scores(data, tmp_path):
    from sklearn.metrics import log_loss, precision_recall_fscore_support, roc_auc_score

    _train(data, tmp_path, num_train_epochs=1, objective="recall_negative", held_out="holdout")
    folder = tmp_path / "checkpoint-10"
    record, scores = load_record(folder), load_scores(folder)
    y, pred, proba = scores["labels"], scores["predictions"], scores["probabilities"]
    assert np.array_equal(y, np.array(data["holdout"]["labels"]))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0.0)
    assert record.metrics["recall_negative"] == r[0] and record.metrics["precision_positive"] == p[1]
    assert record.metrics["f1_negative"] == pytest.approx(f[0], abs=1e-12)
    assert record.metrics["log_loss"] == pytest.approx(log_loss(y, proba, labels=[0, 1]), rel=1e-9)
    assert record.metrics["roc_auc_negative"] == pytest.approx(roc_auc_score(y == 0, proba[:, 0]), rel=1e-12)
    assert os.path.basename(record.checkpoint) == "checkpoint-10"


# ---- after training: provenance on save_model, the report --------------------------------------------


def test_save_model_after_training_records_how_the_model_was_chosen(data, tmp_path):
    trainer, callback = _train(data, tmp_path / "run", num_train_epochs=2, objective="recall_negative", held_out="holdout")
    final = tmp_path / "final"
    trainer.save_model(str(final))
    selection = json.loads((final / "trainer_ext_selection.json").read_text())
    board = callback.leaderboard
    assert selection["objective"]["metric"] == "recall_negative"
    assert json.dumps(selection).count(board["best_checkpoint"]) >= 1
    assert str(board["entries"][1]["checkpoint"]) in json.dumps(selection)  # the runner-up
    assert "61" in json.dumps(selection)  # the held-out set's size
    card = (final / "README.md").read_text()
    assert "How this checkpoint was chosen" in card and "recall_negative" in card
    assert (final / "model.safetensors").is_file()
    # the report of `trainer-ext report` is written at the end of training (matplotlib is in the dev extra)
    assert (tmp_path / "run" / "report" / "report.md").is_file()
    assert list((tmp_path / "run" / "report").glob("*.png"))


# ---- any sequence classifier, any number of classes; logs reach every integration --------------------


class _RecordLogs(TrainerCallback):
    """Stands where report_to integrations stand (before user callbacks): sees what they would see."""

    def __init__(self):
        self.logged = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logged.append(dict(logs or {}))


def test_three_class_encoder_model_and_logs_reach_integrations(data, tmp_path):
    """A BERT-style encoder with three classes: records cover every class and equal scikit-learn; the
    held-out metrics are delivered through on_log like the Trainer's own logs."""
    from sklearn.metrics import precision_recall_fscore_support
    from transformers import AutoConfig, AutoModelForSequenceClassification

    names = ["negative", "neutral", "positive"]
    three = data["holdout"].map(lambda row, i: {"labels": 1 if i % 5 == 0 else 2 * row["labels"]}, with_indices=True)
    train = data["train"].map(lambda row, i: {"labels": 1 if i % 5 == 0 else 2 * row["labels"]}, with_indices=True)
    config = AutoConfig.for_model(
        "bert", vocab_size=len(data["tokenizer"]), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, num_labels=3, pad_token_id=data["tokenizer"].pad_token_id,
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    recorder = _RecordLogs()
    callback = BestCheckpointCallback(three, "f1_macro")
    trainer = Trainer(
        model=model, args=_args(tmp_path, num_train_epochs=2, learning_rate=3e-3, logging_steps=5), train_dataset=train,
        processing_class=data["tokenizer"], callbacks=[recorder, callback],
    )
    trainer.train()
    for step in (10, 20):
        folder = tmp_path / f"checkpoint-{step}"
        record, scores = load_record(folder), load_scores(folder)
        assert record.labels == names and np.asarray(record.confusion_matrix).shape == (3, 3)
        p, r, f, s = precision_recall_fscore_support(scores["labels"], scores["predictions"], labels=[0, 1, 2], zero_division=0.0)
        for i, name in enumerate(names):
            assert record.metrics[f"recall_{name}"] == pytest.approx(r[i], abs=1e-12)
            assert record.metrics[f"support_{name}"] == s[i]
    delivered = [log for log in recorder.logged if "holdout_f1_macro" in log]
    assert [round(log["epoch"]) for log in delivered] == [1, 2]
    assert "holdout_roc_auc_neutral" in delivered[0] and "holdout_objective" in delivered[0]
    assert any("loss" in log for log in recorder.logged), "the Trainer's own logs still flow"
