#!/usr/bin/env python
"""Part 2, one training run under ``accelerate launch`` (one process): DeepSpeed DeepSpeed ZeRO-3 or FSDP2.

Launched by ``main.py`` as ``accelerate launch --config_file <engine>.yaml --num_processes 1
scripts/gpu_check/engines.py --engine zero3|fsdp2 ...``. On the CPU (``--cpu``, the dry run) accelerate
runs the FSDP2 config as MULTI_CPU (gloo, no sharding): the sharding line is then a SKIP and the other
checks exercise the launch path only. The tiny Llama classifier trains a few
steps with BestCheckpointCallback on a held-out set whose labels are flipped (so the business-best is
an early checkpoint, not the last one) and checks, after ``trainer.train()``:

* the callback evaluated during training: every checkpoint folder holds a ``checkpoint_metrics.json``
  whose ``evaluation.processes`` is the launch's world size;
* the Trainer's ``best_model_checkpoint`` is the leaderboard's ``best_checkpoint``;
* the weights in ``trainer.model`` at the end, gathered with ``trainer.accelerator.get_state_dict``
  (a collective: under ZeRO-3 and FSDP2 each rank holds a shard), equal every tensor of the best
  checkpoint's ``model.safetensors``, and differ from the last checkpoint's when that is another one
  (else the load is not visible, and the line says so).

Only the main process writes the ``--result`` file.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

import fixture


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("zero3", "fsdp2"), required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--result", type=Path, default=None)
    parser.add_argument("--cpu", action="store_true", help="train on the CPU (the dry run)")
    parser.add_argument("--train-examples", type=int, default=192)
    parser.add_argument("--held-out-examples", type=int, default=128)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--save-steps", type=int, default=4)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    cli = parse_args(argv)
    results = fixture.Results(cli.engine, None)
    main_process = True
    try:
        main_process = run(cli, results)
    except Exception as exc:
        traceback.print_exc()
        results.add("FAIL", cli.engine, f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}")
    if main_process:
        results.path = cli.result
        results.write()
    return 0


def _safetensors_of(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    single = checkpoint / "model.safetensors"
    if single.is_file():
        return load_file(single)
    index = checkpoint / "model.safetensors.index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{checkpoint}: no model.safetensors or model.safetensors.index.json")
    state = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        state.update(load_file(checkpoint / shard))
    return state


def _compare(current: dict, saved: dict) -> tuple[int, int, list[str]]:
    """(tensors equal, tensors compared, names that differ or are missing), exact equality in fp32."""
    names = sorted(set(current) | set(saved))
    differing = [n for n in names if n not in current or n not in saved
                 or current[n].shape != saved[n].shape
                 or not bool((current[n].detach().float().cpu() == saved[n].float()).all())]
    return len(names) - len(differing), len(names), differing


def run(cli: argparse.Namespace, results: fixture.Results) -> bool:
    fixture.quiet()
    output_dir = cli.workdir / f"run_{cli.engine}"
    train_rows, held_out_rows = fixture.reviews(
        train=cli.train_examples, held_out=cli.held_out_examples, flip_held_out=True
    )
    trainer = fixture.train_with_callback(
        output_dir, train_rows=train_rows, held_out_rows=held_out_rows,
        max_steps=cli.max_steps, save_steps=cli.save_steps, use_cpu=cli.cpu,
    )
    state = trainer.accelerator.state
    engine = "deepspeed" if trainer.is_deepspeed_enabled else "fsdp" if trainer.is_fsdp_enabled else "none"
    expected = {"zero3": "deepspeed", "fsdp2": "fsdp"}[cli.engine]
    detail = f"{state.distributed_type} on {state.device}, {state.num_processes} process(es)"
    if engine == "deepspeed":
        detail += f", ZeRO stage {state.deepspeed_plugin.zero_stage}"
    if engine == "fsdp":
        detail += f", fsdp_version {getattr(state.fsdp_plugin, 'fsdp_version', '?')}"
    label = cli.engine
    if engine == expected:
        results.add("PASS", f"{cli.engine}: launched under the engine", detail)
    elif cli.cpu:
        # accelerate applies FSDP / DeepSpeed only on accelerators: on the CPU the same config runs as
        # MULTI_CPU (gloo, unsharded). The checks below still exercise the launch; they are not FSDP2's.
        results.add("SKIP", f"{cli.engine}: sharding on cpu", f"accelerate ran the {cli.engine} config as {detail}; "
                    f"{cli.engine} itself needs CUDA (checked on the GPU)")
        label = f"accelerate launch, cpu ({str(state.distributed_type).split('.')[-1]})"
    else:
        results.add("FAIL", f"{cli.engine}: launched under the engine", detail)
        return trainer.is_world_process_zero()

    # The gather is a collective: every rank calls it; only the main process compares and writes.
    model = trainer.model_wrapped if trainer.is_deepspeed_enabled else trainer.model
    current = trainer.accelerator.get_state_dict(model)
    if not trainer.is_world_process_zero():
        return False

    checkpoints = fixture.checkpoint_dirs(output_dir)
    records = {c.name: fixture.read_record(c) for c in checkpoints if (c / "checkpoint_metrics.json").is_file()}
    processes = sorted({r["evaluation"]["processes"] for r in records.values()})
    results.check(
        len(checkpoints) >= 2 and len(records) == len(checkpoints) and processes == [state.num_processes],
        f"{label}: callback evaluated during training",
        f"{len(records)} records for {len(checkpoints)} checkpoints ({', '.join(c.name for c in checkpoints)}); "
        f"evaluation.processes {processes}",
    )
    leaderboard = json.loads((output_dir / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))
    best = Path(trainer.state.best_model_checkpoint or "")
    values = ", ".join(f"{n}: {r['objective_value']:.3f}" for n, r in records.items())
    results.check(
        best.name == leaderboard["best_checkpoint"] and best.is_dir(),
        f"{label}: business-best is the Trainer's best",
        f"best_model_checkpoint {best.name}, leaderboard best {leaderboard['best_checkpoint']} ({fixture.OBJECTIVE} {values})",
    )
    equal, compared, differing = _compare(current, _safetensors_of(best))
    results.check(
        compared > 0 and not differing,
        f"{label}: loaded weights == {best.name}",
        f"{equal}/{compared} tensors equal after gathering"
        + (f"; differ: {differing[:4]}" if differing else ""),
    )
    last = checkpoints[-1]
    if last.name == best.name:
        results.add("SKIP", f"{label}: weights differ from the last checkpoint",
                    f"the best is the last checkpoint ({last.name}): the load cannot be told from no load")
    else:
        same, total, _ = _compare(current, _safetensors_of(last))
        results.check(same < total, f"{label}: weights differ from the last checkpoint",
                      f"{same}/{total} tensors equal to {last.name}'s (the load replaced the last weights)")
    return True


if __name__ == "__main__":
    sys.exit(main())
