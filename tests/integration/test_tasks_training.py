"""Real Trainer runs for the multi-label and regression tasks (issue 11), on tiny Llama models built
from config that learn, so that checkpoints differ. Every metric in the records is recomputed with
scikit-learn / scipy from the saved checkpoints' own predictions (a fresh forward of each checkpoint)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as sk
from synthetic_reviews import tiny_llama_classifier, train_tokenizer
from tag_support_tickets import TAGS, make_tickets, tiny_multi_label_model, tokenize_tickets
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from trainer_ext import BestCheckpointCallback, ConfigurationError, Objective
from trainer_ext.records import load_record


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _args(out: Path, epochs: int = 3) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=16, per_device_eval_batch_size=32,
        learning_rate=3e-3, save_strategy="epoch", eval_strategy="no", report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True, logging_steps=1000,
    )


def _predict(folder: Path, dataset) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    outputs = []
    with torch.no_grad():
        for row in dataset:
            ids = torch.tensor([row["input_ids"]])
            outputs.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].numpy())
    return np.stack(outputs)


def _checkpoints(out: Path) -> list[Path]:
    return sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


# ---- multi-label --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tickets():
    train_rows, eval_rows = make_tickets(320, seed=1), make_tickets(120, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows], vocab_size=300)
    return tokenizer, tokenize_tickets(train_rows, tokenizer), tokenize_tickets(eval_rows, tokenizer)


@pytest.fixture(scope="module")
def multi_label_run(tickets, tmp_path_factory):
    tokenizer, train, holdout = tickets
    out = tmp_path_factory.mktemp("multi_label")
    callback = BestCheckpointCallback(holdout, Objective("f1_macro", tie_breakers=["hamming_loss"]))
    trainer = Trainer(model=tiny_multi_label_model(tokenizer), args=_args(out), train_dataset=train,
                      processing_class=tokenizer, callbacks=[callback])
    trainer.train()
    return out, trainer, holdout


def test_multi_label_records_equal_scikit_learn_and_best_is_loaded(multi_label_run):
    out, trainer, holdout = multi_label_run
    y = np.asarray(holdout["labels"], dtype=np.int64)
    board = json.loads((out / "checkpoint_leaderboard.json").read_text())
    values = {}
    for folder in _checkpoints(out):
        record = load_record(folder)
        assert record.task == "multi_label"
        probabilities = 1.0 / (1.0 + np.exp(-_predict(folder, holdout)))
        predictions = (probabilities >= 0.5).astype(np.int64)
        m = record.metrics
        assert m["f1_macro"] == pytest.approx(sk.f1_score(y, predictions, average="macro", zero_division=0), abs=1e-6)
        assert m["f1_micro"] == pytest.approx(sk.f1_score(y, predictions, average="micro", zero_division=0), abs=1e-6)
        assert m["f1_samples"] == pytest.approx(sk.f1_score(y, predictions, average="samples", zero_division=0), abs=1e-6)
        assert m["hamming_loss"] == pytest.approx(sk.hamming_loss(y, predictions), abs=1e-6)
        assert m["subset_accuracy"] == pytest.approx(sk.accuracy_score(y, predictions), abs=1e-6)
        assert m["roc_auc_urgent"] == pytest.approx(sk.roc_auc_score(y[:, 2], probabilities[:, 2]), abs=1e-4)
        assert record.confusion_matrix == sk.multilabel_confusion_matrix(y, predictions).tolist()
        values[folder.name] = m["f1_macro"]
    assert len(set(values.values())) > 1, "the checkpoints must differ for the choice to mean anything"
    best = max(values, key=lambda name: values[name])
    assert Path(board["best_checkpoint"]).name == best
    assert board.get("task", "multi_label") == "multi_label"
    loaded = trainer.model.state_dict()
    saved = AutoModelForSequenceClassification.from_pretrained(out / best).state_dict()
    assert all(torch.equal(loaded[k].cpu(), saved[k]) for k in saved)


def test_multi_label_estimate_is_written_and_rank_recomputes_it(multi_label_run, capsys):
    # The selection-corrected estimate resamples tickets through their per-label 2 x 2 counts (issue 15).
    from trainer_ext.cli import main

    out, _, _ = multi_label_run
    board = json.loads((out / "checkpoint_leaderboard.json").read_text())
    estimate = board["best_estimate"]
    assert estimate is not None, board["reason"]
    best = next(e for e in board["entries"] if e["checkpoint"] == board["best_checkpoint"])
    assert estimate["optimism"] == pytest.approx(best["objective_value"] - estimate["value"], abs=1e-12)
    assert estimate["low"] <= estimate["value"] <= estimate["high"]
    capsys.readouterr()
    assert main(["rank", str(out), "--objective", "f1_macro", "--tie-breaker", "hamming_loss", "--format", "json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked["best_checkpoint"] == board["best_checkpoint"] and ranked["best_estimate"] == estimate


def test_multi_label_per_label_thresholds_in_config(tickets, tmp_path):
    tokenizer, train, holdout = tickets
    callback = BestCheckpointCallback(holdout, Objective("recall_urgent", constraints=["precision_urgent >= 0.8"],
                                                         tune_threshold=True))
    Trainer(model=tiny_multi_label_model(tokenizer), args=_args(tmp_path, epochs=2), train_dataset=train,
            processing_class=tokenizer, callbacks=[callback]).train()
    y = np.asarray(holdout["labels"], dtype=np.int64)
    for folder in _checkpoints(tmp_path):
        setting = json.loads((folder / "config.json").read_text())["decision_threshold"]
        assert set(setting) == {"thresholds"} and set(setting["thresholds"]) == set(TAGS)
        probabilities = 1.0 / (1.0 + np.exp(-_predict(folder, holdout)))
        cut = np.array([setting["thresholds"][t] for t in TAGS])
        predictions = (probabilities >= cut).astype(np.int64)
        record = load_record(folder)
        assert record.metrics["recall_urgent"] == pytest.approx(sk.recall_score(y[:, 2], predictions[:, 2]), abs=1e-6)


def test_multi_label_bad_held_out_fails_before_training(tickets, tmp_path):
    tokenizer, train, holdout = tickets
    bad = holdout.map(lambda row, i: {"labels": [3.0, 0.0, 0.0, 0.0] if i == 0 else row["labels"]}, with_indices=True)
    callback = BestCheckpointCallback(bad, "f1_macro")
    trainer = Trainer(model=tiny_multi_label_model(tokenizer), args=_args(tmp_path), train_dataset=train,
                      processing_class=tokenizer, callbacks=[callback])
    with pytest.raises(ConfigurationError, match=r"eval_dataset: the model is multi-label with 4 labels .* labels\[0\]"):
        trainer.train()
    assert trainer.state.global_step == 0


# ---- regression ---------------------------------------------------------------------------------

_UP, _DOWN = "great love excellent".split(), "bad awful broken".split()
_FILL = "the phone battery screen it was and service a of".split()


def _scored_reviews(n: int, seed: int) -> list[dict]:
    """Review text whose target is (#good words - #bad words), a real number the model can learn."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        up, down = rng.randint(0, 3), rng.randint(0, 3)
        words = [rng.choice(_FILL) for _ in range(rng.randint(2, 6))] + rng.choices(_UP, k=up) + rng.choices(_DOWN, k=down)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": float(up - down)})
    return rows


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    from datasets import Dataset

    train_rows, eval_rows = _scored_reviews(320, 1), _scored_reviews(100, 2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows], vocab_size=200)

    def encode(rows):
        enc = tokenizer([r["text"] for r in rows])
        return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                  "labels": [r["label"] for r in rows]})

    holdout = encode(eval_rows)
    out = tmp_path_factory.mktemp("regression")
    model = tiny_llama_classifier(tokenizer, num_labels=1, seed=0)
    callback = BestCheckpointCallback(holdout, Objective("mae", bootstrap_resamples=100))
    trainer = Trainer(model=model, args=_args(out), train_dataset=encode(train_rows), processing_class=tokenizer,
                      callbacks=[callback])
    trainer.train()
    return out, trainer, holdout, tokenizer, encode


def test_regression_records_equal_scikit_learn_and_scipy(regression_run):
    out, trainer, holdout, _, _ = regression_run
    y = np.asarray(holdout["labels"], dtype=np.float64)
    maes = {}
    for folder in _checkpoints(out):
        record = load_record(folder)
        assert record.task == "regression"
        p = _predict(folder, holdout)[:, 0].astype(np.float64)
        m = record.metrics
        assert m["mae"] == pytest.approx(sk.mean_absolute_error(y, p), abs=1e-5)
        assert m["rmse"] == pytest.approx(sk.root_mean_squared_error(y, p), abs=1e-5)
        assert m["r2"] == pytest.approx(sk.r2_score(y, p), abs=1e-5)
        assert m["spearman"] == pytest.approx(stats.spearmanr(y, p)[0], abs=1e-5)
        assert m["pearson"] == pytest.approx(stats.pearsonr(y, p)[0], abs=1e-5)
        maes[folder.name] = m["mae"]
    assert len(set(maes.values())) > 1
    board = json.loads((out / "checkpoint_leaderboard.json").read_text())
    assert Path(board["best_checkpoint"]).name == min(maes, key=lambda k: maes[k])


def test_regression_leaderboard_says_why_it_has_no_estimate(regression_run):
    # Regression keys are computed from the rows, not from counts: no estimate, and the reason says so.
    out = regression_run[0]
    board = json.loads((out / "checkpoint_leaderboard.json").read_text())
    assert board["best_estimate"] is None
    assert "no selection-corrected estimate" in board["reason"] and board["objective"]["metric"] in board["reason"]


def test_regression_class_key_refused_before_training(regression_run, tmp_path):
    _, _, holdout, tokenizer, encode = regression_run
    callback = BestCheckpointCallback(holdout, "accuracy")
    trainer = Trainer(model=tiny_llama_classifier(tokenizer, num_labels=1), args=_args(tmp_path),
                      train_dataset=encode(_scored_reviews(32, 3)), processing_class=tokenizer, callbacks=[callback])
    with pytest.raises(ConfigurationError, match=r"Regression keys: \['mae'"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_report_draws_each_task_figures(multi_label_run, regression_run):
    from trainer_ext.report import write_report

    ml_report = write_report(multi_label_run[0])
    text = ml_report.read_text()
    assert "Per-label confusion matrices" in text and (ml_report.parent / "confusion_matrix.png").stat().st_size > 0
    reg_report = write_report(regression_run[0])
    text = reg_report.read_text()
    assert "Regression keys across checkpoints" in text
    assert "Residuals of" in text


def test_regression_saved_scores_keep_real_values(regression_run):
    from trainer_ext.records import load_scores

    out, _, holdout, _, _ = regression_run
    for folder in _checkpoints(out):
        if (folder / "checkpoint_scores.npz").is_file():
            saved = load_scores(folder)
            assert np.allclose(saved["labels"], np.asarray(holdout["labels"], dtype=np.float64))


def _cli_evaluate(folder: Path, rows: list[dict], tmp_path: Path, *extra: str) -> None:
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    data = tmp_path / "holdout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run(
        [sys.executable, "-m", "trainer_ext", "evaluate", str(copy), "--data", str(data), "--label-column", "labels", *extra],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return copy


@pytest.mark.parametrize("task_option", [(), ("--task", "multi_label")])
def test_cli_evaluate_multi_label_equals_the_callback(multi_label_run, tmp_path, task_option):
    out = multi_label_run[0]
    rows = [{"text": r["text"], "labels": [t for t, on in zip(TAGS, r["labels"]) if on]} for r in make_tickets(120, seed=2)]
    copy = _cli_evaluate(out, rows, tmp_path, *task_option)
    for folder in _checkpoints(out):
        trained, evaluated = load_record(folder), load_record(copy / folder.name)
        assert evaluated.task == "multi_label"
        assert evaluated.confusion_matrix == trained.confusion_matrix
        for key in ("f1_macro", "f1_samples", "hamming_loss", "roc_auc_urgent"):
            assert evaluated.metrics[key] == pytest.approx(trained.metrics[key], abs=1e-6)


def test_cli_evaluate_regression_equals_the_callback(regression_run, tmp_path):
    out = regression_run[0]
    copy = _cli_evaluate(out, [{"text": r["text"], "labels": r["label"]} for r in _scored_reviews(100, 2)], tmp_path,
                         "--task", "regression")
    for folder in _checkpoints(out):
        trained, evaluated = load_record(folder), load_record(copy / folder.name)
        assert evaluated.task == "regression"
        for key in ("mae", "rmse", "r2", "spearman"):
            assert evaluated.metrics[key] == pytest.approx(trained.metrics[key], abs=1e-5)
