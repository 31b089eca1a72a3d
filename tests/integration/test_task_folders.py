"""Issue 11's last gaps, on real output folders of each task.

* ``trainer-ext evaluate`` on pre-tokenized held-out data: token classification's ``input_ids`` with
  per-token ``labels`` (and words with one tag per word, as conll2003), and ``input_ids`` for any task;
* regression labels from a CSV (text cells) give the numbers of the same labels in JSON lines;
* the trackers' statistics tables are headed as each task lays its statistics out (read back with
  TensorBoard's ``EventAccumulator`` and MLflow's client); regression sends none and warns of nothing;
* ``require_significance`` with multi-label and token classification: the callback's leaderboard holds the
  paired comparison, and ``trainer-ext rank`` on the same folder gives the same leaderboard.

Module fixtures train each model once with the callback: a one-layer BERT tagger (examples/redact_pii.py),
a tiny multi-label Llama (examples/tag_support_tickets.py), a tiny Llama regressor. References: the
callback's own records of the same checkpoints, scikit-learn and seqeval on a fresh forward of the saved
checkpoints, and the trackers' own readers.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from redact_pii import TAGS as TOKEN_TAGS
from redact_pii import build as build_tagger
from redact_pii import make_sentences
from sklearn import metrics as sk
from synthetic_reviews import tiny_llama_classifier, train_tokenizer
from tag_support_tickets import TAGS, make_tickets, tiny_multi_label_model, tokenize_tickets
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
)

from trainer_ext import BestCheckpointCallback, Objective
from trainer_ext.cli import main
from trainer_ext.errors import TrainerExtWarning
from trainer_ext.records import load_record

seqeval_metrics = pytest.importorskip("seqeval.metrics")

RESAMPLES = 1000  # Objective's default, which trainer-ext rank uses too


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _args(out: Path, **overrides) -> TrainingArguments:
    base = dict(
        output_dir=str(out), per_device_train_batch_size=16, learning_rate=3e-3, eval_strategy="no",
        use_cpu=True, seed=0, disable_tqdm=True, logging_steps=1000,
    )
    return TrainingArguments(**{**base, **overrides})


def _train(base: Path, trainer_kwargs: dict, env: dict[str, str] | None = None):
    """Train (the callback and report_to are in ``trainer_kwargs``); TensorBoard logs under ``base/tb``.
    Returns the trainer and the TrainerExtWarnings of the run."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch.setenv("TENSORBOARD_LOGGING_DIR", str(base / "tb"))
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        trainer = Trainer(**trainer_kwargs)
        trainer.train()
    return trainer, [w for w in caught if issubclass(w.category, TrainerExtWarning)]


def _checkpoints(out: Path) -> list[str]:
    return sorted((p.name for p in out.glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))


def _board(folder: Path) -> dict:
    return json.loads((folder / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))


def _run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _record(folder: Path, checkpoint: str) -> dict:
    """A record as written, without what depends on the run's timing."""
    record = json.loads((folder / checkpoint / "checkpoint_metrics.json").read_text(encoding="utf-8"))
    record["evaluation"] = {k: v for k, v in record["evaluation"].items() if k not in ("seconds", "processes")}
    return record


def _measured_again(out: Path, dst: Path) -> Path:
    """A copy of the run whose records and scores are gone (evaluate must measure again); its leaderboard
    stays, so that evaluate ranks with the callback's objective (require_significance has no flag)."""
    shutil.copytree(out, dst)
    for path in [*dst.glob("checkpoint-*/checkpoint_metrics.json"), *dst.glob("checkpoint-*/checkpoint_scores.npz")]:
        path.unlink()
    return dst


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _text_events(base: Path):
    """The run's one TensorBoard log directory under ``base``: TENSORBOARD_LOGGING_DIR (``base/tb``) on
    transformers 5, ``args.logging_dir`` (under the output folder) on 4.x."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events_dir,) = {p.parent for p in base.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(events_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _statistics_text(base: Path, step: int) -> str:
    events = _text_events(base)
    tag = next(t for t in events.Tags()["tensors"] if t.startswith("holdout/confusion_matrix"))
    (event,) = events.Tensors(tag)
    assert event.step == step
    return event.tensor_proto.string_val[0].decode("utf-8")


def _row(name: str, values) -> str:
    return f"| {name} | " + " | ".join(str(int(v)) for v in values) + " |"


# ---- the runs -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    """The BERT tagger, 50 steps, a checkpoint every 10; objective f1_micro with require_significance."""
    base = tmp_path_factory.mktemp("token")
    tokenizer, model, train, held_out = build_tagger(320, 80)
    callback = BestCheckpointCallback(held_out, Objective("f1_micro", require_significance=True))
    args = _args(base / "out", max_steps=50, save_steps=10, save_strategy="steps", learning_rate=2e-3, report_to=["tensorboard"])
    trainer, caught = _train(base, dict(
        model=model, args=args, train_dataset=train, data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer, callbacks=[callback],
    ))
    assert not caught, [str(w.message) for w in caught]
    return SimpleNamespace(out=base / "out", tb=base, held_out=held_out, words=make_sentences(80, 1))


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory):
    """The multi-label Llama, 3 epochs; f1_macro with require_significance; TensorBoard, and MLflow when installed."""
    try:
        import mlflow
    except ImportError:
        mlflow = None
    base = tmp_path_factory.mktemp("multi_label")
    train_rows, eval_rows = make_tickets(320, seed=1), make_tickets(120, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows], vocab_size=300)
    holdout = tokenize_tickets(eval_rows, tokenizer)
    callback = BestCheckpointCallback(holdout, Objective("f1_macro", require_significance=True))
    uri = (base / "mlruns").as_uri()
    previous = mlflow.get_tracking_uri() if mlflow else None
    if mlflow:
        mlflow.set_tracking_uri(uri)  # MLflowCallback keeps a tracking URI that is already set
    try:
        report_to = ["tensorboard", "mlflow"] if mlflow else ["tensorboard"]
        args = _args(base / "out", num_train_epochs=3, save_strategy="epoch", report_to=report_to)
        trainer, caught = _train(base, dict(
            model=tiny_multi_label_model(tokenizer), args=args,
            train_dataset=tokenize_tickets(train_rows, tokenizer), processing_class=tokenizer, callbacks=[callback],
        ), env={
            "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "trainer_ext_tasks",
            # MLflow 3 refuses its file store unless asked (see test_trackers.py).
            "MLFLOW_ALLOW_FILE_STORE": "true",
        })
    finally:
        if mlflow:
            mlflow.set_tracking_uri(previous)
    assert not caught, [str(w.message) for w in caught]
    return SimpleNamespace(out=base / "out", tb=base, mlruns=uri, holdout=holdout, eval_rows=eval_rows)


_UP, _DOWN = "great love excellent".split(), "bad awful broken".split()
_FILL = "the phone battery screen it was and service a of".split()


def _scored_reviews(n: int, seed: int) -> list[dict]:
    """Review text whose target is 1.25 x (#good words - #bad words): a real number the model can learn."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        up, down = rng.randint(0, 3), rng.randint(0, 3)
        words = [rng.choice(_FILL) for _ in range(rng.randint(2, 6))] + rng.choices(_UP, k=up) + rng.choices(_DOWN, k=down)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": 1.25 * (up - down)})
    return rows


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    from datasets import Dataset

    base = tmp_path_factory.mktemp("regression")
    train_rows, eval_rows = _scored_reviews(240, 1), _scored_reviews(60, 2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows], vocab_size=200)

    def encode(rows):
        enc = tokenizer([r["text"] for r in rows])
        return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                  "labels": [r["label"] for r in rows]})

    callback = BestCheckpointCallback(encode(eval_rows), Objective("mae", bootstrap_resamples=100))
    trainer, caught = _train(base, dict(
        model=tiny_llama_classifier(tokenizer, num_labels=1, seed=0),
        args=_args(base / "out", num_train_epochs=2, save_strategy="epoch", report_to=["tensorboard"]),
        train_dataset=encode(train_rows), processing_class=tokenizer, callbacks=[callback],
    ))
    return SimpleNamespace(out=base / "out", tb=base, eval_rows=eval_rows, warnings=caught)


# ---- 1. evaluate on pre-tokenized data -------------------------------------------------------------------


@pytest.mark.parametrize("task_option", [("--task", "token"), ()], ids=["--task token", "from the config"])
def test_evaluate_token_on_input_ids_and_labels_equals_the_callback(token_run, tmp_path, capsys, task_option):
    data = _write_jsonl(tmp_path / "holdout.jsonl", token_run.held_out)  # input_ids, attention_mask, labels (-100)
    run = _measured_again(token_run.out, tmp_path / "run")
    status, out, err = _run(capsys, "evaluate", run, "--data", data, *task_option)
    assert status == 0, err
    for checkpoint in _checkpoints(token_run.out):
        assert _record(run, checkpoint) == _record(token_run.out, checkpoint), checkpoint
    assert _board(run) == _board(token_run.out)
    assert _board(run)["comparison"] is not None  # the callback's objective, require_significance included


def test_evaluate_token_on_words_and_tags_equals_the_callback(token_run, tmp_path, capsys):
    """conll2003's layout (``tokens`` and ``ner_tags``, tag names here): aligned to the first sub-word of
    each word, as the callback's held-out set was (redact_pii.tokenize_and_align), so the same records."""
    rows = [{"id": str(i), "tokens": r["words"], "ner_tags": r["tags"]} for i, r in enumerate(token_run.words)]
    data = _write_jsonl(tmp_path / "holdout.jsonl", rows)
    run = _measured_again(token_run.out, tmp_path / "run")
    status, _, err = _run(capsys, "evaluate", run, "--data", data, "--task", "token")
    assert status == 0, err
    for checkpoint in _checkpoints(token_run.out):
        ours, theirs = _record(run, checkpoint), _record(token_run.out, checkpoint)
        assert ours["metrics"] == theirs["metrics"] and ours["confusion_matrix"] == theirs["confusion_matrix"], checkpoint
        assert ours["eval_set"]["fingerprint"] == theirs["eval_set"]["fingerprint"]

    # seqeval on the words, from a fresh forward of the chosen checkpoint: its first sub-word's tag.
    best = _board(run)["best_checkpoint"]
    model = AutoModelForTokenClassification.from_pretrained(token_run.out / best).eval()
    y_true, y_pred = [], []
    with torch.no_grad():
        for row, encoded in zip(token_run.words, token_run.held_out):
            logits = model(input_ids=torch.tensor([encoded["input_ids"]])).logits[0].numpy()
            first = [j for j, tag in enumerate(encoded["labels"]) if tag != -100]
            y_true.append(row["tags"])
            y_pred.append([TOKEN_TAGS[int(np.argmax(logits[j]))] for j in first])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = seqeval_metrics.classification_report(y_true, y_pred, output_dict=True)
    metrics = load_record(run / best).metrics
    assert metrics["f1_micro"] == pytest.approx(report["micro avg"]["f1-score"], abs=1e-9)
    assert metrics["recall_per"] == pytest.approx(report["PER"]["recall"], abs=1e-9)


def test_evaluate_multi_label_on_input_ids_equals_the_callback(multi_label_run, tmp_path, capsys):
    """Pre-tokenized rows work for every task through the same path (here multi-label, float multi-hot)."""
    data = _write_jsonl(tmp_path / "holdout.jsonl", multi_label_run.holdout.to_list())
    run = _measured_again(multi_label_run.out, tmp_path / "run")
    status, _, err = _run(capsys, "evaluate", run, "--data", data)
    assert status == 0, err
    for checkpoint in _checkpoints(multi_label_run.out):
        assert _record(run, checkpoint) == _record(multi_label_run.out, checkpoint), checkpoint
    assert _board(run) == _board(multi_label_run.out)


def test_evaluate_without_text_or_input_ids_says_what_it_reads(token_run, tmp_path, capsys):
    run = _measured_again(token_run.out, tmp_path / "run")
    data = _write_jsonl(tmp_path / "holdout.jsonl", [{"sentence": "anna moved", "tags": [1, 0]}])
    status, out, err = _run(capsys, "evaluate", run, "--data", data, "--task", "token")
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert "holdout.jsonl has neither a text column ('text') nor pre-tokenized 'input_ids'" in err
    assert "(columns: sentence, tags)" in err and "--text-column" in err

    # input_ids that are not token ids (a CSV cell is text): the row is named.
    data = tmp_path / "holdout.csv"
    data.write_text('input_ids,labels\n"[2, 5, 3]","[-100, 1, -100]"\n', encoding="utf-8")
    status, _, err = _run(capsys, "evaluate", run, "--data", data, "--task", "token")
    assert status == 1 and "row 1 of holdout.csv has input_ids = '[2, 5, 3]'; expected a list of token ids" in err, err


# ---- 2. regression labels from a CSV --------------------------------------------------------------------


def test_evaluate_regression_csv_equals_jsonl(regression_run, tmp_path, capsys):
    csv_path, jsonl_path = tmp_path / "holdout.csv", tmp_path / "holdout.jsonl"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        for i, row in enumerate(regression_run.eval_rows):  # "3.75", " -2.5", "1.25e0": all text cells
            cell = repr(row["label"]) if i % 3 == 0 else f" {row['label']}" if i % 3 == 1 else f"{row['label']:e}"
            writer.writerow({"text": row["text"], "label": cell})
    _write_jsonl(jsonl_path, regression_run.eval_rows)
    runs = {}
    for name, data in (("csv", csv_path), ("jsonl", jsonl_path)):
        runs[name] = _measured_again(regression_run.out, tmp_path / name)
        status, _, err = _run(capsys, "evaluate", runs[name], "--data", data, "--objective", "rmse")
        assert status == 0, (name, err)
    for checkpoint in _checkpoints(regression_run.out):
        from_csv, from_jsonl = _record(runs["csv"], checkpoint), _record(runs["jsonl"], checkpoint)
        assert from_csv == from_jsonl, checkpoint
        assert from_csv["task"] == "regression" and from_csv["metrics"]["rmse"] > 0
    with np.load(runs["csv"] / checkpoint / "checkpoint_scores.npz") as saved:
        assert np.array_equal(saved["labels"], [r["label"] for r in regression_run.eval_rows])
    assert _board(runs["csv"]) == _board(runs["jsonl"])


def test_evaluate_regression_csv_names_a_cell_that_is_no_number(regression_run, tmp_path, capsys):
    data = tmp_path / "holdout.csv"
    rows = regression_run.eval_rows[:4]
    data.write_text("text,score\n" + "".join(f"{r['text']},{'n/a' if i == 2 else r['label']}\n" for i, r in enumerate(rows)))
    run = _measured_again(regression_run.out, tmp_path / "run")
    status, out, err = _run(capsys, "evaluate", run, "--data", data, "--label-column", "score")
    assert status == 1 and out == "" and err.count("\n") == 1, err
    assert "--label-column: row 3 of holdout.csv has 'n/a' in 'score'; a regression model needs one finite number per row" in err


# ---- 3. the trackers' tables, per task -------------------------------------------------------------------


def test_tensorboard_heads_multi_label_counts_per_label(multi_label_run):
    best = load_record(multi_label_run.out / _board(multi_label_run.out)["best_checkpoint"])
    text = _statistics_text(multi_label_run.tb, best.global_step)
    assert best.checkpoint in text and "true \\ predicted" not in text
    assert "| label | true negative | false positive | false negative | true positive |" in text
    assert best.confusion_matrix and len(best.labels) == len(TAGS)
    for label, ((tn, fp), (fn, tp)) in zip(best.labels, best.confusion_matrix):
        assert _row(label, [tn, fp, fn, tp]) in text


def test_mlflow_artifact_says_how_multi_label_counts_read(multi_label_run, tmp_path):
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient

    best = load_record(multi_label_run.out / _board(multi_label_run.out)["best_checkpoint"])
    client = MlflowClient(tracking_uri=multi_label_run.mlruns)
    (run,) = client.search_runs([client.get_experiment_by_name("trainer_ext_tasks").experiment_id])
    path = client.download_artifacts(run.info.run_id, "trainer_ext/holdout_confusion_matrix.json", str(tmp_path))
    payload = json.loads(Path(path).read_text())
    assert payload["task"] == "multi_label" and payload["matrix"] == best.confusion_matrix
    (table,) = payload["tables"]
    assert table["columns"] == ["true negative", "false positive", "false negative", "true positive"]
    assert table["index"] == best.labels
    assert table["data"] == [[tn, fp, fn, tp] for (tn, fp), (fn, tp) in best.confusion_matrix]


def test_tensorboard_heads_token_counts_per_entity_type(token_run):
    best = load_record(token_run.out / _board(token_run.out)["best_checkpoint"])
    text = _statistics_text(token_run.tb, best.global_step)
    assert "true \\ predicted" not in text
    assert "| entity type | true positive | false positive | false negative |" in text
    counts = best.confusion_matrix
    assert len(counts) == 3  # LOC, PER, then the tokens
    for entity, row in zip(["LOC", "PER"], counts):
        assert _row(entity, row) in text
    assert "|  | correct | wrong |" in text and _row("tokens", counts[-1][:2]) in text


def test_the_report_heads_each_tasks_counts_as_the_trackers_do(token_run, multi_label_run):
    """The report the callback wrote at the end of training (report/report.md) uses the same tables."""
    for run, header in (
        (multi_label_run, "| label | true negative | false positive | false negative | true positive |"),
        (token_run, "| entity type | true positive | false positive | false negative |"),
    ):
        best = load_record(run.out / _board(run.out)["best_checkpoint"])
        text = (run.out / "report" / "report.md").read_text(encoding="utf-8")
        assert header in text and "true \\ predicted" not in text
        first = best.confusion_matrix[0]
        assert _row(best.labels[0] if header.startswith("| label") else "LOC", np.ravel(first)) in text


def test_regression_sends_no_table_and_warns_of_nothing(regression_run):
    assert not regression_run.warnings, [str(w.message) for w in regression_run.warnings]
    events = _text_events(regression_run.tb)
    assert events.Scalars("train/holdout_mae"), "the run logged to TensorBoard"
    assert not [t for t in events.Tags()["tensors"] if "confusion_matrix" in t]


# ---- 4. require_significance: the callback and trainer-ext rank ------------------------------------------


def _comparison_checked(board: dict) -> dict:
    comparison = board["comparison"]
    ranking = [e["checkpoint"] for e in board["entries"] if e.get("saved", True)]
    assert comparison is not None and (comparison["first"], comparison["second"]) == (ranking[0], ranking[1])
    assert comparison["resamples"] == RESAMPLES and 0.0 <= comparison["win_share"] <= 1.0
    assert comparison["low"] <= comparison["high"]
    return comparison


def test_multi_label_require_significance_compares_in_the_callback_and_in_rank(multi_label_run, capsys):
    out = multi_label_run.out
    board = _board(out)
    comparison = _comparison_checked(board)
    # The difference is f1_macro(first) - f1_macro(second), scikit-learn on a fresh forward of each.
    y = np.asarray(multi_label_run.holdout["labels"], dtype=np.int64)
    f1 = {}
    for checkpoint in (comparison["first"], comparison["second"]):
        model = AutoModelForSequenceClassification.from_pretrained(out / checkpoint).eval()
        with torch.no_grad():
            logits = np.stack([model(input_ids=torch.tensor([row["input_ids"]])).logits[0].numpy() for row in multi_label_run.holdout])
        f1[checkpoint] = sk.f1_score(y, (1 / (1 + np.exp(-logits)) >= 0.5).astype(int), average="macro", zero_division=0)
    assert comparison["difference"] == pytest.approx(f1[comparison["first"]] - f1[comparison["second"]], abs=1e-9)

    status, text, err = _run(capsys, "rank", out, "--objective", "f1_macro", "--require-significance", "--format", "json")
    assert status == 0, err
    assert json.loads(text) == board  # the comparison from the saved predictions, the ranking with it


def test_token_require_significance_compares_in_the_callback_and_in_rank(token_run, capsys):
    board = _board(token_run.out)
    comparison = _comparison_checked(board)
    metrics = {e["checkpoint"]: e["metrics"] for e in board["entries"]}
    assert comparison["difference"] == pytest.approx(
        metrics[comparison["first"]]["f1_micro"] - metrics[comparison["second"]]["f1_micro"], abs=1e-12
    )
    status, text, err = _run(capsys, "rank", token_run.out, "--objective", "f1_micro", "--require-significance", "--format", "json")
    assert status == 0, err
    assert json.loads(text) == board


def test_rank_require_significance_needs_a_key_resampled_from_counts(multi_label_run, regression_run, tmp_path, capsys):
    status, out, err = _run(capsys, "rank", regression_run.out, "--objective", "mae", "--require-significance")
    assert status == 2 and out == "" and "require_significance: " in err and "'mae' is computed from scores" in err, err
    status, _, err = _run(capsys, "rank", multi_label_run.out, "--objective", "roc_auc_urgent", "--require-significance")
    assert status == 2 and "require_significance: " in err and "'roc_auc_urgent' is computed from scores" in err, err
    status, _, err = _run(capsys, "rank", multi_label_run.out, "--require-significance")
    assert status == 2 and "--objective" in err, err

    # A key the records hold but no count formula computes (a custom metric's): refused, not compared by value.
    run = tmp_path / "run"
    shutil.copytree(multi_label_run.out, run)
    for path in run.glob("checkpoint-*/checkpoint_metrics.json"):
        record = json.loads(path.read_text())
        record["metrics"]["tickets_routed"] = 0.5
        path.write_text(json.dumps(record))
    status, _, err = _run(capsys, "rank", run, "--objective", "tickets_routed", "--maximize", "--require-significance")
    assert status == 2 and err.count("\n") == 1, err
    assert "--require-significance: the paired bootstrap resamples the records' counts" in err and "'tickets_routed'" in err
