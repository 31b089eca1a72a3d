"""Issue 12 point 2: after ``trainer.train()``, ``trainer.create_model_card()`` and ``trainer.push_to_hub()``
leave a card that says how the checkpoint was chosen and whose ``model-index`` holds the business-best's
held-out results.

Real Trainer runs on a tiny Llama classifier built from config. The card is read back with
huggingface_hub's own parser (``ModelCard.load``). ``push_to_hub`` runs for real up to the network: only
``HfApi.create_repo`` and ``HfApi.upload_folder`` (the two Hub calls the Trainer makes) are replaced, and
the test looks at the folder that would be uploaded, at the moment of the upload.

To make the test able to fail, the Trainer's own card must carry other results than ours: the Trainer
evaluates accuracy on the held-out set, while the callback ranks on the same set with every label flipped
(so the business-best is an early checkpoint while the Trainer's last evaluation is of the last one), and
the test checks first that the Trainer's own card did hold its results.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, RepoUrl
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from synthetic_reviews import keyword_reviews, tiny_llama_classifier, tokenize_reviews, train_tokenizer  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from trainer_ext import BestCheckpointCallback  # noqa: E402
from trainer_ext.provenance import PROVENANCE_FILENAME, SECTION_TITLE  # noqa: E402
from trainer_ext.records import load_record  # noqa: E402

CARD_ARGS = {"tasks": "text-classification", "dataset_tags": "imdb", "dataset": "imdb", "license": "apache-2.0"}


@pytest.fixture(scope="module")
def data():
    train_rows = keyword_reviews(160, seed=1)
    eval_rows = keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    holdout = tokenize_reviews(eval_rows, tokenizer)
    return {
        "tokenizer": tokenizer,
        "train": tokenize_reviews(train_rows, tokenizer),
        "holdout": holdout,
        "flipped": holdout.map(lambda row: {"labels": 1 - row["labels"]}),
    }


def _accuracy(prediction):
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def _trained(data, out: Path):
    callback = BestCheckpointCallback(eval_dataset=data["flipped"], objective="accuracy")
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0),
        args=TrainingArguments(
            output_dir=str(out), num_train_epochs=3, per_device_train_batch_size=16, per_device_eval_batch_size=16,
            learning_rate=3e-3, save_strategy="epoch", eval_strategy="epoch", report_to=[], use_cpu=True, seed=0,
            logging_steps=100, disable_tqdm=True,
        ),
        train_dataset=data["train"],
        eval_dataset=data["holdout"],
        processing_class=data["tokenizer"],
        compute_metrics=_accuracy,
        callbacks=[callback],
    )
    trainer.train()
    board = callback.leaderboard
    last = f"checkpoint-{trainer.state.global_step}"
    assert board["best_checkpoint"] != last, "the scenario must make the business-best an earlier checkpoint"
    return trainer, callback


def _finite(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}


def _assert_card_carries_the_choice(card: ModelCard, out: Path, best: str) -> None:
    record = load_record(out / best)
    assert card.text.count(SECTION_TITLE) == 1
    assert f"**{best}** (global step {record.global_step})" in card.text
    # the Trainer's card is kept around our section: its text and metadata
    assert "## Training procedure" in card.text and "### Training hyperparameters" in card.text
    assert "generated_from_trainer" in card.data.tags and card.data.library_name == "transformers"
    assert card.data.license == "apache-2.0" and card.data.datasets == ["imdb"]
    # model-index: only the business-best's held-out results, every finite key as named in the record
    results = card.data.eval_results
    assert {r.dataset_name for r in results} == {"holdout"} and {r.task_type for r in results} == {"text-classification"}
    assert {r.metric_type: r.metric_value for r in results} == pytest.approx(_finite(record.metrics))
    assert all(r.metric_name == r.metric_type for r in results)
    assert results[0].metric_type == "accuracy"  # the objective first
    assert json.loads((out / PROVENANCE_FILENAME).read_text())["chosen_checkpoint"] == best


def test_create_model_card_after_training_carries_the_business_best(data, tmp_path):
    trainer, callback = _trained(data, tmp_path)
    best = callback.leaderboard["best_checkpoint"]

    # What the Trainer alone writes: its last evaluation's accuracy, on the un-flipped set.
    trainer.create_model_card.__trainer_ext_original__(**CARD_ARGS)
    trainer_card = ModelCard.load(tmp_path / "README.md")
    last_eval = [h for h in trainer.state.log_history if "eval_accuracy" in h][-1]
    assert [(r.dataset_name, r.metric_type, r.metric_value) for r in trainer_card.data.eval_results] == [
        ("imdb", "accuracy", last_eval["eval_accuracy"])
    ]

    trainer.create_model_card(**CARD_ARGS)
    card = ModelCard.load(tmp_path / "README.md")
    _assert_card_carries_the_choice(card, tmp_path, best)
    assert card.data.model_name == trainer_card.data.model_name
    assert card.data.eval_results[0].metric_value != last_eval["eval_accuracy"]  # flipped labels: ours differ
    # the Trainer's own text (its last evaluation, its training-results table) is kept as it was
    assert card.text.startswith(trainer_card.text.rstrip("\n") + "\n\n" + SECTION_TITLE)

    trainer.create_model_card(**CARD_ARGS)  # again: the same card, one section
    assert ModelCard.load(tmp_path / "README.md").content == card.content


def test_push_to_hub_uploads_the_card_and_the_business_best_weights(data, tmp_path, monkeypatch):
    trainer, callback = _trained(data, tmp_path)
    best = callback.leaderboard["best_checkpoint"]
    uploads: list[dict] = []

    def create_repo(self, repo_id, **kwargs):
        return RepoUrl(f"https://huggingface.co/someone/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        uploads.append({
            "repo_id": repo_id,
            "ignore_patterns": list(ignore_patterns or []),
            "files": sorted(p.name for p in folder.iterdir()),
            "card": ModelCard.load(folder / "README.md"),
            "weights": load_file(str(folder / "model.safetensors")),
        })
        return "https://huggingface.co/someone/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    # transformers 4.x calls huggingface_hub's module-level create_repo / upload_folder, imported into
    # transformers.trainer as methods bound to a module-level HfApi: replace those names too.
    import transformers.trainer as trainer_module

    for name, replacement in (("create_repo", create_repo), ("upload_folder", upload_folder)):
        if hasattr(trainer_module, name):
            monkeypatch.setattr(trainer_module, name, lambda *a, _f=replacement, **k: _f(None, *a, **k))
    trainer.push_to_hub(**CARD_ARGS)

    (upload,) = uploads
    assert upload["repo_id"] == f"someone/{tmp_path.name}"
    assert "checkpoint-*" in upload["ignore_patterns"]  # the checkpoints stay local: the card must say it all
    assert {"README.md", "model.safetensors", PROVENANCE_FILENAME} <= set(upload["files"])
    _assert_card_carries_the_choice(upload["card"], tmp_path, best)
    # the uploaded weights are the checkpoint the card names
    chosen = load_file(str(tmp_path / best / "model.safetensors"))
    assert upload["weights"].keys() == chosen.keys()
    assert all(torch.equal(upload["weights"][k], chosen[k]) for k in chosen)
