"""``scripts/bench_eval.py --quick --task <t>`` for each task beyond single-label, at the smallest sizes, as a
user runs it: every method's row is printed, every method agrees with the callback, and the callback /
length-sorted ratio is printed against its 1.1x target (met or not: the figure is measured, not asserted; the
README's figures come from the full runs). Slow tier (about 150 s): each run starts one worker process per method."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "bench_eval.py"
TIMEOUT_SECONDS = 400
SMALLEST = ["--quick", "--examples", "80", "--hidden-size", "16", "--num-layers", "1", "--threads", "1", "--repeats", "2"]
TITLES = {
    "callback": "callback: HeldOutSets.evaluate (evaluate_model + score_checkpoint)",
    "loop": "plain loop, dataset order",
    "sorted": "plain loop, length-sorted",
    "concat": "plain loop, length-sorted, prompt + label per class",
}
RATIO = re.compile(r"callback / length-sorted loop = (\d+\.\d+)x  target <= 1\.1x: (MET|NOT MET)")


def _text(stream: str | bytes | None) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else stream or ""


def _run(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, str(SCRIPT), *SMALLEST, "--workdir", str(tmp_path / "work"),
               "--results-json", str(tmp_path / "bench.json"), *arguments]
    try:
        completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"bench_eval.py did not finish within {TIMEOUT_SECONDS} s.\nstdout:\n{_text(error.stdout)[-4000:]}\n"
                    f"stderr:\n{_text(error.stderr)[-4000:]}")
    assert completed.returncode == 0, (
        f"bench_eval.py exited with {completed.returncode}.\nstdout:\n{completed.stdout[-4000:]}\nstderr:\n{completed.stderr[-4000:]}"
    )
    return completed


@pytest.mark.parametrize(
    ("task", "label_words", "methods"),
    [
        ("multi_label", None, ["callback", "loop", "sorted"]),
        ("token", None, ["callback", "loop", "sorted"]),
        ("regression", None, ["callback", "loop", "sorted"]),
        ("label_words", "single", ["callback", "loop", "sorted", "concat"]),
        ("label_words", "multi", ["callback", "loop", "sorted", "concat"]),
    ],
)
def test_quick_run_prints_every_method_agreeing_and_the_ratio_to_the_floor(tmp_path, task, label_words, methods):
    extra = ["--label-words", label_words] if label_words else []
    out = _run(tmp_path, "--task", task, *extra).stdout

    assert f"  task: {task} " in out, out[-3000:]
    table = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [line.split(" | ")[0][2:] for line in table] == [TITLES[m] for m in methods], table
    for m in methods[1:]:  # every method against the callback, on all 80 examples
        agreement = [line for line in out.splitlines() if line.startswith(f"  {m} ") and "examples:" in line]
        assert len(agreement) == 1 and "80 examples" in agreement[0] and agreement[0].rstrip().endswith("-> OK"), agreement
    assert "predictions: all methods agree" in out
    ratio = RATIO.search(out)
    assert ratio, out[-3000:]
    assert (float(ratio.group(1)) <= 1.1) == (ratio.group(2) == "MET")

    results = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert results["task"] == task and results["config"]["task"] == task and results["all_agree"] is True
    if label_words:
        assert results["config"]["label_words"] == label_words
    assert sorted(results["seconds"]) == sorted(methods) and sorted(results["agreement"]) == sorted(methods[1:])
    floor = results["ratios"]["callback_vs_sorted"]
    assert floor["target"] == 1.1 and floor["at_most"] is True
    assert floor["value"] == pytest.approx(results["seconds"]["callback"]["best"] / results["seconds"]["sorted"]["best"])
    assert f"{floor['value']:.2f}" == ratio.group(1)


def test_a_method_the_task_does_not_have_is_refused_naming_it(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--task", "token", "--methods", "callback,trainer"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode != 0
    assert "--methods: ['trainer'] not available for --task token; allowed: ['callback', 'loop', 'sorted']" in completed.stderr
