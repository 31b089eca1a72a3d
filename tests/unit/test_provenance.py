"""trainer_ext.provenance.write_provenance: the selection JSON and the model card section of a saved model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer_ext.provenance import MODEL_CARD_FILENAME, PROVENANCE_FILENAME, SECTION_TITLE, write_provenance

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
             "feasible": True, "interval": iv if interval else None, "metrics": {"recall_negative": v}}
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
    assert card.startswith(SECTION_TITLE + "\n")
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
    assert once.startswith("---\nlicense: apache-2.0\n---\n\n# my-model\n\nIntro.\n\n" + SECTION_TITLE)
    assert "An old explanation" not in once and "detail of the old one" not in once
    assert once.count(SECTION_TITLE) == 1
    assert once.endswith("## Training procedure\n\nlr 3e-5\n")
    write_provenance(tmp_path, _payload(), HELD_OUT)
    assert card_path.read_text(encoding="utf-8") == once  # idempotent


def test_card_without_the_section_gets_it_appended(tmp_path):
    (tmp_path / MODEL_CARD_FILENAME).write_text("# my-model\n\nIntro.\n", encoding="utf-8")
    write_provenance(tmp_path, _payload(), HELD_OUT)
    card = (tmp_path / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
    assert card.startswith("# my-model\n\nIntro.\n\n" + SECTION_TITLE + "\n")


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
