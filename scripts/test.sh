#!/usr/bin/env bash
# Run the test suite in .venv (created and installed on first use).
# Arguments go to pytest:  scripts/test.sh -k leaderboard -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure_venv.sh

# Everything runs offline: no test may reach the Hugging Face Hub.
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export HF_DATASETS_OFFLINE=1
# The suite's models are tiny: one thread per process is several times faster than two threads
# contending, and the multi-process tests run two processes on the two cores anyway.
export OMP_NUM_THREADS=1

status=0
timeout --kill-after=30s 14m "$VENV_PYTHON" -m pytest -q tests "$@" || status=$?
if [[ $status -eq 124 ]]; then
    echo "scripts/test.sh: the test suite did not finish within 14 minutes and was stopped" >&2
fi
exit "$status"
