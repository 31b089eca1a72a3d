"""trainer_ext.provenance: the selection JSON, and the model card (section and model-index) of a saved model.

Cards are read back with huggingface_hub's own parser (``ModelCard``) and YAML, and the Trainer's card is
made by transformers' own ``TrainingSummary``, so the tests do not check our writer against itself.
"""

from __future__ import annotations

import json
import subprocess
import sys

import math

import pytest
import yaml
from huggingface_hub import ModelCard

from trainer_ext.provenance import (
    MODEL_CARD_FILENAME,
    PROVENANCE_FILENAME,
    SECTION_TITLE,
    model_card_with_choice,
    write_provenance,
)

HELD_OUT = {"name": "holdout", "num_samples": 61, "fingerprint": "7c549e4d2732650d"}


def _payload(*, interval: bool = True, entries: int = 3) -> dict:
    rows = [
        ("checkpoint-20", 20, 0.9, {"low": 0.8, "high": 0.97, "confidence": 0.95, "value": 0.9, "resamples": 1000, "seed": 0}),
        ("checkpoint-30", 30, 0.85, {"low": 0.74, "high": 0.93, "confidence": 0.95, "value": 0.85, "resamples": 1000, "seed": 0}),
        ("checkpoint-10", 10, 0.8, None),
    ][:entries]
    return {
        "schema_version": 1,
        "objective": {
            "metric": "recall_negative", "greater_is_better": True,
            "constraints": ["precision_negative >= 0.8"], "tie_breakers": ["f1_negative"],
        },
        "best_checkpoint": "checkpoint-20",
        "reason": "checkpoint-20: highest recall_negative (0.9) among 2 of 3 checkpoints meeting precision_negative >= 0.8",
        "labels": ["NEGATIVE", "POSITIVE"],
        "entries": [
            {"rank": i + 1, "checkpoint": c, "global_step": s, "epoch": s / 10, "objective_value": v,
             "feasible": True, "interval": iv if interval else None,
             "metrics": {"accuracy": v - 0.05, "recall_negative": v, "precision_negative": 0.81, "f1_positive": 0.7}}
            for i, (c, s, v, iv) in enumerate(rows)
        ],
    }


def test_writes_selection_json_and_creates_the_model_card(tmp_path):
    path = write_provenance(tmp_path / "model", _payload(), HELD_OUT)
    assert path == tmp_path / "model" / PROVENANCE_FILENAME
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema_version"] == 1
    assert data["chosen_checkpoint"] == "checkpoint-20" and data["global_step"] == 20
    assert data["objective"]["metric"] == "recall_negative"
    assert data["objective"]["constraints"] == ["precision_negative >= 0.8"]
    assert data["objective_value"] == 0.9 and data["interval"]["low"] == 0.8
    assert data["held_out"] == [HELD_OUT]
    assert data["runner_up"]["checkpoint"] == "checkpoint-30" and data["runner_up"]["objective_value"] == 0.85
    assert data["checkpoints_evaluated"] == 3

    card = (tmp_path / "model" / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
    assert ModelCard(card).text.startswith(SECTION_TITLE + "\n")
    assert "**checkpoint-20** (global step 20)" in card
    assert "- Objective: `recall_negative` (higher is better)" in card
    assert "- Constraints: `precision_negative >= 0.8`" in card
    assert "- Objective value: 0.9000 (95% bootstrap interval 0.8000 to 0.9700)" in card
    assert "- Held-out set 'holdout': 61 examples, fingerprint `7c549e4d2732650d`" in card
    assert "- Runner-up: checkpoint-30 (global step 30), recall_negative = 0.8500 (95% bootstrap interval" in card


def test_without_interval_the_value_stands_alone(tmp_path):
    write_provenance(tmp_path, _payload(interval=False), HELD_OUT)
    card = (tmp_path / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
    assert "- Objective value: 0.9000\n" in card
    assert "bootstrap" not in card
    assert json.loads((tmp_path / PROVENANCE_FILENAME).read_text())["interval"] is None


def test_existing_card_keeps_its_other_sections_and_the_section_is_replaced(tmp_path):
    card_path = tmp_path / MODEL_CARD_FILENAME
    card_path.write_text(
        "---\nlicense: apache-2.0\n---\n\n# my-model\n\nIntro.\n\n"
        f"{SECTION_TITLE}\n\nAn old explanation.\n\n### detail of the old one\n\nmore\n\n"
        "## Training procedure\n\nlr 3e-5\n",
        encoding="utf-8",
    )
    write_provenance(tmp_path, _payload(), HELD_OUT)
    once = card_path.read_text(encoding="utf-8")
    parsed = ModelCard(once)
    assert parsed.data.license == "apache-2.0"
    assert parsed.text.startswith("\n# my-model\n\nIntro.\n\n" + SECTION_TITLE)
    assert "An old explanation" not in once and "detail of the old one" not in once
    assert once.count(SECTION_TITLE) == 1
    assert once.endswith("## Training procedure\n\nlr 3e-5\n")
    write_provenance(tmp_path, _payload(), HELD_OUT)
    assert card_path.read_text(encoding="utf-8") == once  # idempotent


def test_card_without_the_section_gets_it_appended(tmp_path):
    (tmp_path / MODEL_CARD_FILENAME).write_text("# my-model\n\nIntro.\n", encoding="utf-8")
    write_provenance(tmp_path, _payload(), HELD_OUT)
    card = (tmp_path / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
    assert ModelCard(card).text.startswith("# my-model\n\nIntro.\n\n" + SECTION_TITLE + "\n")


def test_single_checkpoint_has_no_runner_up_and_several_sets_are_listed(tmp_path):
    sets = [{"name": "reviews_2024", "num_samples": 100, "fingerprint": "aaaa"},
            {"name": "reviews_2025", "num_samples": 50, "fingerprint": "bbbb"}]
    write_provenance(tmp_path, _payload(entries=1), sets)
    data = json.loads((tmp_path / PROVENANCE_FILENAME).read_text())
    assert data["runner_up"] is None and data["held_out"] == sets
    card = (tmp_path / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
    assert "- Runner-up: none (one checkpoint was evaluated)" in card
    assert "'reviews_2024': 100 examples" in card and "'reviews_2025': 50 examples" in card


def test_no_best_checkpoint_is_refused(tmp_path):
    payload = _payload()
    payload["best_checkpoint"] = None
    with pytest.raises(ValueError, match="leaderboard_payload: no best checkpoint"):
        write_provenance(tmp_path, payload, HELD_OUT)
    assert not list(tmp_path.iterdir())


def test_provenance_is_pure():
    code = "import sys, trainer_ext.provenance; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


# ---- the card's metadata: model-index holds the chosen checkpoint's held-out results ------------------


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def _record(payload: dict, checkpoint: str = "checkpoint-20", **eval_set) -> dict:
    entry = next(e for e in payload["entries"] if e["checkpoint"] == checkpoint)
    return {"checkpoint": checkpoint, "global_step": entry["global_step"], "metrics": dict(entry["metrics"]),
            "eval_set": eval_set or dict(HELD_OUT)}


def _trainer_card() -> str:
    """What Trainer.create_model_card writes: transformers' own TrainingSummary, with its last evaluation."""
    from transformers.modelcard import TrainingSummary

    summary = TrainingSummary(
        model_name="run-42", license="apache-2.0", tags=["generated_from_trainer"], finetuned_from="org/base",
        tasks="text-classification", dataset="imdb", dataset_tags="imdb",
        eval_results={"Loss": 0.61, "Accuracy": 0.5},
        eval_lines=[{"Training Loss": 0.7, "Epoch": 1.0, "Step": 10, "Validation Loss": 0.61, "Accuracy": 0.5}],
        hyperparameters={"learning_rate": 0.003, "seed": 0},
    )
    return summary.to_model_card()


def test_written_card_has_a_model_index_with_every_key_of_the_best_objective_first(tmp_path):
    write_provenance(tmp_path / "my-run", _payload(), HELD_OUT)
    card = (tmp_path / "my-run" / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
    index = _front_matter(card)["model-index"]
    assert [i["name"] for i in index] == ["my-run"]  # a folder without a card: named after the folder
    (result,) = index[0]["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"] == {"name": "holdout", "type": "holdout"}
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    assert metrics == _payload()["entries"][0]["metrics"]
    assert result["metrics"][0]["type"] == "recall_negative"  # the objective first
    assert all(m["name"] == m["type"] for m in result["metrics"])  # named as in our records
    # huggingface_hub reads the same results back
    results = ModelCard(card).data.eval_results
    assert {r.metric_type: r.metric_value for r in results} == metrics
    assert "| `recall_negative` (objective) | 0.9000 |" in card and "| `f1_positive` | 0.7000 |" in card


def test_trainer_card_keeps_its_metadata_and_text_and_its_results_are_replaced_by_the_best():
    trainer_card = _trainer_card()
    trainer_meta = _front_matter(trainer_card)
    assert trainer_meta["model-index"][0]["results"][0]["metrics"][0]["type"] == "accuracy"  # the Trainer's last eval
    payload = _payload()
    card = model_card_with_choice(trainer_card, payload, _record(payload))
    meta = _front_matter(card)
    for key in ("library_name", "license", "base_model", "tags", "datasets"):
        assert meta[key] == trainer_meta[key], key
    (index,) = meta["model-index"]
    assert index["name"] == "run-42"  # the Trainer's model name is kept
    (result,) = index["results"]
    assert result["task"]["type"] == "text-classification"
    assert {m["type"]: m["value"] for m in result["metrics"]} == payload["entries"][0]["metrics"]
    assert result["dataset"]["name"] == "holdout"  # our held-out set, not the Trainer's eval set
    text = ModelCard(card).text
    trainer_text = ModelCard(trainer_card).text
    assert text.startswith(trainer_text.rstrip("\n") + "\n\n" + SECTION_TITLE + "\n")  # the Trainer's text kept as it was
    assert text.count(SECTION_TITLE) == 1
    assert model_card_with_choice(card, payload, _record(payload)) == card  # idempotent


def test_new_choice_replaces_the_previous_one_in_section_and_model_index():
    payload = _payload()
    first = model_card_with_choice(_trainer_card(), payload, _record(payload))
    payload["best_checkpoint"] = "checkpoint-30"
    payload["entries"][1]["metrics"] = {"recall_negative": 0.85, "accuracy": 0.6}
    second = model_card_with_choice(first, payload, _record(payload, "checkpoint-30"))
    assert second.count(SECTION_TITLE) == 1 and "**checkpoint-30**" in second and "**checkpoint-20**" not in second
    (result,) = _front_matter(second)["model-index"][0]["results"]
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"recall_negative": 0.85, "accuracy": 0.6}


def test_non_finite_values_are_left_out_and_an_objective_outside_the_keys_is_added():
    payload = _payload()
    payload["objective"]["metric"] = "expected_cost"
    payload["objective"]["greater_is_better"] = False
    payload["entries"][0]["objective_value"] = 0.25
    record = _record(payload)
    record["metrics"].update({"roc_auc_negative": None, "log_loss": math.nan, "mcc": math.inf})
    card = model_card_with_choice(None, payload, record, default_model_name="m")
    (result,) = _front_matter(card)["model-index"][0]["results"]
    assert [m["type"] for m in result["metrics"]] == [
        "expected_cost", "accuracy", "recall_negative", "precision_negative", "f1_positive"
    ]
    assert result["metrics"][0]["value"] == 0.25
    assert _front_matter(card)["model-index"][0]["name"] == "m"


def test_several_held_out_sets_name_the_dataset_after_all_of_them():
    payload = _payload()
    sets = {"reviews_2024": {"num_samples": 100, "fingerprint": "aaaa"},
            "reviews_2025": {"num_samples": 50, "fingerprint": "bbbb"}}
    record = _record(payload, name="holdout", num_samples=150, fingerprint="aaaa+bbbb", sets=sets)
    card = model_card_with_choice("", payload, record)
    (result,) = _front_matter(card)["model-index"][0]["results"]
    assert result["dataset"]["name"] == "reviews_2024+reviews_2025"
    assert "- Held-out set 'reviews_2024': 100 examples, fingerprint `aaaa`" in card
    assert "- Held-out set 'reviews_2025': 50 examples, fingerprint `bbbb`" in card


def test_a_malformed_model_index_is_replaced():
    broken = "---\nlicense: mit\nmodel-index:\n- name: x\n  results:\n  - task: 3\n---\n# x\n"
    payload = _payload()
    card = model_card_with_choice(broken, payload, _record(payload))
    meta = _front_matter(card)
    assert meta["license"] == "mit"
    assert meta["model-index"][0]["results"][0]["metrics"][0]["type"] == "recall_negative"


def test_a_record_that_is_not_the_best_is_refused():
    payload = _payload()
    with pytest.raises(ValueError, match="best_record: is the record of 'checkpoint-30'.*'checkpoint-20'"):
        model_card_with_choice(None, payload, _record(payload, "checkpoint-30"))
    payload["best_checkpoint"] = None
    with pytest.raises(ValueError, match="leaderboard_payload: no best checkpoint"):
        model_card_with_choice(None, payload, _record(_payload()))
