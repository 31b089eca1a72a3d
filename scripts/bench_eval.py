#!/usr/bin/env python
"""Benchmark the callback's held-out evaluation: wall time, peak memory and agreement of predictions.

Prints measured figures; it is not a test. One model (a Llama-architecture sequence classifier built from
config, randomly initialised, vocabulary from a tokenizer trained here) and one held-out set (``--examples``
token sequences whose lengths are log-normal, clipped to [8, 256], like real reviews; token ids are slices
of a stream of tokenized synthetic reviews, each ending with [EOS]; deterministic from ``--seed``).

``--task`` picks the head (default ``single_label``, the run described here; the other tasks of issue 11
are described under "Tasks" below).

Methods (each in a fresh Python process, see "Memory" below):

* ``callback``   what BestCheckpointCallback runs at each save: ``trainer_ext.evaluation.evaluate_model``
                 (length-sorted batches under a token budget,
                 at most B rows each on the CPU, DataCollatorWithPadding) + ``compute_metrics``;
* ``trainer``    ``Trainer.evaluate`` with a ``compute_metrics`` giving the same keys (softmax of the logits,
                 then ``trainer_ext.metrics.compute_metrics``), same ``per_device_eval_batch_size``;
* ``loop``       a plain ``no_grad`` forward loop in dataset order, batches of B padded to their longest row;
* ``sorted``     the same loop over length-sorted batches of B (the floor on this hardware);
* ``naive``      reload the checkpoint from disk (``from_pretrained``) and predict one example at a time, timed
                 on the first ``--naive-examples`` examples and extrapolated linearly to the whole set
                 (load time once + per-example time x N).

Every method is warmed up once (on a 64-example subset), then timed ``--repeats`` times on the whole set,
the methods interleaved round by round (one worker process per method stays alive, only one runs at a
time), so that load from other processes drifting over the run does not favour one method; the best time
is reported with the spread (max - min), and the CPU seconds (user + system) of the run. All methods must
give the same predictions as the callback: argmax equal for every example, probabilities within 1e-5 (the
max abs difference is printed).

Tasks (``--task``): the same architecture family, sizes, log-normal lengths and token streams, another head:

* ``multi_label``  ``LlamaForSequenceClassification``, ``problem_type="multi_label_classification"``, 5 labels,
                   multi-hot labels (each label on for 30 % of the examples); objective ``f1_macro``;
* ``token``        ``LlamaForTokenClassification`` with IOB2 tags O, B-PER, I-PER, B-LOC, I-LOC; per-token tags
                   (entities of 1-3 tokens), ``-100`` on the final [EOS] and on 15 % of the other tokens (the
                   non-first sub-words of Hugging Face's recipe); objective ``recall_per``;
* ``regression``   ``LlamaForSequenceClassification``, ``num_labels=1``, ``problem_type="regression"``, float
                   labels; objective ``mae``;
* ``label_words``  ``LlamaForCausalLM`` with ``LabelWords({"NEGATIVE": " negative", "POSITIVE": " positive"})``
                   (one token each; the tokenizer is trained on the label texts too); ``--label-words multi``:
                   ``{"NEGATIVE": " quite negative", "POSITIVE": " very positive indeed"}`` (2 and 3 tokens, the
                   path that reuses the prompt's KV cache). Prompts: a log-normal-length slice of the review
                   stream ending with the tokens of " sentiment :", no [EOS]; objective ``recall_negative``.

For these tasks the methods are:

* ``callback``  exactly what the callback runs: ``HeldOutSets.prepare`` once (``on_train_begin``: the task read
                from the model, or ``LabelWords``; ``prepare_held_out``; the task's collator; the probe), then at
                each save ``HeldOutSets.evaluate`` (``evaluate_model`` + ``score_checkpoint`` with the objective's
                default 1000-resample bootstrap interval);
* ``sorted``    the floor: a plain ``no_grad`` loop over length-sorted batches of B, right-padded, doing the
                task's own minimal work and nothing else: multi-label, the sigmoid of the logits (and >= 0.5);
                token, the softmax of each real token's logits and its argmax; regression, the one output;
                label words, what a careful user writes by hand: the batch LEFT-padded (position ids from the
                mask) so that the model's ``logits_to_keep=1`` computes only the last prompt position's logits,
                the log-softmax of that row read at the label tokens; for a label of L > 1 tokens one more
                forward of its L - 1 continuation tokens on a copy of the prompt's KV cache (the cheapest exact
                way we know: a forward of prompt + label per class recomputes the prompt, see ``concat``);
* ``loop``      the same loop in dataset order;
* ``concat``    (label words only) the issue's definition of the score, by hand: per class, one forward of
                prompt + label text (length-sorted batches of B, right-padded) and the sum of the label tokens'
                log-probabilities; an independent check of the callback's KV-cache path, and what the cache saves.

Agreement for these tasks: predictions equal everywhere (multi-label: every label of every example at 0.5;
token: the argmax tag of every real token; label words: the argmax class) and the scores within
``--tolerance`` (multi-label: sigmoid probabilities; token: per-token tag probabilities; label words: class
probabilities; regression: the predicted values, which have no argmax). ``Trainer.evaluate`` and ``naive`` are
single-label only.

Memory: each method runs in its own fresh process; "peak MB" is that process's RSS high-water mark
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``: Python, torch, model, data and the method's own
allocations) at the end; "+MB" is the growth of that mark over its value right after setup (model loaded,
data in memory, Trainer built), i.e. what the evaluation itself added.

Threads: 1-process workers run with ``--threads`` threads (default: the cores available), set through
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` and ``torch.set_num_threads``. With ``--processes P`` the callback's
evaluation is also launched as P processes with ``--threads // P`` threads each
(``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes P ...``), which on this machine is
the fair comparison (same cores), and compared with the 1-process run in the same invocation (timed
``--repeats`` times before and ``--repeats`` times after the launch).

Usage (from the repository root)::

    .venv/bin/python scripts/bench_eval.py                  # five methods, 1 process x all cores
    .venv/bin/python scripts/bench_eval.py --processes 2    # callback: 2 processes x 1 thread vs 1 x 2
    .venv/bin/python scripts/bench_eval.py --threads 1      # five methods, 1 thread: robust to other load
    .venv/bin/python scripts/bench_eval.py --quick          # small smoke run (~1 min)
    .venv/bin/python scripts/bench_eval.py --task token --threads 1     # callback, loop, sorted on a token tagger
    .venv/bin/python scripts/bench_eval.py --task label_words --label-words multi --quick
    python3 scripts/bench_eval.py --device cuda --hidden-size 1024 --num-layers 8   # on a GPU (gpu_check.sh)

``--device cuda`` runs every method on the first GPU (fp32; the model is moved there after loading, the
naive way's load time includes the move; the forward timer synchronises the device); ``--results-json``
writes the ratios, targets and agreement as JSON (what ``scripts/gpu_check.sh`` reads); ``--tolerance``
is the largest probability difference allowed between methods (default 1e-5; on a GPU, kernels chosen
by batch shape differ in rounding, so gpu_check passes 1e-4).

The default run took 160-180 s on an idle 2-core machine (Trainer.evaluate and the dataset-order loop are
the slow methods; ``--threads 1`` about 5 minutes), and up to 10 minutes while other processes loaded it.
``--task <t> --threads 1`` (every method of the task, 2 runs each) took 210-310 s here; the floor's figure
alone, ``--task <t> --threads 1 --methods callback,sorted --repeats 4 --pin-malloc``, 145-235 s.
The work folder (checkpoint, held-out ids, worker logs) is a temporary folder removed after a successful
run, unless ``--workdir`` names one.

Noise from the allocator (``--pin-malloc``): with glibc's defaults, a worker may return a run's freed activation
memory to the system and fault it in again in the next run; how much depends on the process's heap history,
not on the method. Measured here (label words, 2,000 examples, one thread, three runs per process, two
processes per method): identical work took 16.9-21.8 s of wall time with 24,000 to 980,000 minor page faults
and up to 2.3 s of system time per run; with ``--pin-malloc`` no faults, system time 0.02-0.08 s, and user
CPU seconds 15.5-17.3 for both methods. Best-of-2 is then no longer a coin flip between methods. It applies
to every method alike; the default run leaves the allocator as it is.

Other processes running on the machine make every figure slower and noisier, multi-threaded runs much
more than single-threaded ones (a thread that loses its core stalls its partner at every parallel region):
the load average is printed before and after, each run's CPU utilisation (CPU seconds / wall seconds) is
printed with its times, and a warning says when a run got clearly less CPU than it had threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLES = REPO / "examples"

MIN_LENGTH, MAX_LENGTH = 8, 256  # tokens, [EOS] included
WARMUP_EXAMPLES = 64
PROBABILITY_TOLERANCE = 1e-5
WORKER_TIMEOUT = 1200  # seconds per worker process

TARGET_VS_TRAINER = 0.4  # callback seconds / Trainer.evaluate seconds, at most
TARGET_VS_SORTED = 1.1  # callback seconds / length-sorted loop seconds, at most
TARGET_NAIVE_SPEEDUP = 20.0  # naive seconds / callback seconds, at least

METHOD_TITLES = {
    "callback": "callback: evaluate_model + compute_metrics",
    "trainer": "Trainer.evaluate (+ compute_metrics)",
    "loop": "plain loop, dataset order",
    "sorted": "plain loop, length-sorted",
    "naive": "naive: reload + 1 example at a time",
    "concat": "plain loop, length-sorted, prompt + label per class",
}

TASKS = ("single_label", "multi_label", "token", "regression", "label_words")
# Methods each task has, in print order; the default run is every one of them.
TASK_METHODS = {
    "single_label": ("callback", "trainer", "loop", "sorted", "naive"),
    "multi_label": ("callback", "loop", "sorted"),
    "token": ("callback", "loop", "sorted"),
    "regression": ("callback", "loop", "sorted"),
    "label_words": ("callback", "loop", "sorted", "concat"),
}
TASK_OBJECTIVES = {"multi_label": "f1_macro", "token": "recall_per", "regression": "mae", "label_words": "recall_negative"}
MULTI_LABEL_NAMES = ("billing", "shipping", "defect", "refund", "account")
MULTI_LABEL_SHARE = 0.3  # each label is on for this share of the examples
TOKEN_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
TOKEN_IGNORED_SHARE = 0.15  # tokens labelled -100 besides [EOS] (non-first sub-words)
LABEL_WORDS = {
    "single": {"NEGATIVE": " negative", "POSITIVE": " positive"},
    "multi": {"NEGATIVE": " quite negative", "POSITIVE": " very positive indeed"},  # 2 and 3 tokens
}
PROMPT_SUFFIX = " Sentiment:"  # the prompt's last tokens (" sentiment", ":"), after the review slice

# Variables a surrounding launcher may have set; a worker must not inherit them.
_LAUNCHER_VARIABLES = (
    "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION",
    "ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_CONFIG_FILE",
)


@dataclass(frozen=True)
class BenchConfig:
    """Everything that defines the model, the data and the protocol; written to the work folder."""

    examples: int
    hidden_size: int
    num_layers: int
    vocab_size: int
    batch_size: int
    repeats: int
    naive_examples: int
    median_length: float
    length_sigma: float
    seed: int
    device: str = "cpu"
    task: str = "single_label"
    label_words: str = "single"  # label_words task: "single" (one-token label texts) or "multi"
    model_vocab: int = 0  # label_words task: the causal LM's vocabulary (0: the tokenizer's)


# ---- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=None, help="held-out examples (default 2000; 400 with --quick)")
    parser.add_argument("--hidden-size", type=int, default=None, help="model width (default 256; 64 with --quick); 4 heads")
    parser.add_argument("--num-layers", type=int, default=None, help="decoder layers (default 4; 2 with --quick)")
    parser.add_argument("--vocab-size", type=int, default=2000, help="tokenizer training target (the corpus may give fewer)")
    parser.add_argument("--batch-size", type=int, default=32, help="B: per_device_eval_batch_size / loop batch rows")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method (after one warm-up), >= 2")
    parser.add_argument("--naive-examples", type=int, default=None, help="subset timed for the naive way (default 200)")
    parser.add_argument("--median-length", type=float, default=64.0, help="median token length of the log-normal")
    parser.add_argument("--length-sigma", type=float, default=0.75, help="sigma of log(length)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=cores, help=f"threads of a 1-process run (default: {cores} cores)")
    parser.add_argument("--processes", type=int, default=1,
                        help="P > 1: only the callback's evaluation, P processes x threads/P vs 1 process x threads")
    parser.add_argument("--task", choices=TASKS, default="single_label",
                        help="the model's head (default single_label); see Tasks in the description")
    parser.add_argument("--label-words", choices=tuple(LABEL_WORDS), default="single",
                        help="label_words task: one-token label texts (single) or 2-3 tokens (multi, KV-cache path)")
    parser.add_argument("--model-vocab", type=int, default=0,
                        help="label_words task: the causal LM's vocabulary size, at least the tokenizer's (ids beyond "
                             "it are never used; real causal LMs have 32,000-150,000); default: the tokenizer's")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of the task's methods (1-process mode; default: all of them, "
                             "single_label: callback,trainer,loop,sorted,naive); callback is always run")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one callback evaluation")
    parser.add_argument("--pin-malloc", action="store_true",
                        help="every worker with glibc's MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 2**32: freed "
                             "activations stay in the heap instead of being unmapped and faulted in again (see Noise)")
    parser.add_argument("--quick", action="store_true", help="small smoke run: 400 examples, hidden 64, 2 layers")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every method runs (1 process)")
    parser.add_argument("--tolerance", type=float, default=PROBABILITY_TOLERANCE,
                        help=f"largest probability difference between methods (default {PROBABILITY_TOLERANCE:g})")
    parser.add_argument("--results-json", type=Path, default=None, help="also write ratios, targets and agreement here")
    parser.add_argument("--workdir", type=Path, default=None, help="where fixture and results go (default: a temp folder)")
    # internal: one method in a worker process
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    cli = parser.parse_args(argv)
    defaults = {"examples": (400, 2000), "hidden_size": (64, 256), "num_layers": (2, 4), "naive_examples": (50, 200)}
    for name, (quick, full) in defaults.items():
        if getattr(cli, name) is None:
            setattr(cli, name, quick if cli.quick else full)
    if cli.worker is None:
        _check(cli.examples >= 1, f"--examples must be >= 1; got {cli.examples}.")
        _check(cli.repeats >= 2, f"--repeats must be >= 2 (best and spread need two runs); got {cli.repeats}.")
        _check(cli.batch_size >= 1, f"--batch-size must be >= 1; got {cli.batch_size}.")
        _check(cli.hidden_size % 4 == 0, f"--hidden-size must be a multiple of 4 (4 heads); got {cli.hidden_size}.")
        _check(1 <= cli.naive_examples, f"--naive-examples must be >= 1; got {cli.naive_examples}.")
        _check(cli.processes >= 1, f"--processes must be >= 1; got {cli.processes}.")
        _check(cli.device == "cpu" or cli.processes == 1, "--processes > 1 runs on the CPU only; drop --device cuda.")
        _check(cli.threads >= cli.processes,
               f"--threads ({cli.threads}) must be >= --processes ({cli.processes}): each process needs a thread.")
        allowed = TASK_METHODS[cli.task]
        if cli.methods is None:
            cli.methods = ",".join(allowed)
        unknown = set(cli.methods.split(",")) - set(allowed)
        _check(not unknown, f"--methods: {sorted(unknown)} not available for --task {cli.task}; allowed: {list(allowed)}.")
        _check(cli.label_words == "single" or cli.task == "label_words",
               f"--label-words {cli.label_words} applies to --task label_words only; got --task {cli.task}.")
        _check(cli.model_vocab == 0 or cli.task == "label_words",
               f"--model-vocab applies to --task label_words only; got --task {cli.task}.")
    return cli


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"bench_eval.py: {message}")


# ---- the fixture: tokenizer, model checkpoint, held-out token ids -------------------------------


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def build_fixture(config: BenchConfig, workdir: Path) -> dict:
    """Train the tokenizer, build and save the model, draw the held-out set; all deterministic."""
    if config.task != "single_label":
        return build_task_fixture(config, workdir)
    sys.path.insert(0, str(EXAMPLES))
    _quiet_transformers()
    from synthetic_reviews import make_reviews, tiny_llama_classifier, train_tokenizer

    reviews = make_reviews(4000, seed=config.seed)
    texts = [r["text"] for r in reviews]
    tokenizer = train_tokenizer(texts, vocab_size=config.vocab_size)
    model = tiny_llama_classifier(
        tokenizer, hidden_size=config.hidden_size, num_layers=config.num_layers, seed=config.seed
    )
    checkpoint = workdir / "checkpoint"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)

    # A stream of real review tokens; each example is a slice of it of its drawn length, ending with [EOS].
    stream = np.array(
        [t for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in ids], dtype=np.int64
    )
    rng = np.random.default_rng(config.seed)
    lengths = np.clip(
        np.rint(rng.lognormal(np.log(config.median_length), config.length_sigma, config.examples)),
        MIN_LENGTH, MAX_LENGTH,
    ).astype(np.int64)
    starts = rng.integers(0, stream.size - MAX_LENGTH, config.examples)
    labels = (rng.random(config.examples) >= 0.3).astype(np.int64)  # 30% NEGATIVE (0), as the reviews
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    flat = np.empty(int(offsets[-1]), dtype=np.int64)
    for i, (start, length) in enumerate(zip(starts, lengths)):
        flat[offsets[i] : offsets[i + 1] - 1] = stream[start : start + length - 1]
        flat[offsets[i + 1] - 1] = tokenizer.eos_token_id
    np.savez(workdir / "held_out.npz", flat=flat, offsets=offsets, labels=labels)
    return {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "vocab": len(tokenizer),
        "heads": model.config.num_attention_heads,
        "intermediate": model.config.intermediate_size,
        "lengths": lengths,
    }


def _label_texts(config: BenchConfig) -> dict[str, str]:
    return LABEL_WORDS[config.label_words]


def _model_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification

    return {"token": AutoModelForTokenClassification, "label_words": AutoModelForCausalLM}.get(
        task, AutoModelForSequenceClassification
    )


def _task_model(config: BenchConfig, tokenizer):
    """The task's Llama-architecture model from config: the sizes of ``tiny_llama_classifier`` (4 heads,
    intermediate 2 x hidden, untied embeddings), another head; weights depend only on ``--seed``."""
    import torch
    from transformers import AutoConfig

    options: dict = dict(
        vocab_size=max(len(tokenizer), config.model_vocab), hidden_size=config.hidden_size, intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.num_layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=MAX_LENGTH + 8,  # label words: a 256-token prompt plus its continuation
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    names = {"multi_label": MULTI_LABEL_NAMES, "token": TOKEN_TAGS}.get(config.task)
    if names is not None:
        options.update(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    if config.task == "multi_label":
        options["problem_type"] = "multi_label_classification"
    if config.task == "regression":
        options.update(num_labels=1, problem_type="regression")
    torch.manual_seed(config.seed)
    return _model_class(config.task).from_config(AutoConfig.for_model("llama", **options))


def _token_tags(rng: np.random.Generator, length: int) -> np.ndarray:
    """IOB2 tag ids for ``length`` tokens, the last being [EOS] (-100): entities of 1-3 tokens start at
    12 % of the tokens; 15 % of the tokens that are not an entity's first get -100 (non-first sub-words)."""
    tags = np.zeros(length, dtype=np.int64)
    j = 0
    while j < length - 1:
        if rng.random() < 0.12:
            begin = 1 + 2 * int(rng.integers(0, 2))  # B-PER (1) or B-LOC (3); I- is begin + 1
            span = min(int(rng.integers(1, 4)), length - 1 - j)
            tags[j] = begin
            tags[j + 1 : j + span] = begin + 1
            j += span
        else:
            j += 1
    ignored = (rng.random(length) < TOKEN_IGNORED_SHARE) & ~np.isin(tags, (1, 3))
    tags[ignored] = -100
    tags[-1] = -100  # [EOS], a special token
    return tags


def build_task_fixture(config: BenchConfig, workdir: Path) -> dict:
    """:func:`build_fixture` for the tasks beyond single-label: the same review stream, lengths and sizes,
    the task's model and labels (see Tasks in the module docstring)."""
    sys.path.insert(0, str(EXAMPLES))
    _quiet_transformers()
    from synthetic_reviews import make_reviews, train_tokenizer

    reviews = make_reviews(4000, seed=config.seed)
    texts = [r["text"] for r in reviews]
    extra = []
    if config.task == "label_words":  # so that every label word is a token of its own, as in the example
        extra = [PROMPT_SUFFIX + text for words in LABEL_WORDS.values() for text in words.values()] * 20
    tokenizer = train_tokenizer(texts + extra, vocab_size=config.vocab_size)
    model = _task_model(config, tokenizer)
    checkpoint = workdir / "checkpoint"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)

    stream = np.array(
        [t for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in ids], dtype=np.int64
    )
    rng = np.random.default_rng(config.seed)
    lengths = np.clip(
        np.rint(rng.lognormal(np.log(config.median_length), config.length_sigma, config.examples)),
        MIN_LENGTH, MAX_LENGTH,
    ).astype(np.int64)
    starts = rng.integers(0, stream.size - MAX_LENGTH, config.examples)
    # The end of every example: [EOS] as the tokenizer appends it, or the prompt's suffix for label words.
    ending = (tokenizer(PROMPT_SUFFIX, add_special_tokens=False)["input_ids"] if config.task == "label_words"
              else [tokenizer.eos_token_id])
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    flat = np.empty(int(offsets[-1]), dtype=np.int64)
    for i, (start, length) in enumerate(zip(starts, lengths)):
        body = length - len(ending)
        flat[offsets[i] : offsets[i] + body] = stream[start : start + body]
        flat[offsets[i] + body : offsets[i + 1]] = ending
    arrays = {"flat": flat, "offsets": offsets}
    if config.task == "multi_label":
        arrays["labels"] = (rng.random((config.examples, len(MULTI_LABEL_NAMES))) < MULTI_LABEL_SHARE).astype(np.int64)
        described = f"{len(MULTI_LABEL_NAMES)} labels {list(MULTI_LABEL_NAMES)}, each on for {MULTI_LABEL_SHARE:.0%} of the examples"
    elif config.task == "token":
        arrays["token_labels"] = np.concatenate([_token_tags(rng, int(n)) for n in lengths])
        arrays["labels"] = np.zeros(config.examples, dtype=np.int64)  # unused: the labels are per token
        labelled = int((arrays["token_labels"] >= 0).sum())
        described = (f"IOB2 tags {list(TOKEN_TAGS)}, {labelled:,} labelled tokens, -100 on [EOS] and "
                     f"{TOKEN_IGNORED_SHARE:.0%} of the others")
    elif config.task == "regression":
        arrays["labels"] = rng.normal(0.0, 1.0, config.examples)
        described = "float labels ~ N(0, 1)"
    else:
        arrays["labels"] = (rng.random(config.examples) >= 0.3).astype(np.int64)  # 30% NEGATIVE (0)
        words = _label_texts(config)
        tokens = {name: len(tokenizer(text, add_special_tokens=False)["input_ids"]) for name, text in words.items()}
        described = (f"LabelWords({words}) ({', '.join(f'{k}: {v} token(s)' for k, v in tokens.items())}), prompts end "
                     f"with {PROMPT_SUFFIX!r}, 30% NEGATIVE")
    np.savez(workdir / "held_out.npz", **arrays)
    return {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "vocab": len(tokenizer),
        "heads": model.config.num_attention_heads,
        "intermediate": model.config.intermediate_size,
        "lengths": lengths,
        "model_class": type(model).__name__,
        "model_vocab": model.config.vocab_size,
        "labels": described,
    }


def load_held_out(workdir: Path) -> tuple[list[list[int]], np.ndarray | list]:
    """Token ids per example and the labels (per-token lists for the token task)."""
    data = np.load(workdir / "held_out.npz")
    flat, offsets = data["flat"], data["offsets"]
    ids = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    if "token_labels" in data:
        tags = data["token_labels"]
        return ids, [tags[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    return ids, data["labels"]


# ---- worker side: one method in a fresh process -------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ForwardTimer:
    """Wall seconds spent inside ``model.forward`` (top-level hooks, a few microseconds per call)."""

    def __init__(self, model) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._start = 0.0
        self._synchronize = _synchronizer(model)
        model.register_forward_pre_hook(self._before)
        model.register_forward_hook(self._after)

    def _before(self, module, args) -> None:
        self._synchronize()
        self._start = time.perf_counter()

    def _after(self, module, args, output) -> None:
        self._synchronize()  # on a GPU, forward returns before its kernels finish
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def _synchronizer(model):
    import torch

    device = next(model.parameters()).device
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


class TimedCollate:
    """A collator wrapper that adds up the wall seconds spent collating."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __call__(self, features):
        start = time.perf_counter()
        out = self.inner(features)
        self.seconds += time.perf_counter() - start
        return out

    def reset(self) -> None:
        self.seconds = 0.0


def _softmax(logits):
    import torch

    return torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float32)  # as evaluate_model


def _dataset(ids: list[list[int]], labels: np.ndarray):
    from datasets import Dataset

    return Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels.tolist()}
    )


class CallbackMethod:
    """``evaluate_model`` + ``compute_metrics``, as ``BestCheckpointCallback._evaluate_and_rank`` runs them."""

    def __init__(self, checkpoint: Path, ids, labels, batch_size: int, device: str = "cpu") -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

        from trainer_ext.evaluation import prepare_held_out
        from trainer_ext.metrics import class_slugs

        self.model = AutoModelForSequenceClassification.from_pretrained(checkpoint).to(device)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        names = [self.model.config.id2label[i] for i in sorted(self.model.config.id2label)]
        self.slugs = class_slugs(names)
        dataset = _dataset(ids, labels)
        start = time.perf_counter()
        self.held_out = prepare_held_out(dataset, name="holdout", label_names=names)
        self.prepare_seconds = time.perf_counter() - start  # once per training run, at on_train_begin
        self.warmup_set = prepare_held_out(
            _dataset(ids[:WARMUP_EXAMPLES], labels[:WARMUP_EXAMPLES]), name="warmup", label_names=names
        )
        self.collate = TimedCollate(DataCollatorWithPadding(tokenizer))
        self.batch_size = batch_size
        self.forward = ForwardTimer(self.model)
        self.metrics_seconds = 0.0

    def run(self, warmup: bool = False):
        from trainer_ext.evaluation import evaluate_model
        from trainer_ext.metrics import compute_metrics

        held_out = self.warmup_set if warmup else self.held_out
        output = evaluate_model(
            self.model, held_out, collate=self.collate, batch_size=self.batch_size, num_classes=len(self.slugs)
        )
        start = time.perf_counter()
        compute_metrics(output.labels, output.predictions, output.probabilities, label_names=self.slugs)
        self.metrics_seconds = time.perf_counter() - start
        return output.probabilities, output.predictions, np.arange(len(held_out))

    def breakdown(self) -> dict:
        return {"collate_s": self.collate.seconds, "forward_s": self.forward.seconds,
                "forward_calls": self.forward.calls, "metrics_s": self.metrics_seconds}

    def reset(self) -> None:
        self.collate.reset()
        self.forward.reset()


class TrainerMethod:
    """``Trainer.evaluate`` with a ``compute_metrics`` that returns the callback's keys."""

    def __init__(self, checkpoint: Path, ids, labels, batch_size: int, output_dir: Path, device: str = "cpu") -> None:
        from transformers import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            DataCollatorWithPadding,
            Trainer,
            TrainingArguments,
        )

        from trainer_ext.metrics import class_slugs, compute_metrics

        self.model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        names = [self.model.config.id2label[i] for i in sorted(self.model.config.id2label)]
        slugs = class_slugs(names)
        self.captured: dict = {}

        def metrics_from_logits(eval_pred):
            import torch

            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            probabilities = _softmax(torch.from_numpy(np.asarray(logits)))
            self.captured["probabilities"] = probabilities
            return compute_metrics(eval_pred.label_ids, probabilities=probabilities, label_names=slugs)

        args = TrainingArguments(
            output_dir=str(output_dir),
            per_device_eval_batch_size=batch_size,
            use_cpu=device == "cpu",  # else the Trainer moves the model to the GPU
            report_to=[],
            disable_tqdm=True,
        )
        self.collate = TimedCollate(DataCollatorWithPadding(tokenizer))
        self.dataset = _dataset(ids, labels)
        self.warmup_set = self.dataset.select(range(min(WARMUP_EXAMPLES, len(ids))))
        self.trainer = Trainer(
            model=self.model, args=args, data_collator=self.collate, compute_metrics=metrics_from_logits
        )
        self.forward = ForwardTimer(self.model)

    def run(self, warmup: bool = False):
        dataset = self.warmup_set if warmup else self.dataset
        self.trainer.evaluate(eval_dataset=dataset)
        probabilities = self.captured["probabilities"]
        return probabilities, probabilities.argmax(axis=1), np.arange(len(dataset))

    def breakdown(self) -> dict:
        return {"collate_s": self.collate.seconds, "forward_s": self.forward.seconds, "forward_calls": self.forward.calls}

    def reset(self) -> None:
        self.collate.reset()
        self.forward.reset()


class LoopMethod:
    """A plain ``no_grad`` loop: batches of B rows, right-padded to the batch's longest row."""

    def __init__(self, checkpoint: Path, ids, batch_size: int, *, length_sorted: bool, device: str = "cpu") -> None:
        from transformers import AutoModelForSequenceClassification

        self.device = device
        self.model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval().to(device)
        self.pad_id = self.model.config.pad_token_id
        self.ids = ids
        self.batch_size = batch_size
        self.length_sorted = length_sorted
        self.forward = ForwardTimer(self.model)
        self.collate_seconds = 0.0

    def run(self, warmup: bool = False):
        import torch

        n = min(WARMUP_EXAMPLES, len(self.ids)) if warmup else len(self.ids)
        lengths = np.array([len(x) for x in self.ids[:n]])
        order = np.argsort(-lengths, kind="stable") if self.length_sorted else np.arange(n)
        probabilities = np.empty((n, self.model.config.num_labels), dtype=np.float32)
        with torch.no_grad():
            for begin in range(0, n, self.batch_size):
                index = order[begin : begin + self.batch_size]
                start = time.perf_counter()
                width = int(lengths[index].max())
                input_ids = torch.full((len(index), width), self.pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(index), width), dtype=torch.long)
                for row, i in enumerate(index):
                    input_ids[row, : lengths[i]] = torch.tensor(self.ids[i])
                    attention_mask[row, : lengths[i]] = 1
                input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
                self.collate_seconds += time.perf_counter() - start
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
                probabilities[index] = _softmax(logits)
        return probabilities, probabilities.argmax(axis=1), np.arange(n)

    def breakdown(self) -> dict:
        return {"collate_s": self.collate_seconds, "forward_s": self.forward.seconds, "forward_calls": self.forward.calls}

    def reset(self) -> None:
        self.collate_seconds = 0.0
        self.forward.reset()


class NaiveMethod:
    """Reload the checkpoint from disk, then one ``no_grad`` forward per example (no padding)."""

    def __init__(self, checkpoint: Path, ids, naive_examples: int, device: str = "cpu") -> None:
        self.checkpoint = checkpoint
        self.device = device
        self.ids = ids[: min(naive_examples, len(ids))]
        self.load_seconds = 0.0
        self.forward_seconds = 0.0

    def run(self, warmup: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification

        subset = self.ids[:8] if warmup else self.ids
        start = time.perf_counter()
        model = AutoModelForSequenceClassification.from_pretrained(self.checkpoint).eval().to(self.device)
        _synchronizer(model)()
        loaded = time.perf_counter()
        probabilities = np.empty((len(subset), model.config.num_labels), dtype=np.float32)
        with torch.no_grad():
            for i, ids in enumerate(subset):
                probabilities[i] = _softmax(model(input_ids=torch.tensor([ids], device=self.device)).logits)[0]
        self.load_seconds = loaded - start
        self.forward_seconds = time.perf_counter() - loaded
        return probabilities, probabilities.argmax(axis=1), np.arange(len(subset))

    def breakdown(self) -> dict:
        return {"load_s": self.load_seconds, "per_example_loop_s": self.forward_seconds, "subset": len(self.ids)}

    def reset(self) -> None:
        pass


# ---- the tasks beyond single-label ---------------------------------------------------------------


def _task_dataset(task: str, ids: list[list[int]], labels):
    """The held-out set as a user gives it to the callback: model-ready features and the task's labels
    (label words: the prompts' ``input_ids`` and the class id as ``label``)."""
    from datasets import Dataset

    if task == "label_words":
        return Dataset.from_dict({"input_ids": ids, "label": [int(v) for v in labels]})
    columns = {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}
    columns["labels"] = labels if isinstance(labels, list) else labels.tolist()
    return Dataset.from_dict(columns)


def comparable_output(task: str, scores: np.ndarray, predictions: np.ndarray, lengths: np.ndarray):
    """``(scores, predictions, index)`` of every method of a task in one layout, for the agreement check:
    the callback's own arrays, except token classification, whose ``[N, W]`` tags and ``[N, W, C]``
    probabilities become the real tokens' ``[T]`` and ``[T, C]``, example by example, in token order."""
    if task == "token":
        real = np.arange(predictions.shape[1])[None, :] < np.asarray(lengths)[:, None]
        return scores[real], predictions[real], np.arange(len(lengths))
    return scores, predictions, np.arange(len(predictions))


class TaskCallbackMethod:
    """What the callback runs for a task beyond single-label, through the callback's own object:
    ``HeldOutSets.prepare`` once (as ``on_train_begin``), then ``HeldOutSets.evaluate`` per save
    (``evaluate_model`` + ``score_checkpoint`` with the objective's default 1000-resample interval)."""

    def __init__(self, checkpoint: Path, ids, labels, config: BenchConfig, device: str = "cpu") -> None:
        from transformers import AutoTokenizer

        from trainer_ext import LabelWords
        from trainer_ext.config import CallbackConfig
        from trainer_ext.holdout import HeldOutSets

        self.task = config.task
        self.model = _model_class(config.task).from_pretrained(checkpoint).to(device)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        task = LabelWords(_label_texts(config)) if config.task == "label_words" else config.task

        def prepare(n: int) -> HeldOutSets:
            arguments = CallbackConfig.from_arguments(
                _task_dataset(config.task, ids[:n], labels[:n]), TASK_OBJECTIVES[config.task], task=task,
                batch_size=config.batch_size,
            )
            return HeldOutSets.prepare(arguments, self.model, tokenizer)

        start = time.perf_counter()
        self.sets = prepare(len(ids))
        self.prepare_seconds = time.perf_counter() - start  # once per training run, at on_train_begin
        self.warmup_sets = prepare(min(WARMUP_EXAMPLES, len(ids)))
        self.collate = TimedCollate(self.sets.collate)
        self.sets.collate = self.warmup_sets.collate = self.collate
        self.lengths = np.array([len(x) for x in ids])
        self.forward = ForwardTimer(self.model)
        self.metrics_seconds = 0.0

    def run(self, warmup: bool = False):
        sets = self.warmup_sets if warmup else self.sets
        start = time.perf_counter()
        evaluation = sets.evaluate(self.model, None, "checkpoint-bench")
        self.metrics_seconds = time.perf_counter() - start - evaluation.info["seconds"]  # score_checkpoint
        output = evaluation.outputs[None]
        return comparable_output(self.task, output.probabilities, output.predictions, self.lengths[: len(output.labels)])

    def breakdown(self) -> dict:
        return {"collate_s": self.collate.seconds, "forward_s": self.forward.seconds,
                "forward_calls": self.forward.calls, "metrics_s": self.metrics_seconds,
                "metrics_name": "score_checkpoint (keys + 1000-resample interval)"}

    def reset(self) -> None:
        self.collate.reset()
        self.forward.reset()


def _cache_argument(output) -> tuple[object, str]:
    """The KV cache a forward returned and the argument that takes it back (``cache`` in transformers 5.x,
    ``past_key_values`` in 4.x)."""
    cache = getattr(output, "cache", None)
    return (cache, "cache") if cache is not None else (getattr(output, "past_key_values", None), "past_key_values")


class TaskLoopMethod:
    """The plain ``no_grad`` loop of a task beyond single-label, batches of B (length-sorted or in dataset
    order), doing the task's own minimal work (see Tasks in the module docstring: for label words, left
    padding and ``logits_to_keep=1``, and the KV cache for the tokens after a label's first)."""

    def __init__(self, checkpoint: Path, ids, config: BenchConfig, *, length_sorted: bool, device: str = "cpu") -> None:
        from transformers import AutoTokenizer

        self.task = config.task
        self.device = device
        self.model = _model_class(config.task).from_pretrained(checkpoint).eval().to(device)
        self.pad_id = self.model.config.pad_token_id
        self.ids = ids
        self.batch_size = config.batch_size
        self.length_sorted = length_sorted
        self.label_ids: list[list[int]] = []
        if config.task == "label_words":
            tokenizer = AutoTokenizer.from_pretrained(checkpoint)
            self.label_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in _label_texts(config).values()]
        self.forward = ForwardTimer(self.model)
        self.collate_seconds = 0.0

    def _pad(self, sequences: list[list[int]], *, left: bool = False):
        """``input_ids`` and ``attention_mask`` of the batch, padded to its longest row (on the left or right)."""
        import torch

        width = max(len(x) for x in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            span = slice(width - len(ids), width) if left else slice(0, len(ids))
            input_ids[row, span] = torch.tensor(ids)
            attention_mask[row, span] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def run(self, warmup: bool = False):
        import torch

        n = min(WARMUP_EXAMPLES, len(self.ids)) if warmup else len(self.ids)
        lengths = np.array([len(x) for x in self.ids[:n]])
        order = np.argsort(-lengths, kind="stable") if self.length_sorted else np.arange(n)
        out: list = [None] * n
        with torch.no_grad():
            for begin in range(0, n, self.batch_size):
                index = order[begin : begin + self.batch_size]
                start = time.perf_counter()
                input_ids, attention_mask = self._pad([self.ids[i] for i in index], left=self.task == "label_words")
                self.collate_seconds += time.perf_counter() - start
                for i, value in zip(index, self._batch(input_ids, attention_mask, lengths[index])):
                    out[i] = value
        if self.task == "regression":
            values = np.array(out, dtype=np.float64)
            return values, values, np.arange(n)
        scores = np.concatenate(out) if self.task == "token" else np.stack(out)
        predictions = (scores >= 0.5).astype(np.int64) if self.task == "multi_label" else scores.argmax(axis=-1)
        return scores, predictions, np.arange(n)

    def _batch(self, input_ids, attention_mask, lengths: np.ndarray) -> list:
        """Per example of the batch: its scores (regression: its value)."""
        import torch

        if self.task == "label_words":
            return list(self._label_word_probabilities(input_ids, attention_mask))
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        if self.task == "multi_label":
            return list(torch.sigmoid(logits.float()).cpu().numpy().astype(np.float32))
        if self.task == "regression":
            return list(logits[:, 0].float().cpu().numpy())
        probabilities = torch.softmax(logits.float(), dim=-1).cpu().numpy()  # token: [b, width, tags]
        return [probabilities[row, : lengths[row]] for row in range(len(lengths))]

    def _label_word_probabilities(self, input_ids, attention_mask) -> np.ndarray:
        """Softmax over classes of the summed label-token log-probabilities, for a LEFT-padded batch."""
        import copy

        import torch

        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        multi_token = any(len(t) > 1 for t in self.label_ids)
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                            use_cache=multi_token, logits_to_keep=1)
        first = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        scores = first[:, [t[0] for t in self.label_ids]].clone()
        if multi_token:
            cache, argument = _cache_argument(output)
            rows, lengths = input_ids.shape[0], attention_mask.sum(-1)
            for c, tokens in enumerate(self.label_ids):
                if len(tokens) == 1:
                    continue
                follow = torch.tensor(tokens, device=input_ids.device)
                steps = len(tokens) - 1
                continued = self.model(
                    input_ids=follow[:-1].expand(rows, steps),
                    attention_mask=torch.cat([attention_mask, attention_mask.new_ones((rows, steps))], -1),
                    position_ids=lengths[:, None] + torch.arange(steps, device=input_ids.device),
                    use_cache=True, **{argument: copy.deepcopy(cache)},
                )
                later = torch.log_softmax(continued.logits.float(), dim=-1)
                scores[:, c] += later.gather(-1, follow[1:].expand(rows, steps)[..., None]).squeeze(-1).sum(-1)
        return torch.softmax(scores, dim=-1).cpu().numpy().astype(np.float32)

    def breakdown(self) -> dict:
        return {"collate_s": self.collate_seconds, "forward_s": self.forward.seconds, "forward_calls": self.forward.calls}

    def reset(self) -> None:
        self.collate_seconds = 0.0
        self.forward.reset()


class ConcatMethod(TaskLoopMethod):
    """Label words by the issue's definition: per class, one forward of prompt + label text (length-sorted
    batches of B, right-padded), the sum of the label tokens' log-probabilities, softmax over classes."""

    def __init__(self, checkpoint: Path, ids, config: BenchConfig, device: str = "cpu") -> None:
        super().__init__(checkpoint, ids, config, length_sorted=True, device=device)

    def run(self, warmup: bool = False):
        import torch

        n = min(WARMUP_EXAMPLES, len(self.ids)) if warmup else len(self.ids)
        prompt_lengths = np.array([len(x) for x in self.ids[:n]])
        order = np.argsort(-prompt_lengths, kind="stable")
        sums = np.empty((n, len(self.label_ids)), dtype=np.float32)
        with torch.no_grad():
            for begin in range(0, n, self.batch_size):
                index = order[begin : begin + self.batch_size]
                for c, tokens in enumerate(self.label_ids):
                    start = time.perf_counter()
                    input_ids, attention_mask = self._pad([self.ids[i] + tokens for i in index])
                    self.collate_seconds += time.perf_counter() - start
                    logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
                    logp = torch.log_softmax(logits.float(), dim=-1)
                    # label token j sits at prompt_length + j, predicted by the position before it
                    device = logp.device
                    where = (torch.as_tensor(prompt_lengths[index], device=device)[:, None] - 1
                             + torch.arange(len(tokens), device=device))
                    rows = torch.arange(len(index), device=device)[:, None]
                    picked = logp[rows, where, torch.tensor(tokens, device=device)[None, :]]
                    sums[index, c] = picked.sum(-1).cpu().numpy()
        probabilities = torch.softmax(torch.from_numpy(sums), dim=-1).numpy().astype(np.float32)
        return probabilities, probabilities.argmax(axis=1), np.arange(n)


def _make_method(name: str, workdir: Path, config: BenchConfig):
    checkpoint = workdir / "checkpoint"
    ids, labels = load_held_out(workdir)
    device = config.device
    if config.task != "single_label":
        if name in ("callback", "callback-dist"):
            return TaskCallbackMethod(checkpoint, ids, labels, config, device)
        if name in ("loop", "sorted"):
            return TaskLoopMethod(checkpoint, ids, config, length_sorted=name == "sorted", device=device)
        if name == "concat":
            return ConcatMethod(checkpoint, ids, config, device)
        raise SystemExit(f"bench_eval.py: method {name!r} is not available for task {config.task!r}")
    if name in ("callback", "callback-dist"):
        return CallbackMethod(checkpoint, ids, labels, config.batch_size, device)
    if name == "trainer":
        return TrainerMethod(checkpoint, ids, labels, config.batch_size, workdir / "trainer_output", device)
    if name in ("loop", "sorted"):
        return LoopMethod(checkpoint, ids, config.batch_size, length_sorted=name == "sorted", device=device)
    if name == "naive":
        return NaiveMethod(checkpoint, ids, config.naive_examples, device)
    raise SystemExit(f"bench_eval.py: unknown worker method {name!r}")


class WorkerSession:
    """One method in this process: set up once, then warm-up, timed runs and a final report on request."""

    def __init__(self, cli: argparse.Namespace) -> None:
        import torch

        torch.set_num_threads(cli.threads)
        _quiet_transformers()
        self.cli = cli
        self.config = BenchConfig(**json.loads((cli.workdir / "config.json").read_text(encoding="utf-8")))
        if cli.worker == "callback-dist":
            from accelerate import PartialState

            PartialState()  # initialises the gloo process group from the launcher's environment
        import trainer_ext.distributed as distributed

        self.distributed = distributed
        self.method = _make_method(cli.worker, cli.workdir, self.config)
        self.setup_rss = _peak_rss_mb()
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.breakdowns: list[dict] = []
        self.result = None

    def warmup(self) -> None:
        self.method.run(warmup=True)

    def timed_run(self) -> float:
        import torch

        self.method.reset()
        self.distributed.barrier()
        if self.config.device == "cuda":
            torch.cuda.synchronize()
        cpu_start, start = _cpu_seconds(), time.perf_counter()
        self.result = self.method.run()
        if self.config.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        self.times.append(seconds)
        self.cpu.append(_cpu_seconds() - cpu_start)
        self.breakdowns.append(self.method.breakdown())
        return seconds

    def finish(self) -> None:
        """Write ``<method>.json`` (every rank's facts) and ``<method>.npz`` (scores of the last run)."""
        import torch

        profile_lines = _profile(self.method) if self.cli.profile and self.cli.worker == "callback" else []
        facts = {
            "rank": self.distributed.rank(),
            "world": self.distributed.world_size(),
            "torch_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "setup_rss_mb": self.setup_rss,
            "peak_rss_mb": _peak_rss_mb(),
            "times": self.times,
            "cpu_seconds": self.cpu,
            "breakdowns": self.breakdowns,
            "prepare_seconds": getattr(self.method, "prepare_seconds", None),
            "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if self.config.device == "cuda" else None,
        }
        every_rank = self.distributed.all_gather_objects(facts)
        if self.distributed.is_main():
            probabilities, predictions, index = self.result
            workdir, name = self.cli.workdir, self.cli.worker
            np.savez(workdir / f"{name}.npz", probabilities=probabilities, predictions=predictions, index=index)
            report = {"ranks": every_rank, "profile": profile_lines}
            (workdir / f"{name}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        self.distributed.barrier()


_REPLY = "@@bench "  # prefix of the protocol lines a serving worker writes


def run_worker(cli: argparse.Namespace) -> None:
    """One-shot (under a launcher): warm up, time ``repeats`` runs, finish. Serving (``--serve``): obey
    ``warmup`` / ``run`` / ``finish`` lines on stdin, so that the parent can interleave the methods."""
    if not cli.serve:
        session = WorkerSession(cli)
        session.warmup()
        for _ in range(session.config.repeats):
            session.timed_run()
        session.finish()
        return
    # The protocol owns the real stdout; anything else printed (Trainer logs, warnings) goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    session = WorkerSession(cli)
    protocol.write(f"{_REPLY}ready\n")
    for line in sys.stdin:
        command = line.strip()
        if command == "warmup":
            session.warmup()
            protocol.write(f"{_REPLY}done\n")
        elif command == "run":
            protocol.write(f"{_REPLY}{session.timed_run():.6f}\n")
        elif command == "finish":
            session.finish()
            protocol.write(f"{_REPLY}done\n")
            return


def _profile(method: CallbackMethod) -> list[str]:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    method.run()
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(18)
    return [line for line in stream.getvalue().splitlines() if line.strip()]


# ---- parent side: launch the workers, check, print ---------------------------------------------


# --pin-malloc: glibc keeps freed memory instead of unmapping or trimming it (values as measured here).
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def _worker_env(threads: int, *, cuda: bool = False, pin_malloc: bool = False, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    if pin_malloc:
        env.update(PINNED_MALLOC)
    env.update(
        OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1",
    )
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accelerate_command() -> list[str]:
    binary = Path(sys.executable).with_name("accelerate")
    return [str(binary), "launch"] if binary.exists() else [sys.executable, "-m", "accelerate.commands.launch"]


def launch_workers(method: str, cli: argparse.Namespace, *, processes: int, threads: int) -> dict:
    """Launch ``method`` as ``processes`` ranks under ``accelerate launch``, one-shot (warm-up, ``repeats``
    timed runs, report); return the report. Stops the benchmark, showing the end of the workers' output, if
    the launch fails or times out (the whole launch, in its own process group, is then killed)."""
    script = [str(Path(__file__).resolve()), "--worker", method, "--workdir", str(cli.workdir), "--threads", str(threads)]
    command = [
        *_accelerate_command(), "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
        "--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", *script,
    ]
    log = cli.workdir / f"{method}.log"
    label = f"{method} ({processes} processes x {threads} thread{'s' if threads > 1 else ''})"
    print(f"  launching {label} ...", end=" ", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        launch = subprocess.Popen(
            command, env=_worker_env(threads, pin_malloc=cli.pin_malloc, ACCELERATE_USE_CPU="true"), stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = launch.wait(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)  # the launcher and its ranks: only what this call started
            launch.wait()
            code = "timeout"
    print(f"{time.perf_counter() - start:.0f} s")
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        raise SystemExit(f"bench_eval.py: {label} failed ({code}); last lines of {log}:\n" + "\n".join(tail))
    return _load_report(cli.workdir, method, command)


class ServedWorker:
    """A worker process serving one method (``--serve``); the parent drives it one command at a time."""

    def __init__(self, method: str, cli: argparse.Namespace, *, threads: int) -> None:
        self.method = method
        self.workdir = cli.workdir
        self.command = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--serve",
                        "--workdir", str(cli.workdir), "--threads", str(threads)]
        if cli.profile and method == "callback":
            self.command.append("--profile")
        self.log_path = cli.workdir / f"{method}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            self.command, env=_worker_env(threads, cuda=cli.device == "cuda", pin_malloc=cli.pin_malloc),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, text=True, bufsize=1,
        )
        self._reply("start")

    def _reply(self, what: str) -> str:
        # A watchdog kills a worker that does not answer in time, so that the benchmark cannot hang.
        watchdog = threading.Timer(WORKER_TIMEOUT, self.process.kill)
        watchdog.start()
        try:
            for line in self.process.stdout:
                if line.startswith(_REPLY):
                    return line[len(_REPLY):].strip()
        finally:
            watchdog.cancel()
        self.process.wait()
        self._log.flush()
        tail = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        raise SystemExit(f"bench_eval.py: worker {self.method} died during {what} (exit {self.process.returncode}); "
                         f"last lines of {self.log_path}:\n" + "\n".join(tail))

    def _ask(self, command: str) -> str:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._reply(command)

    def warmup(self) -> None:
        self._ask("warmup")

    def run(self) -> float:
        return float(self._ask("run"))

    def finish(self) -> dict:
        self._ask("finish")
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self._log.close()
        return _load_report(self.workdir, self.method, self.command)


def _load_report(workdir: Path, method: str, command: list[str]) -> dict:
    report = json.loads((workdir / f"{method}.json").read_text(encoding="utf-8"))
    scores = np.load(workdir / f"{method}.npz")
    report["probabilities"], report["predictions"], report["index"] = (
        scores["probabilities"], scores["predictions"], scores["index"]
    )
    report["command"] = command
    return report


@dataclass
class Row:
    key: str
    title: str
    seconds: float  # wall seconds, best of the repeats (extrapolated for naive)
    spread: float  # max - min of the repeats (extrapolated for naive)
    cpu_seconds: float  # CPU seconds (user + system, all threads and ranks) of the best-CPU repeat
    peak_mb: float
    added_mb: float
    note: str = ""


def method_title(method: str, task: str) -> str:
    if task != "single_label" and method == "callback":
        return "callback: HeldOutSets.evaluate (evaluate_model + score_checkpoint)"
    return METHOD_TITLES[method]


def summarise(key: str, report: dict, *, examples: int, title: str | None = None) -> Row:
    ranks = report["ranks"]
    # Under several processes a run takes as long as its slowest rank.
    times = [max(r["times"][k] for r in ranks) for k in range(len(ranks[0]["times"]))]
    peak = sum(r["peak_rss_mb"] for r in ranks)
    added = sum(r["peak_rss_mb"] - r["setup_rss_mb"] for r in ranks)
    cpu = [sum(r["cpu_seconds"][k] for r in ranks) for k in range(len(times))]
    best, spread, best_cpu, note = min(times), max(times) - min(times), min(cpu), ""
    if key == "naive":
        # Load once + the per-example loop scaled from the subset to the whole set, per repeat; CPU seconds
        # scaled by the same factor.
        scaled = [b["load_s"] + b["per_example_loop_s"] * examples / b["subset"] for b in ranks[0]["breakdowns"]]
        best, spread = min(scaled), max(scaled) - min(scaled)
        best_cpu = min(c * s / t for c, s, t in zip(cpu, scaled, times))
        subset = ranks[0]["breakdowns"][0]["subset"]
        note = f"extrapolated from {subset} examples"
    if len(ranks) > 1:
        note = f"{len(ranks)} processes, peak = sum of ranks"
    return Row(key, title or METHOD_TITLES[key], best, spread, best_cpu, peak, added, note)


# What "equal predictions" and the score difference mean, per task, in the agreement lines.
AGREEMENT_WORDS = {
    "single_label": ("argmax", "dp"),
    "multi_label": ("predictions at 0.5 (every label)", "dp"),
    "token": ("argmax tag of every real token", "dp"),
    "regression": (None, "dv"),  # values: no argmax to compare
    "label_words": ("argmax class", "dp"),
}


def check_agreement(reference: dict, other: dict, task: str = "single_label") -> tuple[bool, int, float, float]:
    """(predictions equal everywhere, number of differing predictions, max |score - score_ref|, smallest
    margin of a differing prediction: |p0 - p1| (single-label), the top-two probability gap (token,
    label words), |p - 0.5| (multi-label)). Regression: predictions are the values, only their difference
    counts. Different shapes (a method lost a token or an example) are a disagreement."""
    if task != "single_label":
        return _check_task_agreement(reference, other, task)
    index = other["index"]
    ref_p, ref_pred = reference["probabilities"][index], reference["predictions"][index]
    differing = other["predictions"] != ref_pred
    max_diff = float(np.abs(other["probabilities"] - ref_p).max()) if index.size else 0.0
    margin = float(np.abs(ref_p[differing, 0] - ref_p[differing, 1]).min()) if differing.any() else float("nan")
    return (not differing.any()), int(differing.sum()), max_diff, margin


def _check_task_agreement(reference: dict, other: dict, task: str) -> tuple[bool, int, float, float]:
    # Every method of these tasks covers the whole held-out set (no subset like single-label's naive).
    ref_p, ref_pred = reference["probabilities"], reference["predictions"]
    p, pred = other["probabilities"], other["predictions"]
    if p.shape != ref_p.shape or pred.shape != ref_pred.shape:
        return False, -1, float("inf"), float("nan")
    max_diff = float(np.abs(p.astype(np.float64) - ref_p).max()) if p.size else 0.0
    if task == "regression":
        return True, 0, max_diff, float("nan")
    differing = pred != ref_pred
    margin = float("nan")
    if differing.any():
        if task == "multi_label":
            margin = float(np.abs(ref_p[differing] - 0.5).min())
        else:
            top = np.sort(ref_p[differing.reshape(differing.shape[0], -1).any(axis=1)], axis=-1)
            margin = float((top[:, -1] - top[:, -2]).min())
    return (not differing.any()), int(differing.sum()), max_diff, margin


def work_figures(lengths: np.ndarray, batch_size: int, processes: int = 1, device: str = "cpu") -> dict[str, str]:
    """Batches and padded tokens of each method's batching (what the forward passes compute over)."""
    from trainer_ext.evaluation import assign_batches, batch_cost, max_batch_rows, plan_batches

    real = int(lengths.sum())

    def fixed(order):
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return len(batches), sum(len(b) * int(lengths[b].max()) for b in batches)

    n_loop, pad_loop = fixed(np.arange(lengths.size))
    n_sorted, pad_sorted = fixed(np.argsort(-lengths, kind="stable"))
    plan = plan_batches(lengths, batch_size, max_rows=max_batch_rows(device, batch_size))  # as evaluate_model
    pad_plan = sum(batch_cost(b, lengths) for b in plan)
    rows = [len(b) for b in plan]
    figures = {
        "callback": f"{len(plan)} batches of {min(rows)}..{max(rows)} rows, {pad_plan:,} padded tokens ({pad_plan / real:.2f}x real)",
        "trainer": f"{n_loop} batches of <= {batch_size} rows, {pad_loop:,} padded tokens ({pad_loop / real:.2f}x real)",
        "loop": f"{n_loop} batches of <= {batch_size} rows, {pad_loop:,} padded tokens ({pad_loop / real:.2f}x real)",
        "sorted": f"{n_sorted} batches of <= {batch_size} rows, {pad_sorted:,} padded tokens ({pad_sorted / real:.2f}x real)",
        "naive": f"{lengths.size} forward passes of 1 row, {real:,} tokens (no padding)",
    }
    if processes > 1:
        shards = assign_batches(plan, lengths, processes)
        loads = [sum(batch_cost(plan[b], lengths) for b in s) for s in shards]
        figures["shards"] = ", ".join(f"rank {r}: {len(s)} batches, {t:,} padded tokens" for r, (s, t) in enumerate(zip(shards, loads)))
    return figures


def label_word_figures(workdir: Path, config: BenchConfig, lengths: np.ndarray, figures: dict[str, str]) -> dict[str, str]:
    """The label-words methods' work: continuation passes on the KV cache, and prompt + label per class."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(workdir / "checkpoint")
    tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in _label_texts(config).values()]
    longer = [t for t in tokens if t > 1]
    n_sorted = -(-lengths.size // config.batch_size)
    order = np.argsort(-lengths, kind="stable")
    padded = sum(
        len(b) * (int(lengths[b].max()) + t)
        for t in tokens for b in (order[i : i + config.batch_size] for i in range(0, lengths.size, config.batch_size))
    )
    extra = (f"; per batch + {len(longer)} continuation forward(s) of {', '.join(str(t - 1) for t in longer)} token(s) "
             f"on a copy of the prompt's KV cache" if longer else "; every label one token: one forward per batch")
    return {
        "callback": figures["callback"] + extra,
        "sorted": figures["sorted"] + extra + "; logits of the last position only (logits_to_keep=1, left padding)",
        "loop": figures["loop"] + extra + "; logits of the last position only",
        "concat": f"{len(tokens)} x {n_sorted} batches of <= {config.batch_size} rows of prompt + label, {padded:,} padded tokens",
    }


def vocab_note(fixture: dict) -> str:
    model_vocab = fixture.get("model_vocab", fixture["vocab"])
    return "" if model_vocab == fixture["vocab"] else f"; the model's vocabulary {model_vocab:,} (--model-vocab)"


def _task_title(config: BenchConfig) -> str:
    if config.task == "single_label":
        return ""  # today's single-label output, unchanged
    words = f", label words {config.label_words}" if config.task == "label_words" else ""
    return f"task {config.task}{words}, "


def machine_facts(device: str = "cpu") -> dict[str, str]:
    import torch
    import transformers

    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    facts = {
        "cpu": f"{cpu_model}; {os.cpu_count()} logical cores, {available} available to this process",
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}",
    }
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        facts["gpu"] = f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return facts


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def _print_method_details(row: Row, report: dict, figure: str) -> None:
    ranks = report["ranks"]
    times = ", ".join(f"{t:.2f}" for t in ranks[0]["times"])
    threads = "; ".join(f"rank {r['rank']}: torch {r['torch_threads']} threads (OMP_NUM_THREADS={r['omp_num_threads']})" for r in ranks)
    util = [c / t for r in ranks for c, t in zip(r["cpu_seconds"], r["times"])]
    b = ranks[0]["breakdowns"][int(np.argmin(ranks[0]["times"]))]
    parts = []
    if "forward_s" in b:
        calls = max(1, b["forward_calls"])
        parts.append(f"forward {b['forward_s']:.2f} s in {b['forward_calls']} calls")
        parts.append(f"collate {b['collate_s']:.3f} s ({b['collate_s'] / calls * 1000:.1f} ms/batch)")
        parts.append(f"other {min(ranks[0]['times']) - b['forward_s'] - b['collate_s']:.3f} s")
        if "metrics_s" in b:
            parts.append(f"{b.get('metrics_name', 'compute_metrics')} {b['metrics_s'] * 1000:.1f} ms")
    if "load_s" in b:
        parts.append(f"from_pretrained {b['load_s']:.2f} s + {b['subset']} single-example forwards {b['per_example_loop_s']:.2f} s "
                     f"({b['per_example_loop_s'] / b['subset'] * 1000:.1f} ms/example)")
    print(f"  {row.title}")
    what = f"runs on {b['subset']} examples" if "subset" in b else "runs (rank 0)"
    print(f"    {what}: {times} s; best {row.seconds:.2f} s, spread {row.spread:.2f} s, {row.cpu_seconds:.2f} CPU s"
          f"{'; ' + row.note if row.note else ''}")
    print(f"    best run: {'; '.join(parts)}")
    print(f"    work: {figure}")
    print(f"    threads: {threads}; CPU utilisation (cpu s / wall s) {min(util):.2f}..{max(util):.2f}")
    cuda_peak = ranks[0].get("cuda_peak_mb")
    print(f"    memory: peak RSS {row.peak_mb:.0f} MB, +{row.added_mb:.0f} MB over setup"
          + (f"; GPU peak allocated {cuda_peak:.0f} MB" if cuda_peak is not None else ""))
    if ranks[0].get("prepare_seconds") is not None:
        print(f"    (one-time prepare_held_out at on_train_begin: {ranks[0]['prepare_seconds']:.2f} s, not in the time)")


def _print_table(rows: list[Row], ratio_to: Row, ratio_label: str) -> None:
    print(f"| method | seconds (best, spread) | CPU seconds | peak RSS MB (+ over setup) | ratio ({ratio_label}) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        note = f" ({row.note})" if row.note else ""
        print(f"| {row.title}{note} | {row.seconds:.2f} ± {row.spread:.2f} | {row.cpu_seconds:.1f} | "
              f"{row.peak_mb:.0f} (+{row.added_mb:.0f}) | {row.seconds / ratio_to.seconds:.2f} |")


def main(argv: list[str] | None = None) -> None:
    cli = parse_args(argv)
    if cli.worker is not None:
        run_worker(cli)
        return

    wall_start = time.perf_counter()
    load_before = os.getloadavg()
    temporary = cli.workdir is None
    command_line = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    cli.workdir = (cli.workdir or Path(tempfile.mkdtemp(prefix="bench_eval_"))).resolve()
    cli.workdir.mkdir(parents=True, exist_ok=True)
    config = BenchConfig(
        examples=cli.examples, hidden_size=cli.hidden_size, num_layers=cli.num_layers, vocab_size=cli.vocab_size,
        batch_size=cli.batch_size, repeats=cli.repeats, naive_examples=min(cli.naive_examples, cli.examples),
        median_length=cli.median_length, length_sigma=cli.length_sigma, seed=cli.seed, device=cli.device,
        task=cli.task, label_words=cli.label_words, model_vocab=cli.model_vocab,
    )
    (cli.workdir / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")

    print(f"bench_eval: {command_line}")
    facts = machine_facts(cli.device)
    for key, value in facts.items():
        print(f"  {key}: {value}")
    print(f"  load average before: {load_before[0]:.2f} (1 min), {load_before[1]:.2f} (5 min)")
    if load_before[0] > 0.5 and cli.device == "cpu":
        print("  WARNING: other processes are using the CPU; times are slower and noisier than on an idle machine.")

    fixture = build_fixture(config, cli.workdir)
    lengths = fixture["lengths"]
    if config.task != "single_label":
        print(f"  task: {config.task} (objective {TASK_OBJECTIVES[config.task]!r}); labels: {fixture['labels']}")
    print(
        f"  model: {fixture.get('model_class', 'LlamaForSequenceClassification')} from config, hidden {config.hidden_size}, "
        f"{config.num_layers} layers, "
        f"{fixture['heads']} heads, intermediate {fixture['intermediate']}, vocab {fixture['vocab']} "
        f"(WordPiece trained here{vocab_note(fixture)}), {fixture['parameters'] / 1e6:.2f} M parameters, fp32, on {config.device}"
    )
    print(
        f"  held-out: {config.examples} examples, token lengths log-normal (median {config.median_length:g}, "
        f"sigma {config.length_sigma:g}) clipped to [{MIN_LENGTH}, {MAX_LENGTH}]: mean {lengths.mean():.1f}, "
        f"median {np.median(lengths):.0f}, p90 {np.percentile(lengths, 90):.0f}, max {lengths.max()}, "
        f"{int(lengths.sum()):,} tokens"
    )
    print(f"  batch size B = {config.batch_size}; {config.repeats} timed runs per method after one warm-up "
          f"({WARMUP_EXAMPLES} examples); work folder {cli.workdir}")
    if cli.pin_malloc:
        print(f"  allocator: every worker with {', '.join(f'{k}={v}' for k, v in PINNED_MALLOC.items())} (--pin-malloc)")
    figures = work_figures(lengths, config.batch_size, cli.processes, config.device)
    if config.task == "label_words":
        figures.update(label_word_figures(cli.workdir, config, lengths, figures))

    if cli.processes > 1:
        run_processes_mode(cli, config, figures, facts, command_line, load_before, wall_start)
    else:
        run_methods_mode(cli, config, figures, facts, command_line, load_before, wall_start)
    if temporary:  # kept (its path was printed above) when a worker failed or predictions disagreed
        shutil.rmtree(cli.workdir, ignore_errors=True)


def _print_contention_warning(reports: list[dict]) -> None:
    """Say so when a run got much less CPU than it had threads: the wall figures are then not idle figures."""
    worst = []
    for report in reports:
        for r in report["ranks"]:
            utilisation = min(c / t for c, t in zip(r["cpu_seconds"], r["times"]))
            if utilisation < 0.8 * r["torch_threads"]:
                worst.append(f"{utilisation:.2f} of {r['torch_threads']}")
    if worst:
        print()
        print(f"WARNING: some runs got far less CPU than their threads (cpu s / wall s: {', '.join(sorted(set(worst)))}): "
              f"other processes were using the cores, so wall times (and ratios between methods) are not those of an "
              f"idle machine. Re-run on an idle machine, compare the CPU-seconds column, or use --threads 1 "
              f"(a single thread loses only its fair share of a busy machine).")


def _print_footer(facts: dict, command_line: str, load_before, wall_start: float, threads_line: str) -> None:
    load_after = os.getloadavg()
    print()
    print(f"Command: `{command_line}`")
    print(f"Machine: {facts['cpu']}, {facts['memory']}; {facts['software']}.")
    print(f"Threads: {threads_line}")
    print(f"Load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}. "
          f"Whole benchmark: {time.perf_counter() - wall_start:.0f} s.")


def run_methods_mode(cli, config: BenchConfig, figures, facts, command_line, load_before, wall_start) -> None:
    wanted = ["callback"] + [m for m in cli.methods.split(",") if m != "callback"]
    order = [m for m in METHOD_TITLES if m in wanted]
    print()
    print(f"Starting {len(order)} worker processes, one per method, {cli.threads} thread(s) each; "
          f"set-up and warm-up one at a time:")
    workers = {}
    for m in order:
        start = time.perf_counter()
        workers[m] = ServedWorker(m, cli, threads=cli.threads)
        workers[m].warmup()
        print(f"  {m}: ready in {time.perf_counter() - start:.0f} s", flush=True)
    print("Timed runs, interleaved (one method runs at a time; the order rotates each round):")
    for round_number in range(config.repeats):
        shift = round_number % len(order)
        times = []
        for m in order[shift:] + order[:shift]:
            times.append(f"{m} {workers[m].run():.2f} s")
        print(f"  round {round_number + 1}: " + ", ".join(times), flush=True)
    reports = {m: workers[m].finish() for m in order}
    rows = {m: summarise(m, reports[m], examples=config.examples, title=method_title(m, config.task)) for m in order}

    print()
    print("Details:")
    for m in order:
        _print_method_details(rows[m], reports[m], figures[m])
    if reports["callback"]["profile"]:
        print()
        print("cProfile of one callback evaluation (sorted by own time):")
        for line in reports["callback"]["profile"]:
            print(f"    {line}")

    print()
    task = config.task
    compared, score = AGREEMENT_WORDS[task]
    scores_are = "values" if task == "regression" else "probabilities"
    print(f"Agreement with the callback's predictions (tolerance {cli.tolerance:g} on {scores_are}):")
    all_agree = True
    agreement: dict[str, dict] = {}
    for m in order[1:]:
        equal, n_diff, max_diff, margin = check_agreement(reports["callback"], reports[m], task)
        ok = equal and max_diff <= cli.tolerance
        all_agree &= ok
        agreement[m] = {"argmax_equal": equal, "differing": n_diff, "max_abs_dp": max_diff, "ok": ok}
        if task == "single_label":
            extra = "" if equal else f"; {n_diff} differ (smallest margin |p0 - p1| among them {margin:.2e})"
            print(f"  {m:8s} {len(reports[m]['index']):5d} examples: argmax {'equal' if equal else 'DIFFERENT'}, "
                  f"max |dp| = {max_diff:.2e} -> {'OK' if ok else 'MISMATCH'}{extra}")
            continue
        if n_diff < 0:
            print(f"  {m:8s} {len(reports[m]['index']):5d} examples: outputs of another shape "
                  f"({reports[m]['predictions'].shape} vs the callback's {reports['callback']['predictions'].shape}) -> MISMATCH")
            continue
        what = "" if compared is None else f"{compared} {'equal' if equal else 'DIFFERENT'}, "
        extra = "" if equal else f"; {n_diff} differ (smallest margin among them {margin:.2e})"
        print(f"  {m:8s} {len(reports[m]['index']):5d} examples: {what}max |{score}| = {max_diff:.2e} "
              f"-> {'OK' if ok else 'MISMATCH'}{extra}")

    callback = rows["callback"]
    print()
    print(f"Ratios and targets{' (' + _task_title(config)[:-2] + ')' if config.task != 'single_label' else ''}:")
    def cpu_ratio(a: Row, b: Row) -> str:
        return f"(CPU seconds: {_fmt_ratio(a.cpu_seconds / b.cpu_seconds)})"

    print("  (targets judged on wall seconds; the CPU-seconds ratio is less sensitive to other load on the machine)")
    if "trainer" in rows:
        r = callback.seconds / rows["trainer"].seconds
        print(f"  callback / Trainer.evaluate   = {_fmt_ratio(r)}  target <= {TARGET_VS_TRAINER}x: "
              f"{'MET' if r <= TARGET_VS_TRAINER else f'NOT MET (by {r / TARGET_VS_TRAINER:.2f}x)'}  "
              f"{cpu_ratio(callback, rows['trainer'])}")
    if "sorted" in rows:
        r = callback.seconds / rows["sorted"].seconds
        print(f"  callback / length-sorted loop = {_fmt_ratio(r)}  target <= {TARGET_VS_SORTED}x: "
              f"{'MET' if r <= TARGET_VS_SORTED else f'NOT MET (by {r / TARGET_VS_SORTED:.2f}x)'}  "
              f"{cpu_ratio(callback, rows['sorted'])}")
    if "loop" in rows:
        print(f"  callback / loop, dataset order = {_fmt_ratio(callback.seconds / rows['loop'].seconds)}  (no target)  "
              f"{cpu_ratio(callback, rows['loop'])}")
    if "concat" in rows:
        print(f"  callback / prompt + label per class = {_fmt_ratio(callback.seconds / rows['concat'].seconds)}  (no target)  "
              f"{cpu_ratio(callback, rows['concat'])}")
    if "naive" in rows:
        r = rows["naive"].seconds / callback.seconds
        print(f"  naive / callback              = {_fmt_ratio(r)}  target >= {TARGET_NAIVE_SPEEDUP:g}x: "
              f"{'MET' if r >= TARGET_NAIVE_SPEEDUP else f'NOT MET (short by {TARGET_NAIVE_SPEEDUP / r:.2f}x)'}  "
              f"{cpu_ratio(rows['naive'], callback)}  (naive extrapolated from {config.naive_examples} examples)")
    print(f"  predictions: {'all methods agree' if all_agree else 'MISMATCH, see above'}")

    print()
    print(f"Table ({_task_title(config)}{config.examples} examples, hidden {config.hidden_size}, {config.num_layers} layers, "
          f"B = {config.batch_size}, 1 process x {cli.threads} threads, best of {config.repeats} runs):")
    print()
    _print_table([rows[m] for m in order], callback, "seconds / callback")
    _print_contention_warning([reports[m] for m in order])
    _print_footer(facts, command_line, load_before, wall_start,
                  f"every method ran in its own process with OMP_NUM_THREADS=MKL_NUM_THREADS={cli.threads} and "
                  f"torch.set_num_threads({cli.threads}) (torch reported {reports['callback']['ranks'][0]['torch_threads']}; "
                  f"interop {reports['callback']['ranks'][0]['interop_threads']}).")
    if cli.results_json is not None:
        write_results_json(cli.results_json, config, facts, rows, agreement, all_agree, cli.tolerance)
    if not all_agree:
        raise SystemExit(1)


def write_results_json(path: Path, config: BenchConfig, facts: dict, rows: dict, agreement: dict,
                       all_agree: bool, tolerance: float) -> None:
    """Seconds per method, the three ratios with their targets, and the agreement, for gpu_check."""
    callback = rows["callback"].seconds
    ratios = {}
    if "trainer" in rows:
        ratios["callback_vs_trainer"] = {"value": callback / rows["trainer"].seconds, "target": TARGET_VS_TRAINER, "at_most": True}
    if "sorted" in rows:
        ratios["callback_vs_sorted"] = {"value": callback / rows["sorted"].seconds, "target": TARGET_VS_SORTED, "at_most": True}
    if "naive" in rows:
        ratios["naive_vs_callback"] = {"value": rows["naive"].seconds / callback, "target": TARGET_NAIVE_SPEEDUP, "at_most": False}
    payload = {
        "task": config.task, "config": asdict(config), "machine": facts, "tolerance": tolerance,
        "seconds": {key: {"best": row.seconds, "spread": row.spread, "note": row.note} for key, row in rows.items()},
        "ratios": ratios, "agreement": agreement, "all_agree": all_agree,
    }
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")


def run_processes_mode(cli, config: BenchConfig, figures, facts, command_line, load_before, wall_start) -> None:
    processes = cli.processes
    per_process = cli.threads // processes
    print()
    print(f"Running the callback's evaluation: 1 process x {cli.threads} threads, {processes} processes x "
          f"{per_process} thread(s) (the same {cli.threads} cores), then 1 process again (bracketing, against drifting load):")
    worker = ServedWorker("callback", cli, threads=cli.threads)
    worker.warmup()
    before = [worker.run() for _ in range(config.repeats)]
    print(f"  1 process: {', '.join(f'{t:.2f}' for t in before)} s")
    multi = launch_workers("callback-dist", cli, processes=processes, threads=per_process)
    print(f"  {processes} processes: {', '.join(f'{t:.2f}' for t in multi['ranks'][0]['times'])} s (rank 0)")
    after = [worker.run() for _ in range(config.repeats)]
    print(f"  1 process: {', '.join(f'{t:.2f}' for t in after)} s")
    single = worker.finish()
    one = summarise("callback", single, examples=config.examples, title=f"callback, 1 process x {cli.threads} threads")
    many = summarise("callback", multi, examples=config.examples,
                     title=f"callback, {processes} processes x {per_process} thread{'s' if per_process > 1 else ''}")
    print()
    print("Details:")
    _print_method_details(one, single, figures["callback"])
    _print_method_details(many, multi, figures["callback"] + "; " + figures["shards"])
    for r in multi["ranks"]:
        b = r["breakdowns"][int(np.argmin(r["times"]))]
        print(f"    rank {r['rank']}: best {min(r['times']):.2f} s, forward {b['forward_s']:.2f} s in {b['forward_calls']} calls, "
              f"collate {b['collate_s']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
    equal, n_diff, max_diff, margin = check_agreement(single, multi, config.task)
    ok = equal and max_diff <= cli.tolerance and len(multi["index"]) == config.examples
    print()
    print(f"Agreement of {processes} processes with 1 process: argmax {'equal' if equal else f'DIFFERENT ({n_diff})'}, "
          f"max |dp| = {max_diff:.2e} -> {'OK' if ok else 'MISMATCH'}")
    ratio = many.seconds / one.seconds
    print(f"Ratio {processes} processes / 1 process = {_fmt_ratio(ratio)} of the wall time "
          f"(speed-up {one.seconds / many.seconds:.2f}x on the same {cli.threads} cores; CPU seconds "
          f"{many.cpu_seconds:.1f} vs {one.cpu_seconds:.1f})")
    print()
    print(f"Table ({_task_title(config)}{config.examples} examples, hidden {config.hidden_size}, {config.num_layers} layers, "
          f"B = {config.batch_size}, best of {config.repeats} runs per launch, of {2 * config.repeats} for 1 process):")
    print()
    _print_table([one, many], one, "seconds / 1 process")
    _print_contention_warning([single, multi])
    threads_used = "; ".join(f"rank {r['rank']} torch {r['torch_threads']}" for r in multi["ranks"])
    _print_footer(facts, command_line, load_before, wall_start,
                  f"1 process: OMP_NUM_THREADS={cli.threads}, torch {single['ranks'][0]['torch_threads']} threads; "
                  f"{processes} processes: OMP_NUM_THREADS={per_process} each ({threads_used}); launched with "
                  f"`ACCELERATE_USE_CPU=true {' '.join(multi['command'][:12])} ...`.")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
