#!/usr/bin/env bash
# The GPU check of issue 14, on ONE GPU in at most 8 minutes: a table of PASS / FAIL / SKIP / INFO lines.
#   1. parity  records the callback makes on CUDA (fp32 and bf16 autocast) against `trainer-ext evaluate`
#              of the same checkpoints on the CPU in fp32: fp32 predictions identical; bf16 differences
#              reported (share of changed predictions, max probability difference);
#   2. zero3, fsdp2  DeepSpeed ZeRO-3 and FSDP2 at world size 1 under `accelerate launch`: the callback
#              evaluates during training, the business-best is loaded at the end, its gathered weights
#              equal the checkpoint's;
#   3. speed   scripts/bench_eval.py on CUDA (hidden 1024, 8 layers, 2,000 log-normal-length examples):
#              callback / Trainer.evaluate <= 0.4x, callback / length-sorted floor <= 1.1x, naive >= 20x.
# Exit status 0 when no check failed, 1 when one did, 2 without CUDA (and without --dry-run).
#
#   bash scripts/gpu_check.sh --dry-run       # any machine: every part on the CPU at the smallest size
#   bash scripts/gpu_check.sh                 # on the GPU machine (python3 there holds torch with CUDA)
#   bash scripts/gpu_check.sh --parts speed   # a subset: wheels,parity,zero3,fsdp2,speed (wheels first
#                                             # whenever zero3 or the datasets-using speed part runs)
#   bash scripts/gpu_check.sh --out DIR       # also copy the table, part logs and bench JSON into DIR
#
# Before a device session, here (needs PyPI): `bash scripts/fetch_gpu_wheels.sh` fills the ignored folder
# gpu_wheels/ (about 6 MiB, limit 60) with what the GPU machine lacks: deepspeed (a pure-Python wheel built
# here with DS_BUILD_OPS=0), datasets, evaluate, dill, multiprocess, hjson, pydantic and its needs. There
# (no network) the wheels part installs them with `pip install --no-index --no-deps --target
# /tmp/gpu_check_site` and every part runs with PYTHONPATH=.:/tmp/gpu_check_site.
#
# The device tool's call, exactly (one run, about 5-8 minutes; the 540 s limit leaves a rerun of a part):
#   run(command="set -o pipefail; bash scripts/gpu_check.sh --out $OUT 2>&1 | tee $OUT/gpu_check.log",
#       carry=["gpu_wheels"], timeout_s=540)
# then give_back (unless a part is rerun at once, e.g. command="bash scripts/gpu_check.sh --parts
# wheels,speed --out $OUT 2>&1 | tee $OUT/gpu_check.log"). $OUT/gpu_check_table.md is the table for the
# README (it carries the date and the GPU's name).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dry=0
for argument in "$@"; do
    [[ "$argument" == "--dry-run" ]] && dry=1
done
if [[ -z "${PYTHON:-}" ]]; then
    if [[ "$dry" == 1 && -x .venv/bin/python ]]; then
        PYTHON=.venv/bin/python      # made by scripts/ensure_venv.sh
    else
        PYTHON=python3               # the GPU machine's, with CUDA torch
    fi
fi
site=()
if [[ "$dry" == 0 ]]; then
    site=(--site "${GPU_CHECK_SITE:-/tmp/gpu_check_site}")
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" scripts/gpu_check/main.py "${site[@]}" "$@"
