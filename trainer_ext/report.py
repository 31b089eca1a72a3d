"""A report for people: how the checkpoints of a run compare on the held-out set, and which one was chosen.

    from trainer_ext.report import write_report
    write_report("outputs/run")          # -> outputs/run/report/report.md, next to its PNG figures

Figures (each skipped, with a sentence in ``report.md`` saying why, when its data is missing):

* ``per_class_metrics.png``: per class, precision, recall and F1 across checkpoints (x = global step), with
  the chosen checkpoint (solid line) and the lowest-loss one (dashed: lowest ``log_loss``; without scores,
  the highest ``accuracy``) marked and named in the legend;
* ``confusion_matrix.png``: the chosen checkpoint's confusion matrix (needs its record; a checkpoint
  rotated away keeps only its metrics);
* ``precision_recall.png``: the chosen checkpoint's one-vs-rest precision-recall curve per class, from its
  ``checkpoint_scores.npz`` (needs probabilities).

"Chosen" is the leaderboard's ``best_checkpoint``; without a leaderboard, the best of the records by the
objective stored in the latest record.

matplotlib is an optional extra (``pip install 'trainer-ext[plot]'``), imported only here, when a report
is written. Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never
through pyplot, so the process's backend and pyplot's list of open figures are left alone: a notebook or a
training script calling :func:`write_report` keeps its own backend. Reads files only; main process only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .objectives import Objective
from .records import (
    LEADERBOARD_FILENAME,
    SCORES_FILENAME,
    CheckpointRecord,
    leaderboard_payload,
    load_scores,
    read_json,
    write_file_atomic,
    write_text_atomic,
)
from .render import format_value, leaderboard_markdown, objective_header, statistics_markdown
from .run_folder import existing_checkpoints, read_records
from .selection import candidates_of, select_best

__all__ = [
    "REPORT_FILENAME",
    "PER_CLASS_FIGURE",
    "CONFUSION_FIGURE",
    "PRECISION_RECALL_FIGURE",
    "write_report",
]

REPORT_FILENAME = "report.md"
PER_CLASS_FIGURE = "per_class_metrics.png"
CONFUSION_FIGURE = "confusion_matrix.png"
PRECISION_RECALL_FIGURE = "precision_recall.png"
MAX_CLASSES_PLOTTED = 12  # one panel per class; more would be unreadable
INSTALL_HINT = "pip install 'trainer-ext[plot]'"


def _matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, or ImportError saying how to install the extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"the report draws its figures with matplotlib, which is not installed: {INSTALL_HINT}") from exc
    return Figure, FigureCanvasAgg


@dataclass(frozen=True)
class _Marks:
    """What the report marks: the chosen checkpoint and the lowest-loss one (either may be None)."""

    objective: Objective | None
    chosen: CheckpointRecord | None
    reason: str
    reference: CheckpointRecord | None
    reference_label: str  # "lowest log_loss" or "highest accuracy"
    reference_key: str
    payload: Mapping[str, Any] | None  # the leaderboard shown in the report


def write_report(output_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``report.md`` and its PNG figures for the checkpoints of ``output_dir``; return the path of
    ``report.md``.

    Args:
        output_dir: the Trainer's output folder, holding ``checkpoint-<step>`` folders with records
            (``checkpoint_metrics.json``) and, usually, ``checkpoint_leaderboard.json``.
        out_dir: where to write (created if needed). Default: ``<output_dir>/report``.

    Raises:
        ImportError: matplotlib is not installed (the message says ``pip install 'trainer-ext[plot]'``).
        FileNotFoundError: ``output_dir`` does not exist or holds no record.
        SchemaVersionError: a record or the leaderboard is newer than this library.
    """
    Figure, Canvas = _matplotlib()
    output_dir = Path(output_dir)
    out = Path(out_dir) if out_dir is not None else output_dir / "report"
    records = read_records(output_dir)
    if not records:
        raise FileNotFoundError(
            f"{output_dir}: no checkpoint_metrics.json record to report on; run 'trainer-ext evaluate {output_dir} --data FILE'."
        )
    ordered = sorted(records.values(), key=lambda r: (r.global_step, r.checkpoint))
    marks = _marks(output_dir, records)
    out.mkdir(parents=True, exist_ok=True)

    draw = _Drawing(Figure, Canvas, out)
    task_sections = TASK_SECTIONS.get(ordered[-1].task, _single_label_sections)
    sections = task_sections(draw, ordered, marks, output_dir)
    if marks.payload is not None:
        # The leaderboard's own table, without its title and objective line (said above).
        sections += ["## Leaderboard", ""] + leaderboard_markdown(marks.payload, title=False).split("\n")

    text = "\n".join(_summary(output_dir, ordered, marks) + [""] + sections).rstrip() + "\n"
    path = out / REPORT_FILENAME
    write_text_atomic(path, text)
    return path


def _single_label_sections(draw: _Drawing, ordered: Sequence[CheckpointRecord], marks: _Marks, output_dir: Path) -> list[str]:
    sections = _per_class_section(draw, ordered, marks)
    if marks.chosen is not None:
        sections += _confusion_section(draw, marks.chosen)
        sections += _precision_recall_section(draw, marks.chosen, _scores(output_dir / marks.chosen.checkpoint))
    return sections


def _multi_label_sections(draw: _Drawing, ordered: Sequence[CheckpointRecord], marks: _Marks, output_dir: Path) -> list[str]:
    """Per-label P/R/F1 by step (the per-class figure reads the same keys), one 2 x 2 matrix per label."""
    sections = _per_class_section(draw, ordered, marks)
    chosen = marks.chosen
    if chosen is not None:
        lines = [f"## Per-label confusion matrices of {chosen.checkpoint}", ""]
        if not chosen.confusion_matrix:
            return sections + lines + [_missing(chosen, "confusion matrix"), ""]
        draw.save(_per_label_confusion_figure(draw.Figure, chosen), CONFUSION_FIGURE)
        sections += lines + [f"![Per-label confusion matrices]({CONFUSION_FIGURE})", "",
                             "One panel per label: rows true (0, 1), columns predicted (0, 1).", ""]
        sections += _statistics_of(chosen)
    return sections


def _regression_sections(draw: _Drawing, ordered: Sequence[CheckpointRecord], marks: _Marks, output_dir: Path) -> list[str]:
    """The error keys by step, and the chosen checkpoint's residuals (from checkpoint_scores.npz)."""
    draw.save(_regression_by_step_figure(draw.Figure, ordered, marks), PER_CLASS_FIGURE)
    sections = ["## Regression keys across checkpoints", "", f"![mae, rmse and r2 by global step]({PER_CLASS_FIGURE})", ""]
    chosen = marks.chosen
    if chosen is not None:
        scores = _scores(output_dir / chosen.checkpoint)
        lines = [f"## Residuals of {chosen.checkpoint}", ""]
        if scores is None or scores.get("probabilities") is None:
            return sections + lines + [_missing(chosen, "saved per-example outputs (checkpoint_scores.npz)"), ""]
        draw.save(_residual_figure(draw.Figure, chosen, scores), RESIDUAL_FIGURE)
        sections += lines + [f"![Residuals]({RESIDUAL_FIGURE})", "", "Prediction minus label against the label.", ""]
    return sections


def _token_sections(draw: _Drawing, ordered: Sequence[CheckpointRecord], marks: _Marks, output_dir: Path) -> list[str]:
    """Per-entity P/R/F1 by step (the per-class figure on the entity types), the chosen one's TP/FP/FN."""
    from .tasks.token import TokenClassification

    types = TokenClassification(ordered[-1].labels).entity_types
    draw.save(_per_class_figure(draw.Figure, ordered, types, marks), PER_CLASS_FIGURE)
    sections = [
        "## Per-entity precision, recall and F1 across checkpoints", "",
        f"![Per-entity precision, recall and F1 by global step]({PER_CLASS_FIGURE})", "",
        "One panel per entity type; x is the global step. Solid vertical line: the chosen checkpoint.", "",
    ]
    chosen = marks.chosen
    if chosen is not None and chosen.confusion_matrix:
        sections += [f"## Entity counts of {chosen.checkpoint}", ""] + _statistics_of(chosen)
    return sections


def _statistics_of(record: CheckpointRecord) -> list[str]:
    """The record's statistics as its task lays them out for people (markdown lines)."""
    from .tasks import task_from_record

    return statistics_markdown(task_from_record(record.task, record.labels).statistics_tables(record.confusion_matrix))


# The report's sections per record task.
TASK_SECTIONS: dict[str, Any] = {
    "single_label": _single_label_sections,
    "multi_label": _multi_label_sections,
    "regression": _regression_sections,
    "token": _token_sections,
}
RESIDUAL_FIGURE = "residuals.png"


@dataclass(frozen=True)
class _Drawing:
    """Where and how the figures are drawn: matplotlib's ``Figure`` and Agg canvas, the report folder."""

    Figure: Any
    Canvas: Any
    out: Path

    def save(self, figure: Any, name: str) -> None:
        _save(self.Canvas, figure, self.out / name)


def _per_class_section(draw: _Drawing, ordered: Sequence[CheckpointRecord], marks: _Marks) -> list[str]:
    names = list(ordered[-1].labels)
    draw.save(_per_class_figure(draw.Figure, ordered, names, marks), PER_CLASS_FIGURE)
    shown = "" if len(names) <= MAX_CLASSES_PLOTTED else f" (the first {MAX_CLASSES_PLOTTED} of {len(names)} classes)"
    return [
        "## Per-class precision, recall and F1 across checkpoints",
        "",
        f"![Per-class precision, recall and F1 by global step]({PER_CLASS_FIGURE})",
        "",
        f"One panel per class{shown}; x is the global step. Solid vertical line: the chosen checkpoint"
        + (f" ({marks.chosen.checkpoint})" if marks.chosen else "")
        + f"; dashed: the checkpoint with the {marks.reference_label}"
        + (f" ({marks.reference.checkpoint})" if marks.reference else "")
        + ".",
        "",
    ]


def _confusion_section(draw: _Drawing, chosen: CheckpointRecord) -> list[str]:
    lines = [f"## Confusion matrix of {chosen.checkpoint}", ""]
    if not chosen.confusion_matrix:
        return lines + [_missing(chosen, "confusion matrix"), ""]
    draw.save(_confusion_figure(draw.Figure, chosen), CONFUSION_FIGURE)
    return lines + [f"![Confusion matrix]({CONFUSION_FIGURE})", ""] + _statistics_of(chosen)


def _precision_recall_section(
    draw: _Drawing, chosen: CheckpointRecord, scores: Mapping[str, np.ndarray] | None
) -> list[str]:
    lines = [f"## Precision-recall curves of {chosen.checkpoint}", ""]
    if scores is None or scores.get("probabilities") is None:
        return lines + [_missing(chosen, "saved per-example probabilities (checkpoint_scores.npz)"), ""]
    draw.save(_precision_recall_figure(draw.Figure, chosen, scores), PRECISION_RECALL_FIGURE)
    return lines + [
        f"![Precision-recall curves]({PRECISION_RECALL_FIGURE})",
        "",
        "One-vs-rest per class, from the saved per-example probabilities (checkpoint_scores.npz).",
        "",
    ]


# ---- what is marked ---------------------------------------------------------------------------------


def _marks(output_dir: Path, records: Mapping[str, CheckpointRecord]) -> _Marks:
    payload: Mapping[str, Any] | None = None
    objective: Objective | None = None
    board_path = output_dir / LEADERBOARD_FILENAME
    if board_path.is_file():
        payload = read_json(board_path)
        # "on disk" as it is now: the file says what it was when the leaderboard was last written.
        payload["entries"] = [
            {**entry, "exists": (output_dir / entry["checkpoint"]).is_dir()} for entry in payload.get("entries", [])
        ]
        chosen_name, reason = payload.get("best_checkpoint"), str(payload.get("reason") or "")
        try:
            objective = Objective.from_dict(payload["objective"])
        except Exception:  # an objective this version cannot rebuild is still reported by name
            objective = None
    else:
        latest = max(records.values(), key=lambda r: r.global_step)
        objective = Objective.from_dict(latest.objective)
        selection = select_best(candidates_of(records.values()), objective)
        chosen_name, reason = selection.best_checkpoint, selection.reason
        payload = leaderboard_payload(selection, records, existing_checkpoints(output_dir, records))
    chosen = records.get(chosen_name) if chosen_name else None

    with_loss = [r for r in records.values() if _finite(r.metrics.get("log_loss"))]
    if with_loss:
        reference = min(with_loss, key=lambda r: (r.metrics["log_loss"], r.global_step))
        label, key = "lowest log_loss", "log_loss"
    else:
        with_accuracy = [r for r in records.values() if _finite(r.metrics.get("accuracy"))]
        reference = max(with_accuracy, key=lambda r: (r.metrics["accuracy"], -r.global_step)) if with_accuracy else None
        label, key = "highest accuracy", "accuracy"
    return _Marks(objective, chosen, reason, reference, label, key, payload)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _summary(output_dir: Path, ordered: Sequence[CheckpointRecord], marks: _Marks) -> list[str]:
    on_disk = sum(1 for r in ordered if (output_dir / r.checkpoint).is_dir())
    lines = ["# Checkpoint report", "", f"Output folder: `{output_dir}`. {len(ordered)} checkpoints evaluated, {on_disk} on disk."]
    held_out = next((r.eval_set for r in reversed(ordered) if r.eval_set), None)
    if held_out:
        lines.append(
            f"Held-out set: {held_out.get('name', '?')}, {held_out.get('num_samples', '?')} examples, "
            f"fingerprint `{held_out.get('fingerprint', '?')}`."
        )
    lines.append("")
    if marks.objective is not None:
        lines += [objective_header(marks.objective) + ".", ""]
    if marks.chosen is not None:
        metric = marks.objective.metric if marks.objective is not None else None
        value = marks.chosen.metrics.get(metric) if metric else None
        lines.append(
            f"- **Chosen: {marks.chosen.checkpoint}** (step {marks.chosen.global_step}"
            + (f", {metric} = {format_value(value)}" if metric else "")
            + f"). {marks.reason}"
        )
    else:
        lines.append(f"- **Chosen: none**. {marks.reason or 'No checkpoint has a finite objective value.'}")
    if marks.reference is not None:
        lines.append(
            f"- **{marks.reference_label[0].upper()}{marks.reference_label[1:]}: {marks.reference.checkpoint}** "
            f"(step {marks.reference.global_step}, {marks.reference_key} = "
            f"{format_value(marks.reference.metrics.get(marks.reference_key))})"
            + (" - the same checkpoint." if marks.chosen is not None and marks.reference.checkpoint == marks.chosen.checkpoint else ".")
        )
    return lines


def _missing(record: CheckpointRecord, what: str) -> str:
    return f"Not drawn: {record.checkpoint} has no {what}; its folder was rotated away, or saved without it."


def _scores(folder: Path) -> dict[str, np.ndarray] | None:
    if not (folder / SCORES_FILENAME).is_file():
        return None
    return load_scores(folder)


# ---- figures --------------------------------------------------------------------------------------------


def _save(Canvas: Any, figure: Any, path: Path) -> None:
    """Render on the Agg canvas, written atomically (never a half-written PNG)."""
    Canvas(figure)
    write_file_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=110))


def _per_class_figure(Figure: Any, ordered: Sequence[CheckpointRecord], names: Sequence[str], marks: _Marks) -> Any:
    from matplotlib.ticker import MaxNLocator

    from .metrics import slugify

    names = list(names)[:MAX_CLASSES_PLOTTED]
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    steps = [r.global_step for r in ordered]
    for ax, name in zip(axes, names):
        slug = slugify(name)
        for key, title, marker in (("precision", "precision", "o"), ("recall", "recall", "s"), ("f1", "F1", "^")):
            values = [r.metrics.get(f"{key}_{slug}", math.nan) for r in ordered]  # NaN: not computed
            ax.plot(steps, values, marker=marker, label=title)
        if marks.chosen is not None:
            ax.axvline(marks.chosen.global_step, color="C3", linewidth=2.0, alpha=0.8,
                       label=f"chosen: {marks.chosen.checkpoint}")
        if marks.reference is not None:
            ax.axvline(marks.reference.global_step, color="0.25", linestyle="--", linewidth=1.5,
                       label=f"{marks.reference_label}: {marks.reference.checkpoint}")
        ax.set_title(name)
        ax.set_xlabel("global step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(loc="lower right", fontsize="small")
    figure.suptitle("Held-out precision, recall and F1 per class")
    return figure


def _confusion_figure(Figure: Any, record: CheckpointRecord) -> Any:
    cm = np.asarray(record.confusion_matrix, dtype=np.int64)
    size = max(3.5, 0.7 * len(cm) + 2.5)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(cm, cmap="Blues")
    figure.colorbar(image, ax=ax, label="examples")
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    ax.set_xticks(range(len(cm)), labels=record.labels, rotation=30, ha="right")
    ax.set_yticks(range(len(cm)), labels=record.labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{record.checkpoint} (step {record.global_step}), {int(cm.sum())} examples")
    return figure


def _precision_recall_figure(Figure: Any, record: CheckpointRecord, scores: Mapping[str, np.ndarray]) -> Any:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    labels = np.asarray(scores["labels"])
    probabilities = np.asarray(scores["probabilities"], dtype=np.float64)
    figure = Figure(figsize=(6.0, 4.8), layout="constrained")
    ax = figure.subplots()
    for c, name in enumerate(record.labels[:MAX_CLASSES_PLOTTED]):
        positive = labels == c
        if not positive.any():
            continue  # no example of this class: precision-recall is undefined
        precision, recall, _ = precision_recall_curve(positive, probabilities[:, c])
        ap = average_precision_score(positive, probabilities[:, c])
        ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f}, {int(positive.sum())} examples)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    ax.set_title(f"{record.checkpoint}: one-vs-rest precision-recall")
    return figure


def _per_label_confusion_figure(Figure: Any, record: CheckpointRecord) -> Any:
    cms = np.asarray(record.confusion_matrix, dtype=np.int64)
    names = list(record.labels)[:MAX_CLASSES_PLOTTED]
    columns = min(len(names), 4)
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(2.8 * columns, 2.8 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, name, cm in zip(axes, names, cms):
        ax.imshow(cm, cmap="Blues")
        for (i, j), count in np.ndenumerate(cm):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > cm.max() / 2 else "black")
        ax.set_xticks([0, 1])
        ax.set_yticks([0, 1])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    figure.suptitle(f"{record.checkpoint} (step {record.global_step}): per-label confusion matrices")
    return figure


def _regression_by_step_figure(Figure: Any, ordered: Sequence[CheckpointRecord], marks: _Marks) -> Any:
    figure = Figure(figsize=(9.0, 3.6), layout="constrained")
    errors, fit = figure.subplots(1, 2)
    steps = [r.global_step for r in ordered]
    for ax, keys in ((errors, ("mae", "rmse", "median_absolute_error")), (fit, ("r2", "pearson", "spearman"))):
        for key in keys:
            ax.plot(steps, [r.metrics.get(key, math.nan) for r in ordered], marker="o", label=key)
        if marks.chosen is not None:
            ax.axvline(marks.chosen.global_step, color="C3", linewidth=2.0, alpha=0.8, label=f"chosen: {marks.chosen.checkpoint}")
        ax.set_xlabel("global step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    errors.set_title("errors (lower is better)")
    fit.set_title("fit (higher is better)")
    return figure


def _residual_figure(Figure: Any, record: CheckpointRecord, scores: Mapping[str, np.ndarray]) -> Any:
    labels = np.asarray(scores["labels"], dtype=np.float64).reshape(-1)
    predictions = np.asarray(scores["probabilities"], dtype=np.float64).reshape(-1)
    figure = Figure(figsize=(6.0, 4.4), layout="constrained")
    ax = figure.subplots()
    ax.scatter(labels, predictions - labels, s=10, alpha=0.6)
    ax.axhline(0.0, color="0.3", linewidth=1.0)
    ax.set_xlabel("label")
    ax.set_ylabel("prediction - label")
    ax.grid(alpha=0.3)
    ax.set_title(f"{record.checkpoint}: residuals ({labels.size} examples)")
    return figure
