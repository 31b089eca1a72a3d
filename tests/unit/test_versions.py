"""The supported versions are the tested ones.

pyproject.toml's lower bounds, the pins of ``bash scripts/test.sh --lowest`` (constraints-lowest.txt)
and what is installed cannot drift apart: each test reads the real files and the installed metadata.
"""

from __future__ import annotations

import os
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the suite runs on 3.11

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints-lowest.txt"
# The releases the lowest environment exists for: each must be pinned there.
TESTED_AT_LOWEST = ("transformers", "accelerate")


def _dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def _lower_bound(requirement: Requirement) -> Version:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert len(bounds) == 1, f"{requirement}: expected exactly one '>=' lower bound"
    return bounds[0]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"constraints-lowest.txt: {line!r} is not 'name==version'"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def test_every_runtime_pin_of_the_lowest_environment_is_pyprojects_lower_bound():
    dependencies, pins = _dependencies(), _pins()
    for name in TESTED_AT_LOWEST:
        assert name in pins, f"constraints-lowest.txt pins no {name}"
    pinned_dependencies = {n: p for n, p in pins.items() if n in dependencies}
    assert set(TESTED_AT_LOWEST) <= set(pinned_dependencies)
    for name, pin in pinned_dependencies.items():
        assert _lower_bound(dependencies[name]) == pin, (
            f"pyproject.toml says {dependencies[name]}, but the lowest environment tests {name}=={pin}: "
            "raise or lower both together"
        )


def test_the_lowest_pins_are_4x_releases_of_transformers_or_later():
    # Many users are still on transformers 4.x: the supported range must reach into it.
    assert _pins()["transformers"] < Version("5")


def test_installed_releases_are_within_the_supported_range():
    """Whichever environment runs the suite, it runs releases pyproject.toml allows."""
    for name, requirement in _dependencies().items():
        installed = Version(version(name))
        assert installed >= _lower_bound(requirement), f"{name} {installed} is older than {requirement}"


@pytest.mark.skipif(
    not os.environ.get("TRAINER_EXT_CONSTRAINTS"), reason="only in a run of scripts/test.sh --lowest"
)
def test_the_lowest_environment_runs_exactly_the_pinned_releases():
    """Under ``scripts/test.sh --lowest`` the suite must really run on the pins, not on newer releases."""
    assert Path(os.environ["TRAINER_EXT_CONSTRAINTS"]).resolve() == CONSTRAINTS
    for name, pin in _pins().items():
        assert Version(version(name)) == pin, f"{name}: installed {version(name)}, pinned {pin}"


def test_scripts_wire_the_lowest_run():
    """``scripts/test.sh --lowest`` uses constraints-lowest.txt in its own venv, and CI runs the default and
    slow tiers on the newest releases and the default tier on the lowest."""
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert "--lowest" in test_sh and "CONSTRAINTS=constraints-lowest.txt" in test_sh
    assert "VENV_DIR=.venv-lowest" in test_sh and "limit=14" in test_sh  # the default tier stays under 15 minutes
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    runs = [line for line in ci if line.startswith("bash scripts/test.sh")]
    assert [r.split("||")[0].strip() for r in runs] == ["bash scripts/test.sh", "bash scripts/test.sh --slow", "bash scripts/test.sh --lowest"]
    assert ".venv-lowest/" in (ROOT / ".gitignore").read_text().splitlines()
