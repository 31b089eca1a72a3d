"""The end-to-end example runs, as a user would run it, with reduced sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "route_negative_reviews.py"
TIMEOUT_SECONDS = 300


def _text(stream: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even when the run asked for text.
    if isinstance(stream, bytes):
        return stream.decode(errors="replace")
    return stream or ""


def _run_example(tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(EXAMPLE), "--output-dir", str(tmp_path), *arguments]
    env = {
        **os.environ,
        # The repo root first: trainer_ext imports without an install, too.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    try:
        completed = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(
            f"the example did not finish within {TIMEOUT_SECONDS} s.\n"
            f"stdout:\n{_text(error.stdout)[-3000:]}\nstderr:\n{_text(error.stderr)[-6000:]}"
        )
    assert completed.returncode == 0, (
        f"the example exited with {completed.returncode}.\n"
        f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-6000:]}"
    )
    return completed


def test_route_negative_reviews_runs_and_names_the_chosen_checkpoint(tmp_path):
    completed = _run_example(tmp_path, "--train-size", "200", "--eval-size", "101", "--epochs", "2")
    leaderboard_path = tmp_path / "checkpoint_leaderboard.json"
    assert leaderboard_path.is_file(), f"no {leaderboard_path.name}; files: {sorted(p.name for p in tmp_path.iterdir())}"
    leaderboard = json.loads(leaderboard_path.read_text(encoding="utf-8"))
    assert len(leaderboard["entries"]) == 2, leaderboard

    chosen = Path(str(leaderboard["best_checkpoint"])).name
    assert chosen.startswith("checkpoint-"), leaderboard["best_checkpoint"]
    last_line = completed.stdout.strip().splitlines()[-1]
    assert chosen in last_line, f"the closing sentence does not name {chosen}:\n{completed.stdout}"


def test_model_path_and_data_files_use_the_from_pretrained_path(tmp_path):
    """--model loads a saved model with from_pretrained (here one saved locally: no downloads), and
    --train-file / --eval-file read user data (CSV with string labels, JSONL with ids)."""
    sys.path.insert(0, str(REPO_ROOT / "examples"))
    from synthetic_reviews import keyword_reviews, tiny_llama_classifier, train_tokenizer

    train_rows, eval_rows = keyword_reviews(96, seed=1), keyword_reviews(41, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    model_dir = tmp_path / "pretrained"
    tiny_llama_classifier(tokenizer, seed=0).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    train_file = tmp_path / "train.csv"
    train_file.write_text(
        "text,label\n" + "".join(f"{r['text']},{['NEGATIVE', 'POSITIVE'][r['label']]}\n" for r in train_rows)
    )
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in eval_rows))
    out = tmp_path / "out"
    completed = _run_example(
        out, "--model", str(model_dir), "--train-file", str(train_file), "--eval-file", str(eval_file),
        "--epochs", "2", "--learning-rate", "3e-3",
    )
    board = json.loads((out / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))
    assert len(board["entries"]) == 2
    assert board["entries"][0]["metrics"]["support_negative"] == sum(r["label"] == 0 for r in eval_rows)
    assert Path(str(board["best_checkpoint"])).name in completed.stdout.strip().splitlines()[-1]


def test_tag_support_tickets_runs_and_stores_per_label_thresholds(tmp_path):
    """The multi-label example (issue 11) at its default size: about 40 s on one CPU thread."""
    import json
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "tag_support_tickets.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    board = json.loads((tmp_path / "checkpoint_leaderboard.json").read_text())
    assert f"business-best: {board['best_checkpoint']}" in done.stdout
    config = json.loads((tmp_path / board["best_checkpoint"] / "config.json").read_text())
    assert set(config["decision_threshold"]["thresholds"]) == {"BILLING", "BUG", "URGENT", "FEATURE_REQUEST"}
