"""Fixtures shared by every test tier.

``examples/`` goes on ``sys.path`` so tests can import ``synthetic_reviews``, the data, tokenizer
and tiny model the examples use. torch and transformers are imported inside the fixtures only, so
the pure unit tests never pay for them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))


@pytest.fixture(scope="session")
def tokenizer():
    """A WordPiece tokenizer trained on ``make_reviews(400, seed=0)``; shared, do not mutate it."""
    from synthetic_reviews import make_reviews, train_tokenizer

    return train_tokenizer([row["text"] for row in make_reviews(400, seed=0)])


@pytest.fixture
def tiny_model(tokenizer):
    """A fresh, untrained one-layer Llama classifier (seed 0) for ``tokenizer``."""
    from synthetic_reviews import tiny_llama_classifier

    return tiny_llama_classifier(tokenizer, seed=0)


# ---- tiers -------------------------------------------------------------------------------------------
# `bash scripts/test.sh` runs the default tier (everything not marked slow) within 15 minutes on 2 cores;
# `bash scripts/test.sh --slow` runs the slow tier: real multi-process launches, the kill/resume harness,
# the GPU check's dry run, the examples and the longest real-Trainer task runs. `.ci/run` runs both.
SLOW = (
    "tests/distributed/",
    "tests/reliability/test_kill_resume.py",
    "tests/reliability/test_distributed_faults.py",
    "tests/integration/test_gpu_check.py",
    "tests/integration/test_example_smoke.py",
    "tests/integration/test_label_words_training.py",
    "tests/integration/test_tasks_training.py",
    "tests/integration/test_run_control.py",
    "tests/reliability/test_bench_eval_tasks.py",
)
REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the slow tier (bash scripts/test.sh --slow); not in the default run")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).resolve().relative_to(REPO_ROOT).as_posix()
        if path.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
