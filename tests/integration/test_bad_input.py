"""One test per bad input: a clear error naming the argument, raised at construction or at
``on_train_begin`` (before the first training step), and nothing half-written on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from synthetic_reviews import make_reviews, tiny_llama_classifier, tokenize_reviews, train_tokenizer  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from trainer_ext import BestCheckpointCallback, ConfigurationError, Objective, TrainerExtWarning  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    rows = make_reviews(48, seed=3)
    tokenizer = train_tokenizer([r["text"] for r in rows])
    return {"tokenizer": tokenizer, "rows": rows, "features": tokenize_reviews(rows, tokenizer)}


def _train_begin(setup, tmp_path, callback, model=None):
    """Run a real Trainer until the callback refuses; return the trainer for disk/step checks."""
    trainer = Trainer(
        model=model or tiny_llama_classifier(setup["tokenizer"]),
        args=TrainingArguments(
            str(tmp_path), num_train_epochs=1, per_device_train_batch_size=8, save_strategy="epoch",
            report_to=[], use_cpu=True, disable_tqdm=True,
        ),
        train_dataset=setup["features"],
        processing_class=setup["tokenizer"],
        callbacks=[callback],
    )
    return trainer


def _assert_nothing_happened(trainer, tmp_path):
    assert trainer.state.global_step == 0
    assert not list(tmp_path.glob("checkpoint-*"))
    assert not list(tmp_path.glob("checkpoint_leaderboard*"))


# ---- at construction ------------------------------------------------------------------------------


def test_malformed_constraint(setup):
    with pytest.raises(ConfigurationError, match=r"constraints: cannot parse 'precision_negative => 0.8'.*>="):
        BestCheckpointCallback(setup["features"], Objective("recall_negative", constraints=["precision_negative => 0.8"]))


def test_custom_key_without_direction(setup):
    with pytest.raises(ConfigurationError, match=r"greater_is_better: 'my_metric' is not a built-in metric key"):
        BestCheckpointCallback(setup["features"], "my_metric")


def test_empty_held_out_set(setup):
    with pytest.raises(ConfigurationError, match="eval_dataset: the held-out set is empty"):
        BestCheckpointCallback(setup["features"].select([]), "recall_negative")


def test_held_out_without_labels(setup):
    with pytest.raises(ConfigurationError, match=r"eval_dataset: the held-out set has no 'labels' or 'label' column.*input_ids"):
        BestCheckpointCallback(setup["features"].remove_columns("labels"), "recall_negative")


def test_objective_of_wrong_type(setup):
    with pytest.raises(ConfigurationError, match=r"objective: expected a metric key \(str\).*got 3"):
        BestCheckpointCallback(setup["features"], 3)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size(setup, batch_size):
    with pytest.raises(ConfigurationError, match="batch_size: expected a positive int or None"):
        BestCheckpointCallback(setup["features"], "recall_negative", batch_size=batch_size)


def test_bad_name(setup):
    with pytest.raises(ConfigurationError, match="name: expected letters, digits and '_'"):
        BestCheckpointCallback(setup["features"], "recall_negative", name="hold out")


def test_label_names_collide(setup):
    with pytest.raises(ValueError, match="Negative"):
        BestCheckpointCallback(setup["features"], "recall_negative", label_names=["Negative", "NEGATIVE"])


# ---- at on_train_begin, before the first step -----------------------------------------------------


def test_unknown_metric_key_lists_available(setup, tmp_path):
    trainer = _train_begin(setup, tmp_path, BestCheckpointCallback(setup["features"], "recall_neutral"))
    with pytest.raises(ConfigurationError, match=r"unknown metric key\(s\) \['recall_neutral'\].*'recall_negative'.*'recall_positive'"):
        trainer.train()
    _assert_nothing_happened(trainer, tmp_path)


def test_unknown_class_in_constraint(setup, tmp_path):
    objective = Objective("recall_negative", constraints=["precision_neutral >= 0.5"])
    trainer = _train_begin(setup, tmp_path, BestCheckpointCallback(setup["features"], objective))
    with pytest.raises(ConfigurationError, match=r"\['precision_neutral'\]"):
        trainer.train()
    _assert_nothing_happened(trainer, tmp_path)


def test_labels_outside_model_classes(setup, tmp_path):
    bad = setup["features"].map(lambda row, i: {"labels": 7 if i == 3 else row["labels"]}, with_indices=True)
    trainer = _train_begin(setup, tmp_path, BestCheckpointCallback(bad, "recall_negative"))
    with pytest.raises(ConfigurationError, match=r"eval_dataset: 1 label\(s\) are outside the model's classes, e.g. 7.*0\.\.1"):
        trainer.train()
    _assert_nothing_happened(trainer, tmp_path)


def test_raw_text_without_tokenizer(setup, tmp_path):
    raw = Dataset.from_list(setup["rows"])
    trainer = Trainer(
        model=tiny_llama_classifier(setup["tokenizer"]),
        args=TrainingArguments(str(tmp_path), num_train_epochs=1, report_to=[], use_cpu=True, disable_tqdm=True),
        train_dataset=setup["features"],
        data_collator=None,
        callbacks=[BestCheckpointCallback(raw, "recall_negative")],
    )
    with pytest.raises(ConfigurationError, match="raw text .* no tokenizer"):
        trainer.train()
    _assert_nothing_happened(trainer, tmp_path)


class _ClassIdsOnly(torch.nn.Module):
    """A classifier that returns predicted class ids, no scores."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids=None, attention_mask=None, labels=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)


def test_score_key_when_model_gives_no_scores(setup, tmp_path):
    model = _ClassIdsOnly(tiny_llama_classifier(setup["tokenizer"]))
    trainer = _train_begin(setup, tmp_path, BestCheckpointCallback(setup["features"], "roc_auc_negative"), model=model)
    with pytest.raises(ConfigurationError, match=r"\['roc_auc_negative'\] need the model's scores.*'recall_negative'"):
        trainer.train()
    _assert_nothing_happened(trainer, tmp_path)


def test_model_with_wrong_number_of_labels(setup, tmp_path):
    model = tiny_llama_classifier(setup["tokenizer"], num_labels=3)
    callback = BestCheckpointCallback(setup["features"], "recall_negative", label_names=["NEGATIVE", "POSITIVE"])
    trainer = _train_begin(setup, tmp_path, callback, model=model)
    with pytest.raises(ConfigurationError, match=r"logits have shape \(1, 3\), expected \[batch, 2\]"):
        trainer.train()
    _assert_nothing_happened(trainer, tmp_path)


# ---- inputs that are not errors --------------------------------------------------------------------


def test_raw_text_is_tokenized_with_the_processing_class(setup, tmp_path):
    """Raw text + labels gives exactly the metrics of the same set tokenized by hand."""
    raw = Dataset.from_list([{"text": r["text"], "label": r["label"]} for r in setup["rows"]])
    results = {}
    for name, dataset in (("raw", raw), ("features", setup["features"])):
        callback = BestCheckpointCallback(dataset, "recall_negative")
        trainer = _train_begin(setup, tmp_path / name, callback, model=tiny_llama_classifier(setup["tokenizer"], seed=0))
        trainer.train()
        results[name] = callback.leaderboard["entries"][0]["metrics"]
    assert results["raw"] == results["features"]


def test_string_labels_are_mapped_by_class_name(setup, tmp_path):
    named = setup["features"].map(lambda row: {"label_name": ["NEGATIVE", "POSITIVE"][row["labels"]]})
    named = named.remove_columns("labels").rename_column("label_name", "label")
    callback = BestCheckpointCallback(named, "recall_negative")
    _train_begin(setup, tmp_path, callback).train()
    entry = callback.leaderboard["entries"][0]
    assert entry["metrics"]["support_negative"] == sum(r["label"] == 0 for r in setup["rows"])


# ---- data problems that warn (TrainerExtWarning) instead of stopping a run ---------------------------


class _PoisonAtEpoch(TrainerCallback):
    """Placed before BestCheckpointCallback: from the given epoch on, the classifier's weights are NaN."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if round(state.epoch) >= self.epoch:
            with torch.no_grad():
                model.score.weight.fill_(float("nan"))


def test_nan_scores_from_the_model_warn_and_are_never_best(setup, tmp_path):
    callback = BestCheckpointCallback(setup["features"], "recall_negative")
    trainer = _train_begin(setup, tmp_path, callback)
    trainer.args.num_train_epochs = 2
    trainer.add_callback(_PoisonAtEpoch(2))
    trainer.callback_handler.callbacks.remove(callback)
    trainer.callback_handler.callbacks.append(callback)  # poison first, then our evaluation
    with pytest.warns(TrainerExtWarning, match=r"checkpoint-12 the model gave NaN scores for 48 held-out"):
        trainer.train()
    entries = {e["checkpoint"]: e for e in callback.leaderboard["entries"]}
    assert entries["checkpoint-12"]["objective_value"] is None
    assert callback.leaderboard["best_checkpoint"] == "checkpoint-6"


def test_label_names_that_differ_from_the_model_warn(setup, tmp_path):
    callback = BestCheckpointCallback(setup["features"], "recall_neg", label_names=["POS", "NEG"])
    trainer = _train_begin(setup, tmp_path, callback)
    with pytest.warns(TrainerExtWarning, match=r"label_names=\['POS', 'NEG'\] differ from the model's id2label"):
        trainer.train()


def test_constraint_never_met_warns_at_the_end(setup, tmp_path):
    objective = Objective("recall_negative", constraints=["accuracy >= 1.01"])
    trainer = _train_begin(setup, tmp_path, BestCheckpointCallback(setup["features"], objective))
    with pytest.warns(TrainerExtWarning, match=r"no checkpoint met \['accuracy >= 1.01'\]; checkpoint-6 was chosen by on_infeasible='least_violation'"):
        trainer.train()
