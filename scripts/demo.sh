#!/usr/bin/env bash
# Run the end-to-end example in .venv (created and installed on first use).
# Arguments go to the example:  scripts/demo.sh --epochs 3 --seed 1
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure_venv.sh

export TOKENIZERS_PARALLELISM=false
exec "$VENV_PYTHON" examples/route_negative_reviews.py "$@"
