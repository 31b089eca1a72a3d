#!/usr/bin/env bash
# Run the test suite in .venv (created and installed on first use).
# Arguments go to pytest:  scripts/test.sh -k leaderboard -x
#
#   scripts/test.sh            the default tier (not marked slow: tests/conftest.py), under 15 minutes
#   scripts/test.sh --slow     the slow tier (multi-process launches, kill/resume, examples, GPU dry run)
#   scripts/test.sh --all      both
#
#   scripts/test.sh --lowest [pytest args]   the same suite in .venv-lowest, on the lowest releases we
#                                            support (the pins in constraints-lowest.txt)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

label="newest releases"
if [[ "${1:-}" == "--lowest" ]]; then
    shift
    VENV_DIR=.venv-lowest
    CONSTRAINTS=constraints-lowest.txt
    label="lowest supported releases ($CONSTRAINTS)"
fi
# Tiers (tests/conftest.py marks the slow one): the default run leaves the slow tier out.
# Each run is stopped after a limit: 14 minutes for the default tier (it must stay under 15), 25 for the
# slow tier and for both (about 12 minutes on an idle 2-core machine: the limit leaves room for load).
tier=(-m "not slow")
tier_label="default tier"
limit=14
if [[ "${1:-}" == "--slow" ]]; then
    shift
    tier=(-m slow)
    tier_label="slow tier"
    limit=25
elif [[ "${1:-}" == "--all" ]]; then
    shift
    tier=()
    tier_label="every tier"
    limit=25
fi
source scripts/ensure_venv.sh
# tests/unit/test_versions.py reads it: in the lowest venv every pin must be what is installed.
export TRAINER_EXT_CONSTRAINTS="$CONSTRAINTS"

# Everything runs offline: no test may reach the Hugging Face Hub.
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export HF_DATASETS_OFFLINE=1
# The suite's models are tiny: one thread per process is several times faster than two threads
# contending, and the multi-process tests run two processes on the two cores anyway.
export OMP_NUM_THREADS=1

echo "scripts/test.sh: $label, in $VENV_DIR: $("$VENV_PYTHON" -c 'import transformers, accelerate, torch; print(f"transformers {transformers.__version__}, accelerate {accelerate.__version__}, torch {torch.__version__}")')" >&2
status=0
echo "scripts/test.sh: $tier_label" >&2
timeout --kill-after=30s "${limit}m" "$VENV_PYTHON" -m pytest -q tests ${tier[@]+"${tier[@]}"} "$@" || status=$?
if [[ $status -eq 124 ]]; then
    echo "scripts/test.sh: the $tier_label did not finish within $limit minutes and was stopped" >&2
fi
exit "$status"
