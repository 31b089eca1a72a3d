#!/usr/bin/env bash
# Put into gpu_wheels/ (ignored by git) the Python packages that scripts/gpu_check.sh needs on the GPU
# machine and that machine lacks. The GPU machine has no network: this folder travels with the working
# tree (the device tool's `carry`), and gpu_check.sh installs it there with
#   python3 -m pip install --no-index --no-deps --target <dir> gpu_wheels/*.whl
# then runs everything with PYTHONPATH=.:<dir>. It must stay under 60 MiB (printed at the end; about 6).
#
#   bash scripts/fetch_gpu_wheels.sh            # needs PyPI and .venv (torch for the DeepSpeed build)
#
# What the GPU machine has (tool library, device/KINDS.md, read 2026-11: Python 3.12, torch 2.11+cu130,
# transformers 5.17, accelerate 1.15, huggingface_hub 1.33, peft, scikit-learn, pyarrow, pandas, xxhash,
# fsspec, einops, msgpack, ninja, py-cpuinfo, psutil, nvidia-ml-py, ...) and what it lacks, brought here:
#   evaluate, datasets and their pure-Python needs dill, multiprocess;
#   deepspeed and its needs hjson, pydantic (+ pydantic-core, annotated-types, typing-inspection,
#   typing-extensions >= 4.16, which pydantic-core requires).
# Versions are the ones .venv holds (the ones the suite ran with), one version of each.
#
# DeepSpeed is an sdist only on PyPI. It is built here into a pure-Python wheel without compiled ops
# (DS_BUILD_OPS=0: deepspeed-<ver>-py3-none-any.whl, installed_ops all False); on the GPU machine
# DeepSpeed JIT-compiles an op only if a run asks for one (nvcc and ninja are there; ZeRO-3 with the
# Trainer's torch AdamW asks for none). The build imports torch, so it runs without build isolation in
# .venv (pip would otherwise download a torch: never do that here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
DEST=gpu_wheels
DEEPSPEED=0.19.8
PURE_AND_CP312=(
    datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19
    hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0
)
mkdir -p "$DEST"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${PURE_AND_CP312[@]}"
if ! ls "$DEST"/deepspeed-"$DEEPSPEED"-*.whl >/dev/null 2>&1; then
    build="$(mktemp -d)"
    "$PYTHON" -m pip download -q --no-deps --no-binary=:all: -d "$build" "deepspeed==$DEEPSPEED"
    DS_BUILD_OPS=0 DS_ACCELERATOR=cpu "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" \
        "$build"/deepspeed-"$DEEPSPEED".tar.gz
    rm -rf "$build"
fi
wheel="$(ls "$DEST"/deepspeed-"$DEEPSPEED"-*.whl)"
case "$wheel" in
    *-py3-none-any.whl) ;;
    *) echo "fetch_gpu_wheels.sh: $wheel is not a pure-Python wheel" >&2; exit 1 ;;
esac
if unzip -l "$wheel" | grep -q '\.so$'; then
    echo "fetch_gpu_wheels.sh: $wheel holds compiled ops; build it with DS_BUILD_OPS=0" >&2; exit 1
fi
ls -1 "$DEST"
size_kib="$(du -sk "$DEST" | cut -f1)"
echo "$DEST: $(ls "$DEST"/*.whl | wc -l) wheels, $((size_kib / 1024)) MiB ($size_kib KiB; the limit is 60 MiB)"
if [[ "$size_kib" -gt $((60 * 1024)) ]]; then
    echo "fetch_gpu_wheels.sh: $DEST is over 60 MiB" >&2; exit 1
fi
