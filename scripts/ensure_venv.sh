# Sourced by scripts/test.sh and scripts/demo.sh (not run on its own): make sure .venv exists and
# holds this checkout, installed editable with the dev extra. The caller has cd'ed to the repo root.
#
# The install is skipped while .venv/.installed-<hash> matches the current pyproject.toml and
# install command, so a second run starts in a second, not a minute.

VENV_PYTHON=.venv/bin/python
# torch first and pinned: this machine has a CPU wheel of it on disk; an unpinned `torch` from the
# index would be the multi-GB CUDA build.
TORCH_REQUIREMENT="torch==2.13.0"
INSTALL_SPEC="-e .[dev]"

if [[ ! -x "$VENV_PYTHON" ]]; then
    echo "creating .venv" >&2
    python3 -m venv .venv
fi

install_hash="$( { cat pyproject.toml; echo "$TORCH_REQUIREMENT $INSTALL_SPEC"; } | sha256sum | cut -c1-16)"
install_marker=".venv/.installed-$install_hash"
if [[ ! -f "$install_marker" ]]; then
    echo "installing $TORCH_REQUIREMENT and trainer-ext ($INSTALL_SPEC) into .venv" >&2
    "$VENV_PYTHON" -m pip install -q "$TORCH_REQUIREMENT"
    "$VENV_PYTHON" -m pip install -q -e ".[dev]"
    rm -f .venv/.installed-*
    touch "$install_marker"
fi
