"""Fixtures of the reliability tests; the data helpers are in ``reliability_data`` (importing it puts
``scripts/`` and ``examples/`` on ``sys.path``, so tests import ``kill_resume`` and ``bench_load``)."""

from __future__ import annotations

import pytest
from reliability_data import quick_trainer_runs


@pytest.fixture(scope="module")
def quick_runs():
    """Many short Trainer runs in one module: see ``reliability_data.quick_trainer_runs``."""
    with quick_trainer_runs():
        yield
