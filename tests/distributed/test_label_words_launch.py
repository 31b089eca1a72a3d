"""Label words under 2 processes equal 1 process (issue 11): a tiny LlamaForCausalLM trained with the
callback (``task=LabelWords(...)``, objective recall_negative) under a real 2-process accelerate launch on
CPU, against the same training run on 1 process.

The two runs are the same run (worker_label_words.py says why: the same two batches per optimizer
step, accumulated on 1 process, one per rank on 2), so the weights of every checkpoint are expected bit
for bit equal, and with them every number the callback writes. Measured here: largest weight
difference 0.0 at every save, leaderboards and records equal exactly (only the record's
``evaluation.processes`` and ``evaluation.seconds`` differ, by design). Checked:

* the leaderboard (every key, the objective value, rank, interval, the chosen best, the reason) and
  every checkpoint's record and saved scores equal 1 process's: ``test_two_processes_equal_one``;
* every rank reaches the same decision, the one on disk: ``test_every_rank_reaches_the_same_decision``;
* every held-out example is counted once at each save: ``test_each_example_is_counted_once``;
* only the global main process writes: ``test_only_the_global_main_process_writes``;
* the chosen checkpoint (not the last save) is what every rank holds at the end:
  ``test_the_best_is_loaded_at_the_end``.

Once with one-token labels (every class read from one logit row) and once with a 4-token label text
(the continuation scored on the prompt's KV cache).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from test_launch import HERE, WORLD, check_each_example_once, check_only_the_global_main_writes, read_writes, run_on_one_and_world

WORKER = HERE / "worker_label_words.py"

LABEL_WORDS = {
    "one_token": ({"NEGATIVE": " negative", "POSITIVE": " positive"}, [1, 1]),
    "multi_token": ({"NEGATIVE": " not positive at all", "POSITIVE": " positive"}, [4, 1]),
}


@dataclass
class Side:
    """What one run (1 process or WORLD) left: per-rank reports, the board on disk, the checkpoints."""

    out: Path
    ranks: list[dict]
    board: dict
    checkpoints: list[Path]  # in step order

    @property
    def run_dir(self) -> Path:
        return self.out / "run"

    def record(self, checkpoint: str) -> dict:
        return json.loads((self.run_dir / checkpoint / "checkpoint_metrics.json").read_text(encoding="utf-8"))


def _side(out: Path, processes: int) -> Side:
    ranks = [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(processes)]
    board = json.loads((out / "run" / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))
    checkpoints = sorted((out / "run").glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return Side(out, ranks, board, checkpoints)


@pytest.fixture(scope="module", params=list(LABEL_WORDS))
def runs(request, tmp_path_factory) -> tuple[Side, Side]:
    """The same label-words training run on 1 process and on WORLD processes, one tokenizer for both."""
    from route_reviews_with_llm import label_words_tokenizer

    import worker_label_words

    label_words, lengths = LABEL_WORDS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    train, _ = worker_label_words.reviews(worker_label_words.TRAIN_SIZE, worker_label_words.EVAL_SIZE)
    tokenizer = label_words_tokenizer(train, label_words)
    tokenizer.save_pretrained(folder / "tokenizer")
    assert [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in label_words.values()] == lengths
    arguments = [str(WORKER), "--tokenizer", str(folder / "tokenizer"), "--label-words", json.dumps(label_words)]
    one, two = run_on_one_and_world(arguments, folder, out="{}")
    return _side(one, 1), _side(two, WORLD)


def _weights(checkpoint: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(checkpoint / "model.safetensors"))


def _largest_gap(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) for k in a)


def test_two_processes_equal_one(runs):
    single, double = runs
    assert single.ranks[0]["world_size"] == single.ranks[0]["trainer_world_size"] == 1
    for report in double.ranks:
        assert report["world_size"] == report["trainer_world_size"] == report["launcher_world_size"] == WORLD, report
    names = [c.name for c in single.checkpoints]
    assert names == [c.name for c in double.checkpoints] and len(names) == 5, names
    gaps = {c.name: _largest_gap(_weights(c), _weights(double.run_dir / c.name)) for c in single.checkpoints}

    # A real comparison: the checkpoints differ, and the objective moves from save to save.
    entries = single.board["entries"]
    assert len({round(e["metrics"]["log_loss"], 6) for e in entries}) == len(entries), entries
    assert len({e["metrics"]["recall_negative"] for e in entries}) > 2, entries

    # Exactly equal (measured: weight gap 0.0 at every save); the gaps are shown if not.
    assert double.board == single.board, f"leaderboards differ; largest weight difference per save: {gaps}"
    for name in names:
        one, two = single.record(name), double.record(name)
        assert (one["evaluation"].pop("processes"), two["evaluation"].pop("processes")) == (1, WORLD)
        one["evaluation"].pop("seconds"), two["evaluation"].pop("seconds")
        assert two == one, f"{name}: records differ; largest weight difference per save: {gaps}"
        with np.load(single.run_dir / name / "checkpoint_scores.npz") as a, np.load(double.run_dir / name / "checkpoint_scores.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), (name, key)
    assert gaps == dict.fromkeys(names, 0.0), gaps


def test_every_rank_reaches_the_same_decision(runs):
    _, double = runs
    fields = ("best_model_checkpoint", "best_metric", "best_global_step", "board")
    decisions = [{k: report[k] for k in fields} for report in double.ranks]
    assert all(d == decisions[0] for d in decisions), "ranks disagree"
    assert decisions[0]["board"] == double.board  # what every rank holds is what rank 0 wrote
    assert decisions[0]["best_model_checkpoint"] == str(double.run_dir / double.board["best_checkpoint"])
    assert decisions[0]["best_metric"] == double.board["entries"][0]["objective_value"]


def test_each_example_is_counted_once(runs):
    _, double = runs
    import worker_label_words

    check_each_example_once([r["shards"] for r in double.ranks], worker_label_words.EVAL_SIZE, double.checkpoints)


def test_only_the_global_main_process_writes(runs):
    _, double = runs
    check_only_the_global_main_writes(read_writes(double.out), double.run_dir, double.checkpoints)


def test_the_best_is_loaded_at_the_end(runs):
    for side in runs:
        best = side.board["best_checkpoint"]
        assert best != side.checkpoints[-1].name, "the last save is the best: loading it would prove nothing"
        assert _largest_gap(_weights(side.run_dir / best), _weights(side.checkpoints[-1])) > 0
        for report in side.ranks:
            assert report["best_model_checkpoint"] == str(side.run_dir / best)
            loaded = report["loaded"]
            assert loaded["only_in_model"] == loaded["only_in_file"] == [] and loaded["compared"] > 0, loaded
            assert loaded["max_abs_difference"] == 0.0, (report["rank"], loaded)
