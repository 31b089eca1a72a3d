# Sourced by scripts/test.sh and scripts/demo.sh (not run on its own): make sure the venv exists and
# holds this checkout, installed editable with the dev extra. The caller has cd'ed to the repo root.
#
# The caller may set, before sourcing:
#   VENV_DIR     the venv folder (default .venv)
#   CONSTRAINTS  a pip constraints file the install must obey (default none: the newest releases);
#                scripts/test.sh --lowest uses VENV_DIR=.venv-lowest CONSTRAINTS=constraints-lowest.txt
#
# The install is skipped while $VENV_DIR/.installed-<hash> matches the current pyproject.toml,
# constraints file and install command, so a second run starts in a second, not a minute.

VENV_DIR="${VENV_DIR:-.venv}"
CONSTRAINTS="${CONSTRAINTS:-}"
VENV_PYTHON="$VENV_DIR/bin/python"
# torch first and pinned: this machine has a CPU wheel of it on disk; an unpinned `torch` from the
# index would be the multi-GB CUDA build.
TORCH_REQUIREMENT="torch==2.13.0"
INSTALL_SPEC="-e .[dev]"
constraint_args=()
if [[ -n "$CONSTRAINTS" ]]; then
    constraint_args=(-c "$CONSTRAINTS")
fi

if [[ ! -x "$VENV_PYTHON" ]]; then
    echo "creating $VENV_DIR" >&2
    python3 -m venv "$VENV_DIR"
fi

install_hash="$( { cat pyproject.toml; [[ -z "$CONSTRAINTS" ]] || cat "$CONSTRAINTS"; \
    echo "$TORCH_REQUIREMENT $INSTALL_SPEC ${constraint_args[*]}"; } | sha256sum | cut -c1-16)"
install_marker="$VENV_DIR/.installed-$install_hash"
if [[ ! -f "$install_marker" ]]; then
    echo "installing $TORCH_REQUIREMENT and trainer-ext ($INSTALL_SPEC ${constraint_args[*]}) into $VENV_DIR" >&2
    "$VENV_PYTHON" -m pip install -q "$TORCH_REQUIREMENT"
    # torch stays pinned during the second install too: a constraint may not pull another build.
    "$VENV_PYTHON" -m pip install -q "${constraint_args[@]}" "$TORCH_REQUIREMENT" -e ".[dev]"
    rm -f "$VENV_DIR"/.installed-*
    touch "$install_marker"
fi
