"""The ``trainer-ext`` command: rank, evaluate and report on the checkpoints of a Trainer output folder.

    trainer-ext rank OUTPUT_DIR --objective recall_negative --constraint "precision_negative >= 0.8" [--apply]
    trainer-ext rank OUTPUT_DIR --objective f1_micro --require-significance   # paired bootstrap on saved predictions
    trainer-ext evaluate OUTPUT_DIR --data holdout.csv [--objective ...]   # raw text, or pre-tokenized JSON lines:
    trainer-ext evaluate OUTPUT_DIR --data tagged.jsonl --task token      # input_ids + per-token labels, or tokens + ner_tags
    trainer-ext report OUTPUT_DIR [--out DIR]

Also ``python -m trainer_ext ...``, and ``accelerate launch -m trainer_ext evaluate ...`` on several
processes. ``rank`` and ``report`` read the records the callback (or ``evaluate``) wrote and never load
a model, so they import neither torch nor transformers; ``evaluate`` imports them when it starts.

Exit status: 0 on success; 1 when the output folder or a file cannot be used (missing folder, no
checkpoints, no records, a record newer than this library, an unreadable data file, a missing extra);
2 when the command line asks for something that does not exist or does not parse (unknown metric key,
a direction that contradicts a built-in key, a malformed constraint or cost matrix, a missing column).
The reason is one line on stderr, without a traceback. Results go to stdout; notes and progress to stderr.
When the reader of stdout leaves early (``trainer-ext rank ... --format json | head -1``), the command
still does all of its work (files are written before anything is printed), drops the rest of its output
and exits 0, without a traceback.

No command drops a record without saying so: ``evaluate`` keeps the leaderboard entries of checkpoints
rotated away that were measured on the same held-out set (same ``eval_set.fingerprint``), and moves the
entries measured on another set to ``checkpoint_leaderboard.previous.json``; it prints what it kept and
what it moved.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import ConfigurationError, InfeasibleObjectiveError, SchemaVersionError
from .objectives import Constraint, Objective, known_direction
from .records import (
    LEADERBOARD_FILENAME,
    PREVIOUS_LEADERBOARD_FILENAME,
    TRAINER_STATE_FILENAME,
    CheckpointRecord,
    append_previous_entries,
    build_record,
    checkpoint_step,
    write_best_into_trainer_state,
    write_checkpoint_files,
    write_leaderboard,
)
from .render import leaderboard_markdown, leaderboard_table
from .run_folder import (
    EarlierLeaderboard,
    Ranking,
    checkpoint_folders,
    rank_records,
    read_earlier_leaderboard,
    read_records,
    read_unsaved,
)
from .selection import Candidate, select_best

__all__ = ["main", "CommandError"]

PROG = "trainer-ext"
EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE = 0, 1, 2
DATA_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".ndjson": None}
# Files a tokenizer is saved as; their bytes decide whether two checkpoints share a tokenizer.
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
)


class CommandError(Exception):
    """A reason to stop: printed as one line on stderr; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_UNUSABLE, *, where: str | None = None) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever the message held
        self.status = status
        self.where = where  # the (sub)command, when it is known better than from the parsed options


# ---- entry point ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (the console script passes it to ``sys.exit``)."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # a reader that left shows here, not as a traceback at interpreter exit
    except BrokenPipeError:
        _detach_stdout()
        return EXIT_OK
    return status


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    command = "?"
    try:
        options = parser.parse_args(argv)
        command = options.command
        return options.run(options)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except CommandError as exc:
        return _fail(exc.where or command, str(exc), exc.status)
    except (ConfigurationError, InfeasibleObjectiveError) as exc:
        return _fail(command, str(exc), EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_UNUSABLE)
    except SchemaVersionError as exc:
        return _fail(command, str(exc), EXIT_UNUSABLE)


def _fail(command: str, message: str, status: int) -> int:
    where = command if command.startswith(PROG) else f"{PROG} {command}" if command != "?" else PROG
    rank = _process_rank()
    prefix = f"[rank {rank}] " if rank else ""
    print(f"{prefix}{where}: error: {' '.join(message.split())}", file=sys.stderr)
    return status


def _process_rank() -> int:
    """This process's global rank when a launcher started several (0 otherwise): errors of every rank
    are printed, prefixed with their rank, since they may differ."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _result(text: str, *, end: str = "\n") -> None:
    """Print a command's result on stdout. When the reader has closed the pipe (``trainer-ext rank ... |
    head -1``) the rest is dropped quietly: it read what it wanted, and the command goes on to finish
    (under a launcher, the other processes wait for this one at a barrier)."""
    try:
        print(text, end=end)
        sys.stdout.flush()
    except BrokenPipeError:
        _detach_stdout()


def _detach_stdout() -> None:
    """Point stdout at the null device, so that Python's own flush at exit finds no closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (stdout replaced in-process)
        pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2) like every other error."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{message} (see '{self.prog} --help')", EXIT_USAGE, where=self.prog)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Rank, evaluate and report on the checkpoints of a Trainer output folder.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    rank = _subcommand(
        sub, "rank", _command_rank,
        help="rank the checkpoints from their records, without running a model",
        description="Rank the checkpoints of OUTPUT_DIR from their checkpoint_metrics.json records (and the "
        "leaderboard entries of checkpoints rotated away), without running a model.",
    )
    _add_objective_options(rank, required=True)
    rank.add_argument("--format", choices=("table", "json", "markdown"), default="table", help="output format (default: table)")
    rank.add_argument(
        "--apply", action="store_true",
        help="make the best checkpoint the Trainer's best: rewrite best_metric, best_global_step and "
        "best_model_checkpoint in every checkpoint's trainer_state.json, and the leaderboard files",
    )

    evaluate = _subcommand(
        sub, "evaluate", _command_evaluate,
        help="evaluate every checkpoint-* folder on a held-out file, write records and the leaderboard",
        description="Evaluate every checkpoint-* folder of OUTPUT_DIR (also of runs trained without trainer_ext) "
        "on a held-out file, write checkpoint_metrics.json and checkpoint_scores.npz next to each, then rank "
        "them and write the leaderboard. Runs on several processes under 'accelerate launch -m trainer_ext evaluate'.",
    )
    evaluate.add_argument(
        "--data", metavar="FILE", type=Path, required=True,
        help="held-out set: .csv, .tsv or .jsonl; raw text, or pre-tokenized JSON lines with input_ids (token "
        "classification: per-token labels with -100, or words in 'tokens' with one tag per word)",
    )
    evaluate.add_argument(
        "--text-column", default=None,
        help="column of the text (default: text; with --label-words, text else prompt; without one, input_ids or tokens)",
    )
    evaluate.add_argument(
        "--label-column", default=None,
        help="column of the gold labels: class ids or names of the model's id2label, numbers for regression, "
        "per-token tag ids (or per-word tags beside 'tokens') for token classification (default: label, else "
        "labels, else ner_tags beside tokens)",
    )
    _add_objective_options(evaluate, required=False)
    evaluate.add_argument(
        "--batch-size", type=int, default=8,
        help="rows per batch for the longest examples; shorter ones are packed under the same token budget (default: 8)",
    )
    evaluate.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: the one saved in each checkpoint)")
    evaluate.add_argument(
        "--task", choices=["single_label", "multi_label", "token", "regression"], default=None,
        help="the model's task (default: read from each checkpoint's config: problem_type, num_labels, the "
        "model class, a *ForTokenClassification architecture); multi_label and regression load "
        "AutoModelForSequenceClassification, token AutoModelForTokenClassification",
    )
    evaluate.add_argument(
        "--label-words", metavar="JSON", type=_label_words_option,
        help="a causal LM answering with label words: JSON object class -> label text, e.g. "
        "'{\"NEGATIVE\": \" negative\", \"POSITIVE\": \" positive\"}'; loads AutoModelForCausalLM (or a PEFT "
        "adapter folder), reads the prompts from --text-column (default then: prompt)",
    )

    report = _subcommand(
        sub, "report", _command_report,
        help="write report.md and figures (needs matplotlib: pip install 'trainer-ext[plot]')",
        description="Write report.md and PNG figures: per-class precision, recall and F1 across checkpoints, the "
        "confusion matrix and precision-recall curves of the chosen checkpoint.",
    )
    report.add_argument("--out", type=Path, help="folder for report.md and the figures (default: OUTPUT_DIR/report)")
    return parser


def _subcommand(sub: Any, name: str, run: Any, *, help: str, description: str) -> argparse.ArgumentParser:
    """A command reading OUTPUT_DIR, run by ``run(options)``."""
    parser = sub.add_parser(name, help=help, description=description)
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", type=Path)
    parser.set_defaults(run=run)
    return parser


# ---- the objective from the command line -----------------------------------------------------------


def _add_objective_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group("objective")
    group.add_argument(
        "--objective", metavar="KEY", required=required,
        help="metric key to optimise, e.g. recall_negative, f1_macro, log_loss, expected_cost"
        + ("" if required else " (default: the objective of the existing leaderboard, else f1_macro)"),
    )
    direction = group.add_mutually_exclusive_group()
    direction.add_argument("--maximize", dest="greater_is_better", action="store_const", const=True,
                           help="higher is better (required for a key trainer_ext does not know)")
    direction.add_argument("--minimize", dest="greater_is_better", action="store_const", const=False,
                           help="lower is better (required for a key trainer_ext does not know)")
    group.add_argument("--constraint", metavar="EXPR", action="append", default=[],
                       help="'KEY >= NUMBER' (or <=, >, <) that the chosen checkpoint must meet; repeatable")
    group.add_argument("--tie-breaker", metavar="KEY", action="append", default=[],
                       help="built-in key deciding exact ties, in the order given; repeatable")
    group.add_argument("--cost-matrix", metavar="JSON",
                       help="classes x classes cost of each outcome (rows true class, columns predicted, id order), "
                       "as JSON or a JSON file; adds the key expected_cost (lower is better)")
    group.add_argument("--require-significance", action="store_true",
                       help="a later checkpoint replaces the best only when a paired bootstrap on both checkpoints' "
                       "saved predictions says it is better (one-sided p <= 0.05; count-based keys only)")


@dataclasses.dataclass(frozen=True)
class _ObjectiveOptions:
    metric: str
    greater_is_better: bool | None
    constraints: tuple[str, ...]
    tie_breakers: tuple[str, ...]
    cost_matrix: list[list[float]] | None
    require_significance: bool = False


def _objective_options(options: argparse.Namespace) -> _ObjectiveOptions | None:
    """The objective options as given, checked for what needs no record (None without --objective)."""
    if options.objective is None:
        extra = [flag for flag, value in (
            ("--maximize/--minimize", options.greater_is_better is not None),
            ("--constraint", options.constraint), ("--tie-breaker", options.tie_breaker),
            ("--cost-matrix", options.cost_matrix), ("--require-significance", options.require_significance),
        ) if value]
        if extra:
            raise CommandError(f"{', '.join(extra)}: given without --objective KEY; name the key to optimise.", EXIT_USAGE)
        return None
    cost = _cost_matrix(options.cost_matrix) if options.cost_matrix is not None else None
    return _ObjectiveOptions(
        options.objective, options.greater_is_better, tuple(options.constraint), tuple(options.tie_breaker), cost,
        options.require_significance,
    )


def _cost_matrix(text: str) -> list[list[float]]:
    source = "--cost-matrix"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        path = Path(text)
        if not path.is_file():
            raise CommandError(
                f"--cost-matrix: expected JSON such as '[[0, 1], [5, 0]]' or a JSON file; got {text!r}.", EXIT_USAGE
            ) from None
        source = f"--cost-matrix {path}"
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CommandError(f"{source}: not valid JSON ({exc}).", EXIT_USAGE) from None
    if not (isinstance(value, list) and value and all(isinstance(row, list) for row in value)):
        raise CommandError(f"{source}: expected a list of rows such as [[0, 1], [5, 0]]; got {value!r}.", EXIT_USAGE)
    return value


def _build_objective(
    spec: _ObjectiveOptions, available: Collection[str], *, task: Any, source: str = "in the records"
) -> Objective:
    """An :class:`Objective` whose every key exists in ``available``, with its direction checked.

    Keys are checked first (a typo is reported as unknown, with the keys that exist), then the direction:
    a built-in key knows its own, and ``--maximize``/``--minimize`` may only repeat it; any other key
    needs one of them.
    """
    available = set(available)
    if spec.cost_matrix is not None:
        available.add("expected_cost")
    constraint_keys = []
    for text in spec.constraints:
        constraint_keys.append(Constraint.parse(text).metric)  # ConfigurationError (status 2) when malformed
    for flag, keys in (("--objective", [spec.metric]), ("--constraint", constraint_keys), ("--tie-breaker", spec.tie_breakers)):
        missing = [k for k in keys if k not in available]
        if missing:
            hint = " (add --cost-matrix to compute it)" if "expected_cost" in missing else ""
            shown = ", ".join(repr(k) for k in missing)
            raise CommandError(
                f"{flag}: unknown metric key {shown}{hint}. Keys {source}: {', '.join(sorted(available))}.",
                EXIT_USAGE,
            )
    known = known_direction(spec.metric)
    if spec.greater_is_better is None and known is None:
        raise CommandError(
            f"--objective: trainer_ext knows no direction for {spec.metric!r}; "
            f"add --maximize (higher is better) or --minimize (lower is better).",
            EXIT_USAGE,
        )
    if spec.greater_is_better is not None and known is not None and spec.greater_is_better != known:
        given = "--maximize" if spec.greater_is_better else "--minimize"
        raise CommandError(
            f"{given}: {spec.metric!r} is a built-in key and {'higher' if known else 'lower'} is better; "
            f"drop {given}.",
            EXIT_USAGE,
        )
    for key in spec.tie_breakers:
        if known_direction(key) is None:
            raise CommandError(
                f"--tie-breaker: {key!r} has no known direction; tie-breakers must be built-in keys such as "
                f"'f1_negative', 'recall_macro' or 'log_loss'.",
                EXIT_USAGE,
            )
    if spec.metric == "expected_cost" and spec.cost_matrix is None:
        raise CommandError("--objective expected_cost needs --cost-matrix '[[0, 1], [5, 0]]'.", EXIT_USAGE)
    objective = Objective(
        spec.metric,
        spec.greater_is_better,
        constraints=spec.constraints,
        tie_breakers=spec.tie_breakers,
        cost_matrix=spec.cost_matrix,
        require_significance=spec.require_significance,
    )
    if task is not None:
        task.check_objective(objective)
        counted = task.count_keys(with_cost=True)  # with several held-out sets, also as "<set>_<key>"
        key = objective.metric
        if objective.require_significance and not any(key == k or key.endswith(f"_{k}") for k in counted):
            raise CommandError(
                f"--require-significance: the paired bootstrap resamples the records' counts, so it needs a built-in "
                f"count-based key such as {task.count_keys()[:3]}; got {objective.metric!r}.",
                EXIT_USAGE,
            )
    return objective


# ---- rank ------------------------------------------------------------------------------------------


def _load_output_dir(output_dir: Path) -> dict[str, CheckpointRecord]:
    """The records of ``output_dir``, or a CommandError naming what is missing."""
    if not output_dir.exists():
        raise CommandError(f"OUTPUT_DIR: {str(output_dir)!r} does not exist.")
    if not output_dir.is_dir():
        raise CommandError(f"OUTPUT_DIR: {str(output_dir)!r} is not a folder.")
    folders = checkpoint_folders(output_dir)
    has_board = (output_dir / LEADERBOARD_FILENAME).is_file()
    if not folders and not has_board:
        raise CommandError(
            f"OUTPUT_DIR: no checkpoint-<step> folders in {str(output_dir)!r}; pass the Trainer's output_dir."
        )
    records = read_records(output_dir)
    if not records:
        raise CommandError(
            f"OUTPUT_DIR: none of the {len(folders)} checkpoint folders in {str(output_dir)!r} has a "
            f"checkpoint_metrics.json record; create them with 'trainer-ext evaluate {output_dir} --data FILE'."
        )
    unrecorded = [f.name for f in folders if f.name not in records]
    if unrecorded:
        _note(
            f"{', '.join(unrecorded)} {'has' if len(unrecorded) == 1 else 'have'} no record and "
            f"{'is' if len(unrecorded) == 1 else 'are'} not ranked; 'trainer-ext evaluate' evaluates every folder."
        )
    return records


def _task_of_records(records: Mapping[str, CheckpointRecord]) -> Any:
    """The task the records were written with (None when they name fewer than two classes)."""
    from .tasks import task_from_record

    first = next(iter(records.values()))
    return task_from_record(first.task, first.labels) if len(first.labels) >= 2 else None


def _available_keys(records: Mapping[str, CheckpointRecord]) -> set[str]:
    return {key for record in records.values() for key in record.metrics}


def _command_rank(options: argparse.Namespace) -> int:
    spec = _objective_options(options)
    assert spec is not None  # --objective is required by the parser
    records = _load_output_dir(options.output_dir)
    objective = _build_objective(spec, _available_keys(records), task=_task_of_records(records))
    # Evaluations without a checkpoint (eval_steps=/save=) stay listed, never ranked.
    ranking = rank_records(records, objective, output_dir=options.output_dir, unsaved=read_unsaved(options.output_dir))
    for note in ranking.notes:
        _note(note)
    if options.apply:
        _apply(options.output_dir, ranking)
    if options.format == "json":
        _result(json.dumps(ranking.payload, indent=2, sort_keys=True, allow_nan=False))
    elif options.format == "markdown":
        _result(leaderboard_markdown(ranking.payload), end="")
    else:
        _result(_render_table(ranking))
    return EXIT_OK


def _apply(output_dir: Path, ranking: Ranking) -> None:
    """Point every checkpoint's trainer_state.json at the best checkpoint so far, rewrite the leaderboard.

    A checkpoint's state names the best among the checkpoints up to its own step, as the callback wrote
    it during training: the last checkpoint (the one a run resumes from to continue) names the overall
    best, and a run resumed from an earlier checkpoint is never pointed at a folder its own continued
    training will overwrite.
    """
    selection = ranking.selection
    best = selection.best
    if best is None:
        raise CommandError(
            f"--apply: no checkpoint has a finite value of {selection.objective.metric!r}; nothing to apply."
        )
    if not ranking.exists.get(best.checkpoint, False):
        raise CommandError(
            f"--apply: the best checkpoint for {selection.objective.metric!r}, {best.checkpoint}, is no longer on "
            f"disk (rotated away by save_total_limit), so the Trainer could not load it; nothing was changed."
        )
    prefix = _best_model_prefix(output_dir)
    so_far = _best_so_far(ranking)
    steps = sorted(so_far)
    rewritten = 0
    for folder in checkpoint_folders(output_dir):
        position = bisect.bisect_right(steps, checkpoint_step(folder.name))
        best_then = so_far[steps[position - 1]] if position else None  # the last recorded step up to this one
        if write_best_into_trainer_state(
            folder,
            best_metric=None if best_then is None else best_then.objective_value,
            best_global_step=None if best_then is None else best_then.global_step,
            best_model_checkpoint=None if best_then is None else os.path.join(prefix, best_then.checkpoint),
        ):
            rewritten += 1
    write_leaderboard(output_dir, ranking.payload)
    _note(
        f"applied: {best.checkpoint} is the best ({selection.objective.metric} = {best.objective_value:.6g}); "
        f"rewrote {rewritten} trainer_state.json file(s) and {LEADERBOARD_FILENAME} / .md"
    )


def _best_so_far(ranking: Ranking) -> dict[int, Any]:
    """The best checkpoint among those up to each recorded step, by step (the last one is the overall best).

    Selection walks the checkpoints in step order with an incumbent (see :mod:`trainer_ext.selection`), so
    the best up to a step is the best of two: the best up to the step before, and this step's checkpoint.
    That makes every prefix cost one comparison instead of a selection over the whole prefix.
    """
    objective = ranking.selection.objective
    candidates = sorted(
        (Candidate(r.checkpoint, r.global_step, r.metrics) for r in ranking.records.values()),
        key=lambda c: (c.global_step, c.checkpoint),
    )
    best: dict[int, Any] = {}
    incumbent: Candidate | None = None
    for candidate in candidates:
        pair = [incumbent, candidate] if incumbent is not None else [candidate]
        chosen = select_best(pair, objective, **_p_value_of(ranking)).best
        if chosen is not None:
            incumbent = next(c for c in pair if c.checkpoint == chosen.checkpoint)
        best[candidate.global_step] = chosen
    overall = ranking.selection.best
    if candidates and overall is not None:
        best[candidates[-1].global_step] = overall
    return best


def _p_value_of(ranking: Ranking) -> dict[str, Any]:
    return {"p_value": ranking.p_value} if ranking.selection.objective.require_significance else {}


def _best_model_prefix(output_dir: Path) -> str:
    """The folder part of ``best_model_checkpoint`` as the Trainer wrote it (its rotation compares the
    path as a string), when that path still leads to ``output_dir``; else ``output_dir`` as given."""
    for folder in reversed(checkpoint_folders(output_dir)):
        written = (_trainer_state(folder) or {}).get("best_model_checkpoint")
        if isinstance(written, str) and written:
            prefix = os.path.dirname(written.rstrip("/\\"))
            if prefix and Path(prefix).resolve() == output_dir.resolve():
                return prefix
    return str(output_dir)


def _render_table(ranking: Ranking) -> str:
    return leaderboard_table(ranking.payload, ranking.selection.objective.keys)


# ---- evaluate ----------------------------------------------------------------------------------------

# --label-column's default: the first of these the file has ("ner_tags" beside words, as in conll2003).
_LABEL_COLUMNS = ("label", "labels")
_WORDS_COLUMN, _WORDS_LABEL_COLUMN = "tokens", "ner_tags"


@dataclasses.dataclass(frozen=True)
class _HeldOutRows:
    """The rows of ``--data`` as ``evaluate`` reads them: each row's gold label (``"labels"``) and one
    kind of input, the same for every row.

    ``kind``: ``"text"`` (rows ``{"text", "labels"}``: raw text the checkpoint's tokenizer tokenizes),
    ``"input_ids"`` (pre-tokenized: every column but the label column, ``"labels"`` the label; the model's
    ``forward`` signature picks the inputs, as the Trainer's ``remove_unused_columns`` does) or
    ``"words"`` (rows ``{"words", "labels"}``: a token-classification sentence as words and one tag per
    word, aligned to sub-words per tokenizer by :func:`_aligned_words`)."""

    file: str  # the file's name, for messages
    kind: str
    label_column: str
    rows: list[dict[str, Any]]


def _read_table(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV, TSV or JSON-lines file, in file order (CSV cells are text)."""
    if not path.is_file():
        raise CommandError(f"--data: {str(path)!r} does not exist or is not a file.")
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise CommandError(f"--data: expected a .csv, .tsv or .jsonl file; got {path.name!r}.", EXIT_USAGE)
    try:
        if DATA_SUFFIXES[suffix] is None:
            raw = []
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict):
                            raise CommandError(f"--data: line {number} of {path.name} is not a JSON object.")
                        raw.append(row)
        else:
            import csv

            with open(path, encoding="utf-8", newline="") as handle:
                raw = list(csv.DictReader(handle, delimiter=DATA_SUFFIXES[suffix]))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CommandError(f"--data: cannot read {path.name}: {exc}.") from None
    if not raw:
        raise CommandError(f"--data: {path.name} has no rows.")
    return raw


def _read_data(
    path: Path, text_column: str | None, label_column: str | None, *, text_columns: Sequence[str] = ("text",)
) -> _HeldOutRows:
    """The held-out rows of ``--data``. Input, in this order: ``--text-column`` when given (it must
    exist); else the first of ``text_columns`` the file has (raw text); else ``input_ids``
    (pre-tokenized JSON lines, e.g. token classification's ``input_ids`` with per-token ``labels``);
    else ``tokens`` (words, with one tag per word, as conll2003). Labels: ``--label-column`` when given,
    else ``label``, else ``labels`` (else ``ner_tags`` beside ``tokens``)."""
    raw = _read_table(path)
    columns = list(raw[0])
    shown = ", ".join(columns)
    if text_column is not None and text_column not in columns:
        raise CommandError(f"--text-column: {text_column!r} is not a column of {path.name} (columns: {shown}).", EXIT_USAGE)
    text = text_column or next((c for c in text_columns if c in columns), None)
    kind = "text" if text else "input_ids" if "input_ids" in columns else "words" if _WORDS_COLUMN in columns else None
    if kind is None:
        raise CommandError(
            f"--data: {path.name} has neither a text column ({' or '.join(repr(c) for c in text_columns)}) nor "
            f"pre-tokenized 'input_ids' (columns: {shown}). Pass --text-column NAME for raw text, or JSON lines with "
            f"'input_ids' (and per-token 'labels' for --task token).",
            EXIT_USAGE,
        )
    label = _label_column(columns, label_column, kind, path.name)
    empty = [i for i, row in enumerate(raw) if row.get(label) in (None, "")]
    if empty:
        raise CommandError(f"--label-column: {len(empty)} row(s) of {path.name} have no {label!r}, e.g. row {empty[0] + 1}.")
    if kind == "text":
        rows = [{"text": "" if row.get(text) is None else str(row[text]), "labels": row[label]} for row in raw]
    elif kind == "input_ids":
        _check_sequences(raw, "input_ids", int, path.name, "token ids", '{"input_ids": [2, 17, 3], "labels": ...}')
        rows = [{**{k: v for k, v in row.items() if k != label}, "labels": row[label]} for row in raw]
    else:
        _check_sequences(raw, _WORDS_COLUMN, str, path.name, "words", '{"tokens": ["Anna", "moved"], "ner_tags": ["B-PER", "O"]}')
        rows = [{"words": row[_WORDS_COLUMN], "labels": row[label]} for row in raw]
    return _HeldOutRows(path.name, kind, label, rows)


def _label_column(columns: Sequence[str], given: str | None, kind: str, file: str) -> str:
    if given is not None:
        if given not in columns:
            raise CommandError(f"--label-column: {given!r} is not a column of {file} (columns: {', '.join(columns)}).", EXIT_USAGE)
        return given
    candidates = _LABEL_COLUMNS + ((_WORDS_LABEL_COLUMN,) if kind == "words" else ())
    found = next((c for c in candidates if c in columns), None)
    if found is None:
        raise CommandError(
            f"--label-column: {file} has none of the columns {', '.join(repr(c) for c in candidates)} (columns: "
            f"{', '.join(columns)}); pass --label-column NAME.",
            EXIT_USAGE,
        )
    return found


def _check_sequences(raw: Sequence[Mapping[str, Any]], column: str, kind: type, file: str, what: str, example: str) -> None:
    """Every row's ``column`` is a non-empty list of ``kind`` (a CSV cell is text: pre-tokenized data is JSON lines)."""
    for number, row in enumerate(raw, 1):
        value = row.get(column)
        if not (isinstance(value, list) and value and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
            raise CommandError(
                f"--data: row {number} of {file} has {column} = {value!r}; expected a list of {what} per row, in "
                f"JSON lines such as {example}."
            )


def _label_values(held: _HeldOutRows, task: Any) -> list[dict[str, Any]]:
    """The rows with each label as the task reads it. CSV cells are text: for a regression model a
    number (``"3.25"``; anything else is an error naming the row); otherwise class names stay names
    and a string of digits that is no class name is a class id."""
    from .metrics import slugify

    if getattr(task, "name", None) == "regression":
        return [{**row, "labels": _regression_label(row["labels"], number, held)} for number, row in enumerate(held.rows, 1)]
    names = task.label_names
    known = {str(n) for n in names} | {slugify(str(n)) for n in names}
    out = []
    for row in held.rows:
        value = row["labels"]
        if isinstance(value, str):
            text = value.strip()
            if text not in known and _slug_or_none(text) not in known and text.isdigit():
                value = int(text)
        out.append({**row, "labels": value})
    return out


def _regression_label(value: Any, number: int, held: _HeldOutRows) -> Any:
    """A regression label: a number as it is, or the number a text cell spells (``" 3.25 "``, ``"-1e-3"``)."""
    if not isinstance(value, str):
        return value  # numbers from JSON; anything else is refused by the task, naming labels[i]
    try:
        number_value = float(value.strip())
    except ValueError:
        number_value = math.nan
    if not math.isfinite(number_value):
        raise CommandError(
            f"--label-column: row {number} of {held.file} has {value!r} in {held.label_column!r}; a regression model "
            f"needs one finite number per row (e.g. 3.25)."
        )
    return number_value


def _aligned_words(held: _HeldOutRows, task: Any, tokenizer: Any) -> list[dict[str, Any]]:
    """Words and one tag per word (ids or tag names) -> ``input_ids`` with per-token ``labels``, as Hugging
    Face's ``tokenize_and_align_labels`` does: the first sub-word of each word gets the word's tag, the
    other sub-words and the special tokens -100, so the entity-level keys are those of the words."""
    if getattr(task, "name", None) != "token":
        raise CommandError(
            f"--data: {held.file} holds words ({_WORDS_COLUMN!r}) and tags, which only token classification reads; "
            f"this checkpoint is {getattr(task, 'name', '?')}. Pass --task token, or a text column."
        )
    if not getattr(tokenizer, "is_fast", False):
        raise CommandError(
            f"--data: aligning the words of {held.file} to sub-words needs a fast tokenizer (its word_ids()); "
            f"{type(tokenizer).__name__} is not one. Tokenize the set yourself (JSON lines with input_ids and labels)."
        )
    tag_ids = {name: i for i, name in enumerate(task.label_names)}
    max_length = getattr(tokenizer, "model_max_length", None)
    if not isinstance(max_length, int) or max_length > 100_000:
        max_length = 512  # as evaluation._tokenize
    out = []
    for number, row in enumerate(held.rows, 1):
        words, tags = row["words"], row["labels"]
        if not isinstance(tags, list) or len(tags) != len(words):
            raise CommandError(
                f"--label-column: row {number} of {held.file} has {len(words)} words but {held.label_column!r} is "
                f"{tags!r}; expected one tag per word (ids or names of {task.label_names})."
            )
        unknown = [t for t in tags if isinstance(t, str) and t not in tag_ids]
        if unknown:
            raise CommandError(
                f"--label-column: row {number} of {held.file} has the tag(s) {unknown}, which are not the model's "
                f"tags {task.label_names}."
            )
        ids = [tag_ids[t] if isinstance(t, str) else t for t in tags]
        encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        labels, previous = [], None
        for word in encoded.word_ids():
            labels.append(-100 if word is None or word == previous else ids[word])
            previous = word
        out.append({**{k: encoded[k] for k in encoded.keys()}, "labels": labels})
    return out


def _slug_or_none(text: str) -> str | None:
    from .metrics import slugify

    try:
        return slugify(text)
    except ValueError:
        return None


def _tokenizer_key(folder: Path) -> tuple[tuple[str, int], ...]:
    import hashlib

    # transformers 4.x also writes special_tokens_map.json (and added_tokens.json): alone they make no tokenizer.
    if not any((folder / n).is_file() for n in _TOKENIZER_FILES if n not in ("special_tokens_map.json", "added_tokens.json")):
        return ()
    return tuple(
        (name, int(hashlib.sha256((folder / name).read_bytes()).hexdigest()[:15], 16))
        for name in _TOKENIZER_FILES
        if (folder / name).is_file()
    )


def _command_evaluate(options: argparse.Namespace) -> int:
    spec = _objective_options(options)
    if options.batch_size < 1:
        raise CommandError(f"--batch-size: expected a positive integer; got {options.batch_size}.", EXIT_USAGE)
    if options.tokenizer is not None and not options.tokenizer.is_dir():
        raise CommandError(f"--tokenizer: {str(options.tokenizer)!r} is not a folder.")
    from . import distributed  # torch from here on

    from transformers.utils import logging as transformers_logging

    device = distributed.join_launch()
    # Our progress lines go to stderr; transformers' per-load progress bars would bury them.
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        # Decisions that read the file system are made on the main process and shared, so every rank
        # evaluates the same folders with the same objective, or every rank stops with the same reason.
        plan = _decide_on_main(lambda: _evaluation_plan(options, spec))
        status = _evaluate_folders(options, spec, device, plan)
        distributed.barrier()
        return status
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
        distributed.leave_launch()


def _decide_on_main(decide: Any) -> Any:
    from . import distributed

    outcome: tuple[bool, Any] | None = None
    if distributed.is_main():
        try:
            outcome = (True, decide())
        except CommandError as exc:
            outcome = (False, (str(exc), exc.status))
        except (ConfigurationError, SchemaVersionError) as exc:  # the other ranks must not wait for a broadcast
            outcome = (False, (str(exc), EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_UNUSABLE))
    outcome = distributed.broadcast_object(outcome)
    if not outcome[0]:
        raise CommandError(*outcome[1])
    return outcome[1]


@dataclasses.dataclass(frozen=True)
class _EvaluationPlan:
    """What ``evaluate`` reads from OUTPUT_DIR before it starts (on the main process, shared)."""

    names: list[str]  # the checkpoint folders, in step order
    stored_objective: dict | None  # the leaderboard's objective, used without --objective
    earlier: EarlierLeaderboard | None  # the leaderboard as it was, to keep what it recorded


def _evaluation_plan(options: argparse.Namespace, spec: _ObjectiveOptions | None) -> _EvaluationPlan:
    output_dir: Path = options.output_dir
    if not output_dir.exists():
        raise CommandError(f"OUTPUT_DIR: {str(output_dir)!r} does not exist.")
    folders = checkpoint_folders(output_dir) if output_dir.is_dir() else []
    if not folders:
        raise CommandError(
            f"OUTPUT_DIR: no checkpoint-<step> folders in {str(output_dir)!r}; pass the Trainer's output_dir."
        )
    earlier = read_earlier_leaderboard(output_dir)
    stored = earlier.board.get("objective") if spec is None and earlier is not None else None
    return _EvaluationPlan([f.name for f in folders], stored, earlier)


@dataclasses.dataclass
class _Evaluated:
    record: CheckpointRecord
    output: Any  # evaluation.EvaluationOutput
    scores: Any  # scoring.CheckpointScores
    task: Any  # tasks.Task


class _FolderEvaluator:
    """Evaluates checkpoint folders one by one on the rows of ``--data``: loads the model and its
    tokenizer, prepares the held-out set once per tokenizer, scores like the callback, builds the record."""

    def __init__(self, options: argparse.Namespace, spec: _ObjectiveOptions | None, plan: _EvaluationPlan, device: Any):
        from transformers import AutoTokenizer

        self.options, self.spec, self.plan, self.device = options, spec, plan, device
        self.label_words = None if options.label_words is None else _label_words_task(options.label_words)
        # Label words read prompts: "text", else a column named "prompt".
        text_columns = ("text",) if self.label_words is None else ("text", "prompt")
        self.rows = _read_data(options.data, options.text_column, options.label_column, text_columns=text_columns)
        self.shared_tokenizer = AutoTokenizer.from_pretrained(options.tokenizer) if options.tokenizer is not None else None
        self.held_out_cache: dict[Any, Any] = {}
        self.objective: Objective | None = None

    def evaluate(self, name: str) -> _Evaluated:
        from transformers import DataCollatorWithPadding

        from .evaluation import evaluate_model
        from .scoring import SetResult, score_checkpoint
        folder = self.options.output_dir / name
        model = self._model(folder, name)
        task = self.label_words if self.label_words is not None else self._task(model, name)
        label_names = list(task.label_names)
        objective = self._objective(task)
        tokenizer, key = self._tokenizer(folder, name)
        held_out = self._held_out((key, tuple(label_names)), task, tokenizer, name, model)
        output = evaluate_model(
            model, held_out, task=task, batch_size=self.options.batch_size,
            collate=task.collate if self.label_words is not None else DataCollatorWithPadding(tokenizer),
        )
        # The callback's own scoring: metrics, expected_cost, a tuned threshold, the bootstrap interval.
        scores = score_checkpoint({None: SetResult(output.labels, output.predictions, output.probabilities)}, task, objective)
        record = build_record(
            checkpoint=name, global_step=checkpoint_step(name), epoch=_epoch_of(folder), labels=label_names,
            name=held_out.name, held_out={None: (len(held_out), held_out.fingerprint)}, scores=scores,
            objective=objective,
            evaluation={"processes": output.processes, "precision": output.precision,
                        "seconds": round(output.seconds, 4), "batch_size": self.options.batch_size},
            task=task.name, columns={None: held_out.columns},
        )
        return _Evaluated(record, output, scores, task)

    def _model(self, folder: Path, name: str) -> Any:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        if self.label_words is not None:
            try:
                model = AutoModelForCausalLM.from_pretrained(folder)
            except (OSError, ValueError) as exc:
                raise CommandError(f"{name}: cannot load a causal LM from {folder} (--label-words): {exc}") from None
            return model.to(self.device)
        model_class = AutoModelForSequenceClassification
        chosen = getattr(self.options, "task", None)
        if chosen == "token" or (chosen is None and _saved_as_tagger(folder)):
            from transformers import AutoModelForTokenClassification as model_class
        try:
            model = model_class.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise CommandError(f"{name}: cannot load a {model_class.__name__[12:]} model from {folder}: {exc}") from None
        return model.to(self.device)

    def _task(self, model: Any, name: str) -> Any:
        """--task, else the task the checkpoint's config implies (tasks.task_for_model)."""
        from .tasks import SingleLabel, task_for_model

        chosen = getattr(self.options, "task", None)
        try:
            task = task_for_model(model, task=chosen)
        except ConfigurationError as exc:
            raise CommandError(f"{name}: {exc}") from None
        if isinstance(task, SingleLabel):
            _class_names(model, name)  # the single-label checks of the class names
        return task

    def _objective(self, task: Any) -> Objective:
        """The objective, decided at the first folder: --objective, else the leaderboard's, else f1_macro."""
        if self.objective is None:
            available = task.metric_keys(with_scores=True)
            self.objective = _evaluation_objective(self.spec, self.plan.stored_objective, available, task)
        task.check_objective(self.objective)
        return self.objective

    def _tokenizer(self, folder: Path, name: str) -> tuple[Any, tuple]:
        if self.shared_tokenizer is not None:
            return self.shared_tokenizer, ("--tokenizer",)
        from transformers import AutoTokenizer

        key = _tokenizer_key(folder)
        if not key:
            raise CommandError(
                f"{name}: the folder holds no tokenizer (the run was saved without processing_class); "
                f"pass --tokenizer PATH."
            )
        return AutoTokenizer.from_pretrained(folder), key

    def _held_out(self, cache_key: tuple, task: Any, tokenizer: Any, name: str, model: Any) -> Any:
        """The held-out set for this tokenizer and these classes (made once). Pre-tokenized rows keep the
        columns the model's ``forward`` accepts, as the Trainer (and the callback) keep them."""
        from .evaluation import prepare_held_out

        if cache_key not in self.held_out_cache:
            held = self.rows
            rows = _aligned_words(held, task, tokenizer) if held.kind == "words" else _label_values(held, task)
            try:
                self.held_out_cache[cache_key] = prepare_held_out(
                    rows, name="holdout", task=task, tokenizer=tokenizer, argument="--data", model=model,
                )
            except ConfigurationError as exc:
                raise CommandError(str(exc).replace("--data: ", f"--data ({name}): ", 1)) from None
        return self.held_out_cache[cache_key]


def _saved_as_tagger(folder: Path) -> bool:
    """The checkpoint's ``config.json`` names a ``*ForTokenClassification`` architecture: without --task,
    it is loaded as a token classifier (a sequence classifier would get a new, untrained head)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the loader says what is wrong with the folder
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(architectures, list) and any(str(a).endswith("ForTokenClassification") for a in architectures)


def _label_words_option(value: str) -> dict[str, str]:
    """--label-words: a JSON object of class name -> label text."""
    try:
        words = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object of class -> label text; {exc}") from None
    if not isinstance(words, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of class -> label text; got {value!r}")
    return words


def _label_words_task(words: Mapping[str, str]) -> Any:
    from .tasks.label_words import LabelWords

    try:
        return LabelWords(words, prompt_column="text")  # rows are read as {"text", "labels"}
    except ConfigurationError as exc:
        raise CommandError(f"--label-words: {exc}", EXIT_USAGE) from None


def _class_names(model: Any, name: str) -> list[str]:
    id2label = getattr(model.config, "id2label", None) or {}
    label_names = [str(id2label[i]) for i in sorted(int(k) for k in id2label)]
    _class_slugs(label_names, name)
    return label_names


def _class_slugs(label_names: Sequence[str], name: str) -> list[str]:
    from .metrics import class_slugs

    try:
        return class_slugs(list(label_names))
    except ValueError as exc:
        raise CommandError(f"{name}: the model's id2label does not name 2 or more distinct classes: {exc}") from None


def _evaluation_objective(
    spec: _ObjectiveOptions | None, stored: dict | None, available: Collection[str], task: Any
) -> Objective:
    if spec is not None:
        return _build_objective(spec, available, task=task, source="for this model's classes")
    if stored is None:
        return Objective("f1_macro")
    objective = Objective.from_dict(stored)
    computable = set(available) | ({"expected_cost"} if objective.cost_matrix is not None else set())
    missing = [k for k in objective.keys if k not in computable]
    if missing:
        raise CommandError(
            f"--objective: the leaderboard's objective reads {missing}, which 'trainer-ext evaluate' cannot "
            f"compute from one held-out file (custom metrics, several held-out sets); pass --objective KEY.",
            EXIT_USAGE,
        )
    return objective


def _evaluate_folders(options: argparse.Namespace, spec: _ObjectiveOptions | None, device: Any, plan: _EvaluationPlan) -> int:
    from . import distributed

    main_process = distributed.is_main()
    evaluator = _FolderEvaluator(options, spec, plan, device)
    evaluated: dict[str, _Evaluated] = {}
    started = time.perf_counter()
    for number, name in enumerate(plan.names, 1):
        evaluated[name] = evaluator.evaluate(name)
        if main_process:
            _progress(number, len(plan.names), name, evaluated[name])
    assert evaluator.objective is not None  # at least one folder was evaluated
    records = {name: e.record for name, e in evaluated.items()}
    kept, moved = _earlier_entries(plan, records, evaluator.objective)
    ranking = rank_records(
        {**kept, **records}, evaluator.objective, output_dir=options.output_dir,
        exists={**{name: False for name in kept}, **{name: True for name in records}},
        predictions={name: (e.output.labels, e.scores.predictions[None]) for name, e in evaluated.items()},
        unsaved=_earlier_unsaved(plan, records),
    )
    if main_process:
        _write_evaluation(options.output_dir, evaluated, ranking, plan, kept, moved)
        _note(
            f"evaluate: wrote {len(records)} record(s) and {LEADERBOARD_FILENAME} in "
            f"{time.perf_counter() - started:.1f} s"
        )
        _result(_render_table(ranking))
    return EXIT_OK


def _progress(number: int, total: int, name: str, evaluated: _Evaluated) -> None:
    examples, output = evaluated.record.num_samples, evaluated.output
    rate = examples / output.seconds if output.seconds > 0 else float("inf")
    _note(
        f"evaluate: [{number}/{total}] {name}: {examples} examples in {output.seconds:.2f} s "
        f"({rate:.0f} examples/s, {output.processes} process{'es' if output.processes > 1 else ''})"
    )


def _earlier_unsaved(plan: _EvaluationPlan, records: Mapping[str, CheckpointRecord]) -> dict[str, CheckpointRecord]:
    """The earlier leaderboard's evaluations without a checkpoint measured on the same held-out set: they
    stay listed (those of another set are moved aside with the other entries)."""
    if plan.earlier is None:
        return {}
    fingerprints = {r.eval_set.get("fingerprint") for r in records.values()}
    return plan.earlier.unsaved(fingerprints, exclude=records)


def _earlier_entries(
    plan: _EvaluationPlan, records: Mapping[str, CheckpointRecord], objective: Objective
) -> tuple[dict[str, CheckpointRecord], list[dict[str, Any]]]:
    """From the leaderboard as it was: records of rotated-away checkpoints measured on the same held-out
    set (kept in the new leaderboard), and the entries measured on another set (to move aside)."""
    if plan.earlier is None:
        return {}, []
    fingerprints = {r.eval_set.get("fingerprint") for r in records.values()}
    return plan.earlier.split(fingerprints, set(records), objective)


def _write_evaluation(
    output_dir: Path,
    evaluated: Mapping[str, _Evaluated],
    ranking: Ranking,
    plan: _EvaluationPlan,
    kept: Mapping[str, CheckpointRecord],
    moved: Sequence[Mapping[str, Any]],
) -> None:
    """Main process: each checkpoint's files, the entries moved aside (before the leaderboard that no
    longer holds them), the leaderboard; and a note for every entry that did not stay as it was."""
    for name, e in evaluated.items():
        write_checkpoint_files(
            output_dir / name, ranking.records[name], {None: e.output}, e.scores.predictions,
            threshold=None if e.scores.threshold is None else e.task.threshold_config(e.scores.threshold),
        )
    if moved:
        assert plan.earlier is not None
        names = ", ".join(entry["checkpoint"] for entry in moved)
        append_previous_entries(
            output_dir, plan.earlier.board, moved,
            reason="measured on another held-out set than the 'trainer-ext evaluate' that replaced them",
        )
        _note(
            f"evaluate: moved {len(moved)} leaderboard entr{'y' if len(moved) == 1 else 'ies'} measured on another "
            f"held-out set ({names}) to {PREVIOUS_LEADERBOARD_FILENAME}"
        )
    if kept:
        _note(
            f"evaluate: kept the leaderboard entr{'y' if len(kept) == 1 else 'ies'} of {len(kept)} checkpoint(s) no "
            f"longer on disk ({', '.join(kept)}), measured on the same held-out set"
        )
    write_leaderboard(output_dir, ranking.payload)
    for note in ranking.notes:
        _note(note)


def _trainer_state(folder: Path) -> dict[str, Any] | None:
    """A checkpoint's ``trainer_state.json``, or None when it is missing or not JSON."""
    path = folder / TRAINER_STATE_FILENAME
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return state if isinstance(state, dict) else None


def _epoch_of(folder: Path) -> float | None:
    epoch = (_trainer_state(folder) or {}).get("epoch")
    return float(epoch) if isinstance(epoch, (int, float)) else None


# ---- report ------------------------------------------------------------------------------------------


def _command_report(options: argparse.Namespace) -> int:
    _load_output_dir(options.output_dir)  # the same one-line reasons as rank
    from .report import write_report

    try:
        path = write_report(options.output_dir, options.out)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    _result(str(path))
    return EXIT_OK
