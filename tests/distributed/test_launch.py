"""Real multi-process launches on CPU: the held-out evaluation is sharded, exact and decided once.

What issue 3 guarantees, and where it is checked:

* every process evaluates its own shard, and the combined result counts each held-out example exactly
  once, for N not divisible by the world size (101 on 2), and N < W (N = 1 on 2):
  ``test_each_example_is_evaluated_exactly_once`` (plus ``test_batch_plan_and_shards`` without a launch);
* confusion matrix, every metric, the saved per-example scores and the chosen checkpoint are identical
  to a 1-process evaluation of the same saved weights: ``test_results_equal_one_process_evaluation``;
* every rank reaches the same decision: ``test_every_rank_reaches_the_same_decision``;
* only the global main process writes files (also on two "machines", where rank 1 is a local main):
  ``test_only_the_global_main_process_writes``;
* a launch where several processes were started but the Trainer sees one raises
  ``DistributedSetupError`` with the fix: ``test_misconfigured_launch_*``.

The launches follow /work/shared/STYLE.md ("Multi-process on a CPU machine"):
``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu ...``, two "machines" as two concurrent launches on
loopback, a free port per launch, ``OMP_NUM_THREADS=1``, a timeout on every launch, and the workers'
output shown when something fails. Workers: ``worker_train.py`` (one rank of a training run) and
``worker_evaluate.py`` (the 1-process reference).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer_ext.evaluation import assign_batches, batch_cost, plan_batches

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKER_TRAIN = HERE / "worker_train.py"
WORKER_EVALUATE = HERE / "worker_evaluate.py"
LAUNCH_TIMEOUT = 240  # seconds, per launch (a launch takes about 20 s on 2 cores)
FAILURE_GRACE = 30  # seconds the peers of a failed launch get to fail on their own before they are killed
WORLD = 2

# Variables a surrounding launcher (or a developer's shell) may have set; a launch must not inherit them.
_LAUNCHER_VARIABLES = (
    "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION",
    "ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_CONFIG_FILE", "CUDA_VISIBLE_DEVICES",
)


# ---- launching ----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on loopback right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_env(*, use_cpu: bool = True, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, even on a machine that has a GPU
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    env.update(extra)
    return env


@dataclass
class Finished:
    command: list[str]
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float

    def describe(self, tail: int = 6000) -> str:
        status = "TIMED OUT" if self.returncode is None else f"exit code {self.returncode}"
        return (
            f"$ {' '.join(self.command)}\n[{status} after {self.seconds:.1f} s]\n"
            f"--- stderr (last {tail} chars) ---\n{self.stderr[-tail:]}\n"
            f"--- stdout (last 2000 chars) ---\n{self.stdout[-2000:]}"
        )


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (from /proc). torchrun starts each worker in a session of its
    own, so killing the launcher's process group alone would leave the workers running."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                stat = handle.read()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a command we started, its process group and every process it started, by id."""
    pids = descendants(process.pid)  # before the launcher dies and its workers are re-parented
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group it leads (start_new_session)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def run_concurrently(
    commands: list[list[str]], env: dict[str, str], logs: Path, *, timeout: float = LAUNCH_TIMEOUT
) -> list[Finished]:
    """Start every command at once (two "machines" must rendezvous), wait for all under one deadline.

    Output goes to files, not pipes, so that a chatty process can never block on a full pipe while its
    peer waits for it in a collective. Each command runs in its own session; at the deadline, or
    ``FAILURE_GRACE`` seconds after one of them failed (its peers would wait for it until the deadline),
    each command still running is killed with its whole process tree (launcher and workers), by id.
    """
    logs.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    started = []
    for i, command in enumerate(commands):
        out, err = open(logs / f"launch{i}.out", "w+b"), open(logs / f"launch{i}.err", "w+b")
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=err, start_new_session=True)
        started.append((command, process, out, err))
    ended: dict[int, float] = {}
    killed: set[int] = set()
    first_failure: float | None = None
    while len(ended) + len(killed) < len(started):
        now = time.monotonic()
        for i, (_, process, _, _) in enumerate(started):
            if i in ended or i in killed:
                continue
            if process.poll() is not None:
                ended[i] = now - start
                if process.returncode != 0 and first_failure is None:
                    first_failure = now
            elif now - start > timeout or (first_failure is not None and now - first_failure > FAILURE_GRACE):
                kill_tree(process)
                killed.add(i)
                ended[i] = now - start
        time.sleep(0.2)
    finished = []
    for i, (command, process, out, err) in enumerate(started):
        texts = []
        for handle in (out, err):
            handle.seek(0)
            texts.append(handle.read().decode("utf-8", "replace"))
            handle.close()
        returncode = None if i in killed else process.returncode
        finished.append(Finished(command, returncode, texts[0], texts[1], ended[i]))
    return finished


def check_succeeded(finished: list[Finished]) -> None:
    failed = [f for f in finished if f.returncode != 0]
    if failed:
        pytest.fail("a launch failed:\n\n" + "\n\n".join(f.describe() for f in finished), pytrace=False)


def accelerate_launch(*options: str) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--mixed_precision", "no",
        "--dynamo_backend", "no", *options,
    ]


def run_on_one_and_world(arguments: list[str], folder: Path, *, out: str = "{}.json") -> tuple[Path, Path]:
    """Run a worker twice, as one plain process and as WORLD processes of one accelerate launch; return
    the two ``--out`` paths (1 process, WORLD processes), for the test to compare what each wrote.

    ``arguments`` is the worker script and its options; each run gets ``--out folder/<out>``, ``out``
    formatted with ``one`` then ``two`` (a file, ``{}.json``, for an evaluation worker; a folder, ``{}``,
    for a training run). One run after the other, not both at once: the machine has two cores, and a
    1-process run that competes with a launch for them only makes both slower. Fails the test with the
    workers' output (``check_succeeded``) as soon as a run fails.
    """
    outs = (folder / out.format("one"), folder / out.format("two"))
    one = run_concurrently([[sys.executable, *arguments, "--out", str(outs[0])]], launch_env(), folder / "logs-one")
    check_succeeded(one)
    port = str(free_port())
    two = run_concurrently(
        [accelerate_launch("--num_processes", str(WORLD), "--num_machines", "1", "--main_process_port", port)
         + arguments + ["--out", str(outs[1])]],
        launch_env(), folder / "logs-two",
    )
    check_succeeded(two)
    return outs


def worker_arguments(out: Path, tokenizer: Path, eval_size: int) -> list[str]:
    return [str(WORKER_TRAIN), "--out", str(out), "--tokenizer", str(tokenizer), "--eval-size", str(eval_size)]


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """One tokenizer, trained once and loaded by every rank and by the reference (same vocabulary)."""
    for folder in (REPO / "examples", HERE):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    from synthetic_reviews import make_reviews, train_tokenizer

    import worker_train

    folder = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([r["text"] for r in make_reviews(256, seed=worker_train.TRAIN_SEED)]).save_pretrained(folder)
    return folder


@dataclass
class Scenario:
    name: str
    eval_size: int
    launcher: str  # "accelerate": one launch of WORLD processes; "accelerate-machines": WORLD launches of
    # one process each (machine ranks 0..WORLD-1 on loopback); "torchrun": one torchrun of WORLD processes


# scripts/gpu_distributed.sh sets TRAINER_EXT_GPU_CONFIG to an accelerate config file (DeepSpeed ZeRO-3,
# FSDP) and runs these same tests on GPUs; on this CPU machine it is unset.
GPU_CONFIG = os.environ.get("TRAINER_EXT_GPU_CONFIG")

SCENARIOS = [
    Scenario("accelerate_101_examples", eval_size=101, launcher="accelerate"),  # N not divisible by W
    Scenario("two_machines_101_examples", eval_size=101, launcher="accelerate-machines"),
    Scenario("accelerate_1_example", eval_size=1, launcher="accelerate"),  # N = 1 < W = 2
    # The other launch that DistributedSetupError's message recommends.
    Scenario("torchrun_101_examples", eval_size=101, launcher="torchrun"),
]


if GPU_CONFIG:
    SCENARIOS = [
        Scenario("gpu_101_examples", eval_size=101, launcher="gpu-config"),
        Scenario("gpu_1_example", eval_size=1, launcher="gpu-config"),
    ]


def launch_commands(scenario: Scenario, arguments: list[str]) -> list[list[str]]:
    port = str(free_port())
    if scenario.launcher == "gpu-config":
        return [[sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(GPU_CONFIG),
                 "--num_processes", str(WORLD), "--main_process_port", port, *arguments]]
    if scenario.launcher == "accelerate":
        return [accelerate_launch("--num_processes", str(WORLD), "--num_machines", "1", "--main_process_port", port)
                + arguments]
    if scenario.launcher == "accelerate-machines":
        return [
            accelerate_launch(
                "--num_processes", str(WORLD), "--num_machines", str(WORLD), "--machine_rank", str(machine),
                "--main_process_ip", "127.0.0.1", "--main_process_port", port,
            )
            + arguments
            for machine in range(WORLD)
        ]
    assert scenario.launcher == "torchrun", scenario
    return [[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
             "--master_addr", "127.0.0.1", "--master_port", port, *arguments]]


@dataclass
class Run:
    scenario: Scenario
    out: Path
    ranks: list[dict]  # rank<R>.json, by global rank
    writes: dict[int, list[tuple[int, str]]]  # launcher rank -> [(torch rank at write time, path)]
    checkpoints: list[Path]  # in step order
    reference: dict
    reference_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.out / "run"


def _read_writes(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(int(rank), file) for rank, file in (line.split("\t", 1) for line in lines)]


@pytest.fixture(scope="module", params=SCENARIOS, ids=lambda s: s.name)
def run(request, tmp_path_factory, tokenizer_dir) -> Run:
    """Train with WORLD processes, then evaluate every saved checkpoint again with one process."""
    scenario: Scenario = request.param
    base = tmp_path_factory.mktemp(scenario.name)
    out = base / "out"
    commands = launch_commands(scenario, worker_arguments(out, tokenizer_dir, scenario.eval_size))
    env = launch_env(use_cpu=False, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "0,1")) if GPU_CONFIG else launch_env()
    launched = run_concurrently(commands, env, base / "logs")
    check_succeeded(launched)

    ranks = [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(WORLD)]
    writes = read_writes(out)
    checkpoints = sorted((out / "run").glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert len(checkpoints) == 3, f"expected 3 saves, found {[p.name for p in checkpoints]}"

    reference_dir = base / "reference"
    evaluated = run_concurrently(
        [
            [sys.executable, str(WORKER_EVALUATE), "--out", str(reference_dir), "--tokenizer", str(tokenizer_dir),
             "--eval-size", str(scenario.eval_size), *map(str, checkpoints)]
        ],
        launch_env(use_cpu=False),
        base / "reference-logs",
    )
    check_succeeded(evaluated)
    reference = json.loads((reference_dir / "reference.json").read_text(encoding="utf-8"))
    return Run(
        scenario, out, ranks, writes, checkpoints, reference, reference_dir,
        seconds={"launch": max(f.seconds for f in launched), "reference": evaluated[0].seconds},
    )


# ---- what every launch must show ----------------------------------------------------------------


def test_every_rank_sees_the_launch(run: Run):
    """The launch really is WORLD processes, as torch.distributed, the Trainer and the launcher see it."""
    for r, report in enumerate(run.ranks):
        assert report["world_size"] == WORLD, report
        assert report["trainer_world_size"] == WORLD, report
        assert report["launcher_world_size"] == WORLD, report
        assert report["rank"] == report["trainer_process_index"] == report["launcher_rank"] == r, report
        assert report["is_world_process_zero"] is (r == 0), report
    if run.scenario.launcher == "accelerate-machines":
        # Rank 1 is alone on "machine 1": it is a local main process, but not the global main.
        assert run.ranks[1]["local_rank"] == 0, run.ranks[1]


def test_every_rank_reaches_the_same_decision(run: Run):
    fields = ("best_model_checkpoint", "best_metric", "best_global_step", "leaderboard", "leaderboard_best")
    decisions = [{k: report[k] for k in fields} for report in run.ranks]
    assert all(d == decisions[0] for d in decisions), f"ranks disagree: {decisions}"
    board = json.loads((run.run_dir / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))
    assert [e["checkpoint"] for e in board["entries"]] == decisions[0]["leaderboard"]
    assert board["best_checkpoint"] == decisions[0]["leaderboard_best"]
    assert decisions[0]["best_model_checkpoint"] == str(run.run_dir / board["best_checkpoint"])


def test_each_example_is_evaluated_exactly_once(run: Run):
    check_each_example_once([report["shards"] for report in run.ranks], run.scenario.eval_size, run.checkpoints)


def check_each_example_once(evaluations: list[list[list[int]]], n: int, checkpoints: list[Path]) -> None:
    """``evaluations[r][s]``: the held-out indices rank r evaluated at save s (worker_train's recorder).
    Together the ranks cover 0..n-1 exactly once at every save, each rank holding some when n >= WORLD;
    every record counts n examples, evaluated by WORLD processes, and saves n scores."""
    assert all(len(e) == len(checkpoints) for e in evaluations), (
        f"each rank must evaluate once per save ({len(checkpoints)}): {[len(e) for e in evaluations]}"
    )
    for save, checkpoint in enumerate(checkpoints):
        shards = [evaluations[r][save] for r in range(WORLD)]
        together = sorted(i for shard in shards for i in shard)
        assert together == list(range(n)), f"{checkpoint.name}: shards {shards} do not cover 0..{n - 1} exactly once"
        if n >= WORLD:
            assert all(shards), f"{checkpoint.name}: a rank evaluated nothing: {shards}"
        else:  # N < W: some ranks hold no example (and still take part in every collective)
            assert sum(1 for s in shards if s) == n, shards

        record = json.loads((checkpoint / "checkpoint_metrics.json").read_text(encoding="utf-8"))
        assert np.asarray(record["confusion_matrix"]).sum() == n, record["confusion_matrix"]
        assert record["num_samples"] == n
        assert record["evaluation"]["processes"] == WORLD, record["evaluation"]
        with np.load(checkpoint / "checkpoint_scores.npz") as scores:
            assert scores["labels"].shape == scores["predictions"].shape == (n,)
            assert scores["probabilities"].shape == (n, 2)


def test_results_equal_one_process_evaluation(run: Run):
    """Bit for bit: scores, confusion matrix, every metric, ranking and choice, against 1 process."""
    reference = run.reference
    for checkpoint in run.checkpoints:
        with np.load(run.reference_dir / f"{checkpoint.name}.npz") as ref:
            expected = {k: ref[k] for k in ref.files}
        with np.load(checkpoint / "checkpoint_scores.npz") as saved:
            for key in ("labels", "predictions", "probabilities"):
                assert saved[key].dtype == expected[key].dtype, (checkpoint.name, key)
                assert np.array_equal(saved[key], expected[key]), (
                    f"{checkpoint.name}: {key} differ from the 1-process evaluation "
                    f"(max abs diff {np.abs(saved[key].astype(float) - expected[key].astype(float)).max()})"
                )
        record = json.loads((checkpoint / "checkpoint_metrics.json").read_text(encoding="utf-8"))
        assert record["metrics"] == reference["metrics"][checkpoint.name], checkpoint.name  # exact, NaN as null
        cm = np.zeros((2, 2), dtype=np.int64)
        np.add.at(cm, (expected["labels"], expected["predictions"]), 1)
        assert record["confusion_matrix"] == cm.tolist(), checkpoint.name

    board = json.loads((run.run_dir / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))
    for entry in board["entries"]:
        assert entry["metrics"] == reference["metrics"][entry["checkpoint"]], entry["checkpoint"]
    for report in run.ranks:
        assert report["leaderboard"] == reference["ranking"]
        assert report["leaderboard_best"] == reference["best_checkpoint"]
        assert report["best_global_step"] == reference["best_global_step"]
        assert report["best_metric"] == reference["best_metric"] or (
            report["best_metric"] is None and reference["best_metric"] is None
        )

    if run.scenario.eval_size > 1:
        # A model that gives every example the same score would hide a mix-up of rows; one that never
        # learns would make the choice a tie-break. Neither is the case here.
        with np.load(run.reference_dir / f"{run.checkpoints[-1].name}.npz") as ref:
            last = {k: ref[k] for k in ref.files}
        assert len(np.unique(last["probabilities"][:, 0])) > run.scenario.eval_size // 2
        assert len(np.unique(last["predictions"])) == 2, "the model predicts one class only"
        values = [reference["metrics"][c.name]["recall_negative"] for c in run.checkpoints]
        assert len(set(values)) > 1, f"recall_negative is the same at every save: {values}"


def test_only_the_global_main_process_writes(run: Run):
    check_only_the_global_main_writes(run.writes, run.run_dir, run.checkpoints)


def read_writes(out: Path) -> dict[int, list[tuple[int, str]]]:
    """Launcher rank -> [(torch rank at write time, path)], from worker_train's ``writes-rank<R>.txt``."""
    return {r: _read_writes(out / f"writes-rank{r}.txt") for r in range(WORLD)}


def check_only_the_global_main_writes(writes: dict[int, list[tuple[int, str]]], run_dir: Path, checkpoints: list[Path]) -> None:
    """Rank 1 wrote nothing; rank 0 wrote the leaderboard, each checkpoint's record, scores and
    trainer_state.json, and the report at the end, and left no temporary file."""
    assert writes[1] == [], f"rank 1 wrote {len(writes[1])} file(s), e.g. {writes[1][:3]}"
    assert writes[0], "rank 0 wrote nothing: was the write recorder installed?"
    assert {rank for rank, _ in writes[0]} == {0}
    written = {Path(path) for _, path in writes[0]}
    expected = {run_dir / "checkpoint_leaderboard.json", run_dir / "checkpoint_leaderboard.md"}
    for checkpoint in checkpoints:
        expected |= {checkpoint / n for n in ("checkpoint_metrics.json", "checkpoint_scores.npz", "trainer_state.json")}
    report = {path for path in written if path.parent == run_dir / "report"}  # written at the end of training
    assert run_dir / "report" / "report.md" in report
    assert written - report == expected, f"unexpected files: {(written - report) ^ expected}"
    assert not list(run_dir.rglob(".*.tmp")), "temporary files left behind"


# ---- a launch the Trainer does not see as several processes --------------------------------------


def _check_refused(finished: list[Finished], *, out: Path) -> None:
    for f in finished:
        assert f.returncode not in (0, None), f"the misconfigured launch did not fail:\n{f.describe()}"
        assert "DistributedSetupError" in f.stderr, f"no DistributedSetupError:\n{f.describe()}"
        assert "--multi_gpu" in f.stderr, f"the error does not say how to launch:\n{f.describe()}"
    assert not list(out.glob("rank*.json")), "a worker finished training despite the misconfiguration"
    assert not list((out / "run").glob("checkpoint-*")), "a checkpoint was saved despite the misconfiguration"


def test_misconfigured_launch_world_size_without_process_group(tmp_path, tokenizer_dir):
    """``WORLD_SIZE=2`` in the environment (a launcher started two processes), but accelerate was not
    told to use the CPU, so it sets up no process group and the Trainer sees one process.

    (With ``ACCELERATE_USE_CPU=true`` accelerate itself refuses this environment, asking for
    ``MASTER_ADDR``, before trainer_ext runs; and ``accelerate launch --cpu --num_processes 2`` starts a
    single process with no ``WORLD_SIZE``, which evaluates everything once: nothing to refuse.)
    """
    out = tmp_path / "out"
    env = launch_env(use_cpu=False, WORLD_SIZE="2", RANK="0")
    finished = run_concurrently(
        [[sys.executable, *worker_arguments(out, tokenizer_dir, 5)]], env, tmp_path / "logs", timeout=120
    )
    _check_refused(finished, out=out)


def test_misconfigured_launch_torchrun_without_use_cpu(tmp_path, tokenizer_dir):
    """Plain torchrun on CPU without ``ACCELERATE_USE_CPU``: a process group of 2 exists, but the Trainer
    sees 1 process, so each rank would train and evaluate alone. Every rank must refuse."""
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), *worker_arguments(out, tokenizer_dir, 5),
    ]
    finished = run_concurrently([command], launch_env(use_cpu=False), tmp_path / "logs", timeout=120)
    _check_refused(finished, out=out)
    # torchrun prefixes each worker's lines with its rank; rank 0 raises at the latest in on_train_begin.
    assert "[rank0]: trainer_ext.errors.DistributedSetupError" in finished[0].stderr, finished[0].describe()


# ---- a failure on one rank -----------------------------------------------------------------------


def test_a_failure_on_one_rank_is_raised_on_every_rank(tmp_path):
    """evaluate_model fails on rank 0 only (a ConfigurationError: the model gives no logits for a long
    input): rank 0 raises it, rank 1 raises "failed on another process" at once instead of waiting in
    a collective that rank 0 never joins (rank 0 stays alive until rank 1 has reported)."""
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(HERE / "worker_failure.py"), "--out", str(out), "--wait", "30",
    ]
    finished = run_concurrently([command], launch_env(), tmp_path / "logs", timeout=60)
    check_succeeded(finished)
    reports = [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(WORLD)]
    assert reports[0]["error"] == "ConfigurationError", reports[0]
    assert "no 'logits'" in reports[0]["message"], reports[0]
    assert reports[1]["error"] == "RuntimeError", reports[1]
    assert "failed on another process" in reports[1]["message"], reports[1]
    assert reports[1]["seconds"] < 20, f"rank 1 was released by rank 0's exit, not by the library: {reports[1]}"


# ---- the batch plan and the shards, without a launch ----------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=0, max_size=120),
    batch_size=st.integers(min_value=1, max_value=16),
)
def test_batch_plan_and_shards(lengths, batch_size):
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.size
    batches = plan_batches(lengths, batch_size)
    if n == 0:
        assert batches == []
        return
    budget = batch_size * int(lengths.max())
    for batch in batches:
        assert len(batch) >= 1
        assert batch_cost(batch, lengths) <= budget or len(batch) == 1, (batch, lengths[batch], budget)
    assert sorted(i for b in batches for i in b.tolist()) == list(range(n))

    def batch_mates(shards: list[list[int]]) -> dict[int, tuple[int, ...]]:
        return {int(i): tuple(sorted(batches[b].tolist())) for shard in shards for b in shard for i in batches[b]}

    one_process = batch_mates(assign_batches(batches, lengths, 1))
    largest = max(batch_cost(b, lengths) for b in batches)
    for world in range(1, 9):
        # The plan is made without the world size; recomputing it gives the same batches.
        assert [b.tolist() for b in plan_batches(lengths, batch_size)] == [b.tolist() for b in batches]
        shards = assign_batches(batches, lengths, world)
        assert len(shards) == world
        dealt = sorted(b for shard in shards for b in shard)
        assert dealt == list(range(len(batches))), f"W={world}: batches not dealt exactly once: {shards}"
        indices = sorted(int(i) for shard in shards for b in shard for i in batches[b])
        assert indices == list(range(n)), f"W={world}: an example is missing or repeated"
        # Each example sits with the same batch-mates (so gets the same padded forward pass) for any W.
        assert batch_mates(shards) == one_process
        loads = [sum(batch_cost(batches[b], lengths) for b in shard) for shard in shards]
        assert max(loads) - min(loads) <= largest, f"W={world}: loads {loads}, largest batch {largest}"


def test_n_smaller_than_world_leaves_ranks_without_batches():
    """N < W: one example, eight ranks: one rank has the batch, seven have none (and pad their passes)."""
    lengths = np.array([7])
    batches = plan_batches(lengths, 4)
    shards = assign_batches(batches, lengths, 8)
    assert [len(s) for s in shards] == [1, 0, 0, 0, 0, 0, 0, 0]


# ---- issue 4's objectives on several processes ------------------------------------------------------


def test_richer_objectives_give_the_same_records_on_two_processes(tmp_path, tokenizer_dir):
    """Several held-out sets, cost matrix and prior, constraint, tuned threshold, bootstrap intervals and
    the paired comparison, keep_top_k: 2 processes write exactly what 1 process writes (same weights)."""
    run_on_one_and_world([str(HERE / "worker_objectives.py"), "--tokenizer", str(tokenizer_dir)], tmp_path, out="{}")

    def load(folder: Path) -> dict:
        # `epoch` differs by design: 2 processes go through the training data twice as fast
        board = json.loads((folder / "checkpoint_leaderboard.json").read_text(encoding="utf-8"))
        for entry in board["entries"]:
            entry.pop("epoch")
        records = {}
        for entry in board["entries"]:
            path = folder / entry["checkpoint"] / "checkpoint_metrics.json"
            if path.is_file():
                record = json.loads(path.read_text(encoding="utf-8"))
                record["evaluation"].pop("seconds")
                record["evaluation"].pop("processes")
                record.pop("epoch")
                records[entry["checkpoint"]] = record
        return {"board": board, "records": records}

    a, b = load(tmp_path / "one"), load(tmp_path / "two")
    assert a["board"] == b["board"]
    assert a["board"]["best_estimate"] is not None, a["board"]["reason"]  # the same seeded estimate on 1 and 2
    assert a["records"] == b["records"] and a["records"]
    record = next(iter(a["records"].values()))
    assert record["decision_threshold"] is not None and record["objective_interval"] is not None
    assert "reviews_2024_expected_cost" in record["metrics"] and "expected_cost" in record["metrics"]
    assert [e["checkpoint"] for e in a["board"]["entries"] if e["protected"]] == [a["board"]["best_checkpoint"]]
    for name in a["records"]:
        for set_name in ("reviews_2024", "reviews_2025"):
            s1 = np.load(tmp_path / "one" / name / f"checkpoint_scores.{set_name}.npz")
            s2 = np.load(tmp_path / "two" / name / f"checkpoint_scores.{set_name}.npz")
            assert all(np.array_equal(s1[k], s2[k]) for k in ("labels", "predictions", "probabilities"))
