#!/usr/bin/env python
"""The GPU check (issue 14): parts run one after the other, each in its own processes with a time budget,
then one table of PASS / FAIL / SKIP / INFO lines. Run it through ``scripts/gpu_check.sh``.

Parts:

* ``wheels``  the carried folder ``gpu_wheels/`` (made by ``scripts/fetch_gpu_wheels.sh``): its size
  (< 60 MiB), then on the GPU machine ``pip install --no-index --no-deps --target SITE`` of the wheels
  whose package is missing there (or older), and an import of deepspeed (no compiled ops), datasets and
  evaluate from SITE. Dry run: the set installs for CPython 3.12 on x86-64 (``pip --target
  --python-version 3.12``, nothing imported), and deepspeed imports on this CPU where its needs allow.
* ``parity``  ``parity.py``: records made on CUDA (fp32, bf16 autocast) against ``trainer-ext evaluate``
  on the CPU in fp32.
* ``zero3``, ``fsdp2``  ``engines.py`` under ``accelerate launch`` (one process): the callback evaluates
  during training, the business-best is loaded at the end, its weights equal the checkpoint's.
* ``speed``   ``scripts/bench_eval.py --device cuda``, hidden 1024, 8 layers, 2,000 held-out examples:
  callback against Trainer.evaluate (<= 0.4x), the length-sorted floor (<= 1.1x), naive (>= 20x).

``--dry-run`` runs every part on the CPU at the smallest size: fp32 vs fp32 and bf16 autocast vs fp32 on
the CPU; the FSDP2 config under ``accelerate launch`` (accelerate runs it as MULTI_CPU on gloo: the
sharding line is a SKIP); ZeRO-3 is not launched (SKIP); speed targets are SKIPs with the figures.

Exit status: 0 when no check failed, 1 when one did, 2 on a usage error (no CUDA without --dry-run).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WHEELS = REPO / "gpu_wheels"
WHEELS_LIMIT_MIB = 60
PARTS = ("wheels", "parity", "zero3", "fsdp2", "speed")
# Seconds each part may take: on the GPU they add up to 8 minutes; the dry run is generous because the
# machine that runs the suite may be shared (it takes about 2-3 minutes on 2 busy cores).
BUDGET_GPU = {"wheels": 40, "parity": 80, "zero3": 90, "fsdp2": 60, "speed": 210}
BUDGET_DRY = {"wheels": 120, "parity": 240, "zero3": 10, "fsdp2": 240, "speed": 300}
# Sizes: (parity/engines: train examples, held-out examples, max steps, save steps).
RUN_SIZE = {"gpu": ["--train-examples", "192", "--held-out-examples", "256", "--max-steps", "12", "--save-steps", "4"],
            "dry": ["--train-examples", "96", "--held-out-examples", "64", "--max-steps", "8", "--save-steps", "4"]}
BENCH_SIZE = {
    "gpu": ["--device", "cuda", "--examples", "2000", "--hidden-size", "1024", "--num-layers", "8",
            "--naive-examples", "200", "--repeats", "2", "--tolerance", "1e-4"],
    "dry": ["--device", "cpu", "--examples", "100", "--hidden-size", "32", "--num-layers", "1",
            "--naive-examples", "10", "--repeats", "2", "--threads", "1"],
}
# Packages the GPU image has that deepspeed imports (device/KINDS.md); .venv may lack them.
ON_GPU_IMAGE = {"einops", "msgpack", "ninja", "cpuinfo", "pynvml"}

ACCELERATE_CONFIGS = {
    "zero3": """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 3
  zero3_init_flag: false
  zero3_save_16bit_model: true
  offload_optimizer_device: none
  offload_param_device: none
mixed_precision: "no"
machine_rank: 0
num_machines: 1
num_processes: 1
""",
    "fsdp2": """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_cpu_ram_efficient_loading: false
  fsdp_reshard_after_forward: true
mixed_precision: "no"
machine_rank: 0
num_machines: 1
num_processes: 1
""",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU at the smallest size")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--workdir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--site", type=Path, default=None, help="where the wheels are installed (default: WORKDIR/site)")
    parser.add_argument("--out", type=Path, default=None, help="copy the table, the part logs and bench JSON here")
    cli = parser.parse_args(argv)
    unknown = set(cli.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; allowed: {', '.join(PARTS)}")
    return cli


class Check:
    """The table so far, and the environment every part's processes get."""

    def __init__(self, cli: argparse.Namespace, workdir: Path) -> None:
        self.cli = cli
        self.dry = cli.dry_run
        self.mode = "dry" if self.dry else "gpu"
        self.workdir = workdir
        self.site = (cli.site or workdir / "site").resolve()
        self.lines: list[dict] = []
        self.elapsed: dict[str, tuple[float, int]] = {}
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        self.env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                        HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
        if self.dry:
            self.env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        # A site left by an earlier run on this machine serves a rerun of single parts (--parts speed).
        self.set_pythonpath(with_site=self.site.is_dir())

    def set_pythonpath(self, *, with_site: bool) -> None:
        entries = [str(REPO)] + ([str(self.site)] if with_site else [])
        inherited = os.environ.get("PYTHONPATH")
        self.env["PYTHONPATH"] = os.pathsep.join(entries + ([inherited] if inherited else []))

    def add(self, status: str, part: str, name: str, detail: str) -> None:
        self.lines.append({"status": status, "part": part, "name": name, "detail": detail})
        print(f"[{part}] {status} {name}: {detail}", flush=True)

    def run(self, part: str, command: list[str], *, budget: float, extra_env: dict | None = None) -> tuple[int | str, str]:
        """Run ``command`` in its own process group with the part's budget; return (exit code or
        'timeout', the end of its output). Its whole output also goes to WORKDIR/<part>.log."""
        log = self.workdir / f"{part}.log"
        env = dict(self.env, **(extra_env or {}))
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                code: int | str = process.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the part and every process it started, no other
                process.wait()
                code = "timeout"
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
        return code, tail

    def collect(self, part: str, result: Path, code, tail: str, budget: float) -> None:
        """Read a part's result file; a part that died or overran its budget is one FAIL line."""
        if code == "timeout":
            self.add("FAIL", part, part, f"over its budget of {budget:.0f} s (killed); see {part}.log")
            print(tail, flush=True)
            return
        if not result.is_file():
            self.add("FAIL", part, part, f"exited {code} without a result; see {part}.log")
            print(tail, flush=True)
            return
        for line in json.loads(result.read_text(encoding="utf-8"))["lines"]:
            self.lines.append(line)
        if any(line["status"] == "FAIL" for line in self.lines if line["part"] == part):
            print(tail, flush=True)


# ---- parts ---------------------------------------------------------------------------------------


def _wheel_name_version(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _newer_or_equal(installed: str, wanted: str) -> bool:
    from packaging.version import Version

    return Version(installed) >= Version(wanted)


def part_wheels(check: Check, budget: float) -> None:
    part = "wheels"
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        status = "SKIP" if check.dry else "FAIL"
        check.add(status, part, "gpu_wheels/", "absent: run `bash scripts/fetch_gpu_wheels.sh` here, then carry gpu_wheels"
                  + ("" if check.dry else "; deepspeed, datasets and evaluate are missing on this machine"))
        return
    size = sum(p.stat().st_size for p in WHEELS.rglob("*") if p.is_file()) / 2**20
    check.add("PASS" if size < WHEELS_LIMIT_MIB else "FAIL", part, "carried folder size",
              f"gpu_wheels/: {len(wheels)} wheels, {size:.1f} MiB (limit {WHEELS_LIMIT_MIB} MiB)")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--disable-pip-version-check"]
    if check.dry:
        # Installable as a set for the GPU machine's Python (one version of each, tags that fit); nothing
        # of it can be imported by this Python, so nothing more is checked of it here.
        target = check.workdir / "site-cp312"
        code, tail = check.run(part, pip + ["--target", str(target), "--python-version", "3.12", "--implementation", "cp",
                                            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                                            "--platform", "manylinux2014_x86_64", "--only-binary=:all:",
                                            *map(str, wheels)], budget=budget / 2)
        check.add("PASS" if code == 0 else "FAIL", part, "wheel set installs for CPython 3.12 x86-64",
                  f"pip install --no-index --no-deps --target: exit {code}" + ("" if code == 0 else f"; {tail[-300:]}"))
        ds_wheels = [w for w in wheels if _wheel_name_version(w)[0] in ("deepspeed", "hjson")]
        if len(ds_wheels) == 2:
            pure = check.workdir / "site-deepspeed"
            code, _ = check.run(part, pip + ["--target", str(pure), *map(str, ds_wheels)], budget=budget / 4)
            probe = ("import deepspeed, deepspeed.git_version_info as g; "
                     "assert not any(g.installed_ops.values()), g.installed_ops; print('ok', deepspeed.__version__)")
            env = {"PYTHONPATH": os.pathsep.join([str(pure), check.env["PYTHONPATH"]]), "DS_ACCELERATOR": "cpu"}
            done = subprocess.run([sys.executable, "-c", probe], env=dict(check.env, **env), capture_output=True,
                                  text=True, timeout=budget / 2)
            missing = re.search(r"No module named '([\w.]+)'", done.stderr)
            if done.returncode == 0:
                check.add("PASS", part, "deepspeed wheel imports, no compiled ops", done.stdout.strip())
            elif missing and missing.group(1).split(".")[0] in ON_GPU_IMAGE:
                check.add("SKIP", part, "deepspeed wheel imports, no compiled ops",
                          f"needs {missing.group(1)}, which the GPU image has and .venv lacks; imported on the GPU")
            else:
                check.add("FAIL", part, "deepspeed wheel imports, no compiled ops", done.stderr.strip()[-400:])
        return
    wanted, present = [], []
    for wheel in wheels:
        name, version = _wheel_name_version(wheel)
        installed = _installed_version(name)
        if installed is not None and name != "deepspeed" and _newer_or_equal(installed, version):
            present.append(f"{name} {installed}")
        else:
            wanted.append(wheel)
    # pydantic pins pydantic-core exactly: a pydantic from here needs the pydantic-core from here.
    if any(_wheel_name_version(w)[0] == "pydantic" for w in wanted):
        for wheel in wheels:
            if _wheel_name_version(wheel)[0] == "pydantic-core" and wheel not in wanted:
                wanted.append(wheel)
                present = [p for p in present if not p.startswith("pydantic-core ")]
    code, tail = check.run(part, pip + ["--target", str(check.site), *map(str, wanted)], budget=budget / 2)
    if code != 0:
        check.add("FAIL", part, "install into SITE", f"exit {code}: {tail[-400:]}")
        return
    check.set_pythonpath(with_site=True)
    check.add("PASS", part, "install into SITE", f"{len(wanted)} wheels into {check.site}; already here: {', '.join(present) or 'none'}")
    probes = {
        "deepspeed": "import deepspeed, deepspeed.git_version_info as g; "
                     "assert not any(g.installed_ops.values()), g.installed_ops; "
                     "from deepspeed.accelerator import get_accelerator; print(deepspeed.__version__, get_accelerator()._name)",
        "datasets": "import datasets, pyarrow; print(datasets.__version__, 'pyarrow', pyarrow.__version__)",
        "evaluate": "import evaluate; print(evaluate.__version__)",
    }
    for name, probe in probes.items():
        done = subprocess.run([sys.executable, "-c", probe], env=check.env, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            check.add("PASS", part, f"import {name}", done.stdout.strip().splitlines()[-1])
            continue
        check.add("FAIL", part, f"import {name}", done.stderr.strip()[-400:])
        if name in ("datasets", "evaluate"):
            # transformers imports datasets whenever it is installed: a broken one would stop every Trainer.
            for folder in list(check.site.glob(f"{name}*")):
                shutil.rmtree(folder, ignore_errors=True)
    versions = subprocess.run(
        [sys.executable, "-c", "import torch, transformers, accelerate; "
         "print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
         "accelerate {accelerate.__version__}')"], env=check.env, capture_output=True, text=True, timeout=120)
    check.add("INFO", part, "software", (versions.stdout.strip() or versions.stderr.strip()[-300:]))


def part_parity(check: Check, budget: float) -> None:
    result = check.workdir / "parity.json"
    command = [sys.executable, str(HERE / "parity.py"), "--device", "cpu" if check.dry else "cuda",
               "--workdir", str(check.workdir / "parity"), "--result", str(result), *RUN_SIZE[check.mode]]
    code, tail = check.run("parity", command, budget=budget)
    check.collect("parity", result, code, tail, budget)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def part_engine(check: Check, engine: str, budget: float) -> None:
    if check.dry and engine == "zero3":
        check.add("SKIP", engine, "zero3: not launched on cpu",
                  "DeepSpeed ZeRO-3 needs CUDA (accelerate would run the config unsharded); the cpu dry run "
                  "exercises the launch path with the fsdp2 config")
        return
    config = check.workdir / f"{engine}.yaml"
    config.write_text(ACCELERATE_CONFIGS[engine], encoding="utf-8")
    result = check.workdir / f"{engine}.json"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--main_process_port", str(_free_port()), str(HERE / "engines.py"), "--engine", engine,
               "--workdir", str(check.workdir / "engines"), "--result", str(result), *RUN_SIZE[check.mode]]
    extra = {}
    if check.dry:
        command.append("--cpu")
        extra["ACCELERATE_USE_CPU"] = "true"
    code, tail = check.run(engine, command, budget=budget, extra_env=extra)
    check.collect(engine, result, code, tail, budget)


def part_speed(check: Check, budget: float) -> None:
    part = "speed"
    result = check.workdir / "bench.json"
    command = [sys.executable, str(REPO / "scripts" / "bench_eval.py"), *BENCH_SIZE[check.mode],
               "--workdir", str(check.workdir / "bench"), "--results-json", str(result)]
    code, tail = check.run(part, command, budget=budget)
    if code == "timeout" or not result.is_file():
        check.collect(part, check.workdir / "no-such-file", code, tail, budget)
        return
    bench = json.loads(result.read_text(encoding="utf-8"))
    seconds = bench["seconds"]
    size = (f"{bench['config']['examples']} examples, hidden {bench['config']['hidden_size']}, "
            f"{bench['config']['num_layers']} layers, {bench['config']['device']}")
    worst = max((a["max_abs_dp"] for a in bench["agreement"].values()), default=0.0)
    check.add("PASS" if bench["all_agree"] else "FAIL", part, "every method predicts as the callback",
              f"argmax equal, max |dp| = {worst:.1e} <= {bench['tolerance']:g} ({size})"
              if bench["all_agree"] else f"mismatch: {bench['agreement']}")
    titles = {"callback_vs_trainer": "callback / Trainer.evaluate", "callback_vs_sorted": "callback / length-sorted floor",
              "naive_vs_callback": "naive / callback"}
    for key, ratio in bench["ratios"].items():
        met = ratio["value"] <= ratio["target"] if ratio["at_most"] else ratio["value"] >= ratio["target"]
        target = f"{'<=' if ratio['at_most'] else '>='} {ratio['target']:g}x"
        figure = f"{ratio['value']:.2f}x (target {target})"
        if check.dry:
            check.add("SKIP", part, titles[key], f"{figure}: judged on the GPU only (cpu, smallest size)")
        else:
            check.add("PASS" if met else "FAIL", part, titles[key], figure)
    check.add("INFO", part, "seconds (best of repeats)",
              ", ".join(f"{m} {s['best']:.3f}" for m, s in seconds.items()) + f" ({size})")


# ---- table ---------------------------------------------------------------------------------------


def print_table(check: Check, where: str, total: float) -> str:
    rows = [f"## gpu_check{' --dry-run' if check.dry else ''}: {where}", "",
            "| status | part | check | detail |", "|---|---|---|---|"]
    for line in check.lines:
        detail = line["detail"].replace("|", "\\|")
        rows.append(f"| {line['status']} | {line['part']} | {line['name']} | {detail} |")
    rows.append("")
    rows.append("Elapsed: " + ", ".join(f"{p} {s:.0f} s (budget {b} s)" for p, (s, b) in check.elapsed.items())
                + f"; total {total:.0f} s.")
    counts = {s: sum(line["status"] == s for line in check.lines) for s in ("PASS", "FAIL", "SKIP", "INFO")}
    verdict = "FAIL" if counts["FAIL"] else "PASS"
    rows.append(f"RESULT: {verdict} ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    text = "\n".join(rows)
    print("\n" + text, flush=True)
    return text


def main(argv=None) -> int:
    cli = parse_args(argv)
    start = time.perf_counter()
    if not cli.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device (torch.cuda.is_available() is False); use --dry-run on a CPU machine",
                  file=sys.stderr)
            return 2
        where = f"cuda, {torch.cuda.get_device_name(0)}, {time.strftime('%Y-%m-%d')}"
    else:
        where = f"cpu dry run, smallest sizes, {time.strftime('%Y-%m-%d')}"
    temporary = cli.workdir is None
    workdir = (cli.workdir or Path(tempfile.mkdtemp(prefix="gpu_check_"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    check = Check(cli, workdir)
    budgets = BUDGET_DRY if check.dry else BUDGET_GPU
    print(f"gpu_check: {where}; work folder {workdir}; parts {cli.parts}", flush=True)
    for part in [p for p in PARTS if p in cli.parts.split(",")]:
        part_start = time.perf_counter()
        print(f"== {part} (budget {budgets[part]} s) ==", flush=True)
        if part == "wheels":
            part_wheels(check, budgets[part])
        elif part == "parity":
            part_parity(check, budgets[part])
        elif part in ("zero3", "fsdp2"):
            part_engine(check, part, budgets[part])
        else:
            part_speed(check, budgets[part])
        check.elapsed[part] = (time.perf_counter() - part_start, budgets[part])
        print(f"== {part}: {check.elapsed[part][0]:.0f} s ==", flush=True)
    table = print_table(check, where, time.perf_counter() - start)
    failed = any(line["status"] == "FAIL" for line in check.lines)
    if cli.out is not None:
        cli.out.mkdir(parents=True, exist_ok=True)
        (cli.out / "gpu_check_table.md").write_text(table + "\n", encoding="utf-8")
        for name in [f"{p}.log" for p in PARTS] + ["bench.json"]:
            if (workdir / name).is_file():
                shutil.copy(workdir / name, cli.out / name)
    if temporary and not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    elif failed:
        print(f"gpu_check: work folder kept: {workdir}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
