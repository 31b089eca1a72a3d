"""Every text trainer_ext writes for people: the objective header, number formats, the leaderboard as
markdown (``checkpoint_leaderboard.md``) and as the ``trainer-ext`` table, the report's tables. Pure: no
torch, no transformers; functions of plain data (a leaderboard payload, an objective's dict) to strings.

Numbers: a metric value is shown with 4 decimals; a missing value, NaN or an infinity (written as
``null`` in our JSON) is ``n/a``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "format_value",
    "objective_header",
    "comparison_sentence",
    "estimate_sentence",
    "decision_line",
    "end_line",
    "early_stop_line",
    "leaderboard_markdown",
    "leaderboard_table",
    "statistics_markdown",
]

MAX_CLASSES_SHOWN = 6  # per-class columns of the leaderboard markdown


def format_value(value: Any) -> str:
    """``0.8000`` for a number, ``n/a`` for None, NaN and infinities, ``str`` for anything else."""
    if value is None or isinstance(value, bool):
        return "n/a" if value is None else str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return str(value)


def objective_header(objective: Any, *, markdown: bool = True) -> str:
    """``Objective: **recall_negative** (higher is better), constraints: ..., tie-breakers: ...``.

    ``objective`` is an :class:`~trainer_ext.objectives.Objective` or its ``to_dict()`` (as stored in a
    leaderboard). ``markdown=False`` gives the plain form of the command-line table (no bold, parts
    separated by ``;``)."""
    spec: Mapping[str, Any] = objective.to_dict() if hasattr(objective, "to_dict") else objective
    metric = f"**{spec['metric']}**" if markdown else spec["metric"]
    separator = ", " if markdown else "; "
    text = f"Objective: {metric} ({'higher' if spec['greater_is_better'] else 'lower'} is better)"
    if spec.get("constraints"):
        text += f"{separator}constraints: {', '.join(str(c) for c in spec['constraints'])}"
    if spec.get("tie_breakers"):
        text += f"{separator}tie-breakers: {', '.join(spec['tie_breakers'])}"
    return text


def comparison_sentence(comparison: Mapping[str, Any]) -> str:
    """The paired bootstrap of the best against the runner-up (a ``PairedComparison.to_dict()``)."""
    return (
        f"Best against runner-up ({comparison['second']}), paired bootstrap of {comparison['resamples']} "
        f"resamples: difference {format_value(comparison['difference'])} "
        f"[{format_value(comparison['low'])}, {format_value(comparison['high'])}] at {comparison['confidence']:.0%}; "
        f"the best wins in {comparison['win_share']:.1%} of resamples."
    )


def estimate_sentence(payload: Mapping[str, Any]) -> str | None:
    """``recall_negative 0.6450 on the held-out set; expected on new data 0.5800 [0.4900, 0.6700] at 95%
    (selection-corrected)``, or None when the leaderboard has no ``best_estimate``."""
    estimate = payload.get("best_estimate")
    best = next((e for e in payload.get("entries", []) if e.get("checkpoint") == payload.get("best_checkpoint")), None)
    if not estimate or best is None:
        return None
    return (
        f"{payload['objective']['metric']} {format_value(best.get('objective_value'))} on the held-out set; "
        f"expected on new data {format_value(estimate.get('value'))} [{format_value(estimate.get('low'))}, "
        f"{format_value(estimate.get('high'))}] at {estimate.get('confidence', 0.95):.0%} (selection-corrected, "
        f"{estimate.get('resamples')} resamples; optimism {format_value(estimate.get('optimism'))})"
    )


# ---- the leaderboard -------------------------------------------------------------------------------


def leaderboard_markdown(payload: Mapping[str, Any], *, max_classes: int = MAX_CLASSES_SHOWN, title: bool = True) -> str:
    """``checkpoint_leaderboard.md``: one row per checkpoint, best first, per-class precision/recall/F1.
    ``title=False`` leaves out the title and the objective line (for a document that says them)."""
    columns = _markdown_columns(payload, max_classes)
    lines = ["# Checkpoint leaderboard", "", objective_header(payload["objective"]), ""] if title else []
    lines += [f"Best: **{payload['best_checkpoint']}**. {payload.get('reason', '')}", ""]
    if estimate_sentence(payload):
        lines += [estimate_sentence(payload) + ".", ""]
    if payload.get("comparison"):
        lines += [comparison_sentence(payload["comparison"]), ""]
    with_interval = any(entry.get("interval") for entry in payload["entries"])
    header = ["rank", "checkpoint", "step", "feasible", "on disk"] + (["interval"] if with_interval else [])
    lines += ["| " + " | ".join(header + columns) + " |", "|" + "---|" * (len(header) + len(columns))]
    for entry in payload["entries"]:
        marker = " (best)" if entry["checkpoint"] == payload["best_checkpoint"] else ""
        marker += " (top-k, kept)" if entry.get("protected") else ""
        cells = [f"{entry['checkpoint']}{marker}" if i == 1 else c for i, c in enumerate(_entry_cells(entry))]
        if with_interval:
            interval = entry.get("interval")
            cells.append(f"[{format_value(interval['low'])}, {format_value(interval['high'])}]" if interval else "n/a")
        cells += [format_value(entry["metrics"].get(col)) for col in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _markdown_columns(payload: Mapping[str, Any], max_classes: int) -> list[str]:
    from .metrics import slugify

    metric = payload["objective"]["metric"]
    slugs = [slugify(name) for name in payload.get("labels", [])][:max_classes]
    columns = [metric] + [k for k in ("accuracy", "f1_macro") if k != metric]
    for slug in slugs:
        columns += [k for k in (f"precision_{slug}", f"recall_{slug}", f"f1_{slug}") if k != metric]
    return columns


def _entry_cells(entry: Mapping[str, Any]) -> list[str]:
    """rank, checkpoint, step, feasible, on disk."""
    return [
        "-" if entry.get("rank") is None else str(entry["rank"]),  # an unsaved evaluation is never ranked
        entry["checkpoint"],
        str(entry["global_step"]),
        "yes" if entry["feasible"] else "no",
        "yes" if entry["exists"] else "no",
    ]


def leaderboard_table(payload: Mapping[str, Any], columns: Sequence[str]) -> str:
    """The ``trainer-ext`` table: objective header, the best and why, then aligned rows (numbers to the
    right), the best marked ``*``; ``columns`` are the metric keys shown (the objective's keys)."""
    rows = [["rank", "checkpoint", "step", "feasible", "on disk", *columns]]
    for entry in payload["entries"]:
        cells = _entry_cells(entry)
        if entry["checkpoint"] == payload["best_checkpoint"]:
            cells[1] += " *"
        rows.append(cells + [format_value(entry["metrics"].get(c)) for c in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [objective_header(payload["objective"], markdown=False), f"Best: {payload['best_checkpoint']} ({payload['reason']})"]
    lines += [estimate_sentence(payload)] if estimate_sentence(payload) else []
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.rjust(w) if i in (0, 2) or i >= 5 else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines)


# ---- the report --------------------------------------------------------------------------------------


def statistics_markdown(tables: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines of a task's statistics tables (:meth:`trainer_ext.tasks.Task.statistics_tables`):
    each its title in bold, then the table, row names first and counts right-aligned. Shared by the
    report (:mod:`trainer_ext.report`) and the trackers (:func:`trainer_ext.trainer_bridge.log_confusion_matrix`)."""
    lines: list[str] = []
    for table in tables:
        columns = [str(c) for c in table["columns"]]
        lines += [f"**{table['title']}**", "", f"| {table['corner']} | " + " | ".join(columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        lines += [f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |" for name, row in zip(table["index"], table["data"])]
        lines.append("")
    return lines


# ---- the log --------------------------------------------------------------------------------------------


def _objective_value(value: Any) -> str:
    return "nan" if value is None else f"{value:.4f}"


def decision_line(metric: str, ranked: Any, previous: Any, best: Any, reason: str) -> str:
    """One INFO line per evaluation (``ranked``; ``previous`` the best before it, ``best`` after):
    ``checkpoint-126: recall_negative = 0.8388 (new best; previous checkpoint-63 0.8099)`` or
    ``... (best stays checkpoint-63, 0.8388: <reason>)``."""
    head = f"{ranked.checkpoint}: {metric} = {_objective_value(ranked.objective_value)}"
    if best is not None and best.checkpoint == ranked.checkpoint:
        if previous is None or previous.checkpoint == ranked.checkpoint:
            return f"{head} (new best; first evaluated)"
        return f"{head} (new best; previous {previous.checkpoint} {_objective_value(previous.objective_value)})"
    if best is None:
        return f"{head} (no checkpoint has a finite {metric} yet)"
    return f"{head} (best stays {best.checkpoint}, {_objective_value(best.objective_value)}: {reason})"


def end_line(metric: str, best: Any, holds_best: bool, trainer_metric: str | None) -> str:
    """The last decision line: which checkpoint the model holds, and what the Trainer's own "score" meant."""
    value = _objective_value(best.objective_value)
    if holds_best:
        line = f"Business-best checkpoint loaded: {best.checkpoint} ({metric} = {value})."
    else:
        line = (f"Business-best checkpoint: {best.checkpoint} ({metric} = {value}); the model keeps its last weights "
                f"(load_best_at_end=False).")
    wanted = (trainer_metric or "").removeprefix("eval_")
    if wanted and wanted != metric and not wanted.endswith(f"_{metric}"):
        line += (f" The Trainer's 'Loading best model from ... (score: ...)' line reports the business objective "
                 f"{metric}, not its metric_for_best_model {wanted!r}.")
    return line


def early_stop_line(step: int, stale: int, metric: str, threshold: float, best: Any) -> str:
    """Why training stops early, and which checkpoint is best."""
    return (
        f"Early stopping at step {step}: {stale} evaluations in a row without improving {metric} by more than "
        f"{threshold:g}; best checkpoint {None if best is None else best.checkpoint} "
        f"({metric} = {None if best is None else best.objective_value})."
    )
