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
