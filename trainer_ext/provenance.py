"""Say in a saved model folder how its checkpoint was chosen. Pure: no torch, no transformers.

:func:`write_provenance` writes two things into the folder ``Trainer.save_model`` wrote:

* ``trainer_ext_selection.json``: the objective and constraints, the chosen checkpoint and its objective
  value (with its bootstrap interval when the leaderboard has one), the held-out set (name, size,
  fingerprint) and the runner-up; versioned like every trainer_ext file;
* the model card ``README.md``, through :func:`model_card_with_choice`: a ``## How this checkpoint was
  chosen`` section (replaced when it is already there, appended otherwise; the rest of the card is kept
  as it was) and, in the card's metadata, a ``model-index`` whose results are the chosen checkpoint's
  held-out metrics, so that the Hub shows them. The card is created when the folder has none.

Both are written atomically (temporary file, then ``os.replace``). Main process only.

Why the card's results are *replaced*, not added to: the results ``Trainer.create_model_card`` puts in
``model-index`` are those of its *last* evaluation, on its own eval set (transformers issues 12741 and
15547), i.e. of weights that are usually not the ones in this folder. Shown beside ours, the Hub would
present two sets of numbers for one model, one of them about another checkpoint. Everything else the
card's metadata holds (license, tags, base model, datasets, language, its model name) is kept, and so
is the card's text, whose training-results table is a true history of the run.

The card is read and written with ``huggingface_hub``'s ``ModelCard`` / ``ModelCardData`` /
``EvalResult`` (a dependency of transformers, imported when a card is written, not at import time).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .records import SCHEMA_VERSION, write_json_atomic, write_text_atomic

__all__ = [
    "PROVENANCE_FILENAME",
    "MODEL_CARD_FILENAME",
    "SECTION_TITLE",
    "TASK_TYPE",
    "model_card_with_choice",
    "write_provenance",
]

PROVENANCE_FILENAME = "trainer_ext_selection.json"
MODEL_CARD_FILENAME = "README.md"
SECTION_TITLE = "## How this checkpoint was chosen"
RESULTS_TITLE = "### Held-out results of these weights"
# The Hub's task id for sequence classification, used when the card does not name a task already.
TASK_TYPE = "text-classification"
# The section runs from its heading to the next heading of level 1 or 2, or to the end of the card.
_SECTION = re.compile(rf"^{re.escape(SECTION_TITLE)}[ \t]*\n.*?(?=^#{{1,2}} |\Z)", re.MULTILINE | re.DOTALL)


def write_provenance(
    model_dir: str | os.PathLike,
    leaderboard_payload: Mapping[str, Any],
    held_out_info: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> Path:
    """Record in ``model_dir`` how its weights were chosen; return the path of ``trainer_ext_selection.json``.

    Args:
        model_dir: the folder of the saved model (``Trainer.save_model(model_dir)``); created if needed.
        leaderboard_payload: the content of ``checkpoint_leaderboard.json`` (entries best first). An entry
            may carry ``interval`` (``low``, ``high``, ``confidence``): it is reported with the value. The
            best entry's ``metrics`` become the card's ``model-index`` results.
        held_out_info: the held-out set as a record's ``eval_set`` (``name``, ``num_samples``,
            ``fingerprint``), or a list of them with several held-out sets.

    The model card ``README.md`` already in ``model_dir`` (the Trainer's, a user's) is rewritten by
    :func:`model_card_with_choice`; a folder without one gets a card named after the folder.

    Raises ``ValueError`` when the leaderboard has no best checkpoint (no checkpoint had a finite
    objective value): there is nothing to explain.
    """
    model_dir = Path(model_dir)
    chosen = _best_entry(leaderboard_payload)
    sets = [dict(held_out_info)] if isinstance(held_out_info, Mapping) else [dict(s) for s in held_out_info]
    selection = _selection(leaderboard_payload, chosen, sets)
    path = model_dir / PROVENANCE_FILENAME
    write_json_atomic(path, selection)

    card_path = model_dir / MODEL_CARD_FILENAME
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else None
    metrics = chosen.get("metrics") or {}
    write_text_atomic(card_path, _card(card, selection, metrics, default_model_name=model_dir.resolve().name))
    return path


def model_card_with_choice(
    card_text: str | None,
    leaderboard_payload: Mapping[str, Any],
    best_record: Any,
    *,
    default_model_name: str = "model",
) -> str:
    """The model card ``card_text`` with the choice in it: the text of the new ``README.md``.

    Args:
        card_text: the card as it is (what ``Trainer.create_model_card`` wrote, a user's card), or
            None / ``""`` when there is none.
        leaderboard_payload: the content of ``checkpoint_leaderboard.json`` (entries best first).
        best_record: the business-best checkpoint's :class:`~trainer_ext.records.CheckpointRecord` (or its
            ``to_dict()``): its ``metrics`` become the ``model-index`` results, its ``eval_set`` names
            the held-out set(s).
        default_model_name: the ``model-index`` name when the card does not have one already.

    What the new card holds:

    * metadata: everything ``card_text`` had, except that ``model-index`` results are replaced (see the
      module docstring for why) by one result: task ``text-classification`` (or the task the card
      already names), dataset = the held-out set (type and name: the record's ``eval_set`` name),
      one metric per finite metric key of the record, ``type`` and ``name`` exactly the record's key
      (``recall_negative``, ``reviews_2025_f1_macro``), the objective first. A key whose value is NaN,
      null or infinite is left out (the Hub accepts numbers only). With an objective that is not one of
      the record's keys, the objective value is added under the objective's name.
    * text: the card's text with the ``## How this checkpoint was chosen`` section (and under it a table
      of the same held-out results) replacing an earlier one, or appended.

    Raises ``ValueError`` when the leaderboard has no best checkpoint, or when ``best_record`` is not
    that checkpoint's record.
    """
    record = best_record.to_dict() if hasattr(best_record, "to_dict") else dict(best_record)
    chosen = _best_entry(leaderboard_payload)
    if record.get("checkpoint") != chosen.get("checkpoint"):
        raise ValueError(
            f"best_record: is the record of {record.get('checkpoint')!r}, but the leaderboard's best checkpoint "
            f"is {chosen.get('checkpoint')!r}; pass the record of the best checkpoint."
        )
    selection = _selection(leaderboard_payload, chosen, _held_out_sets(record.get("eval_set") or {}))
    return _card(card_text, selection, record.get("metrics") or {}, default_model_name=default_model_name)


def _best_entry(leaderboard_payload: Mapping[str, Any]) -> Mapping[str, Any]:
    best = leaderboard_payload.get("best_checkpoint")
    entries = list(leaderboard_payload.get("entries") or [])
    chosen = next((e for e in entries if e.get("checkpoint") == best), None)
    if best is None or chosen is None:
        raise ValueError(
            "leaderboard_payload: no best checkpoint (no checkpoint had a finite objective value); "
            "there is no choice to record."
        )
    return chosen


def _held_out_sets(eval_set: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A record's ``eval_set`` as the list ``write_provenance`` takes: one entry per held-out set."""
    sets = eval_set.get("sets") or {}
    if len(sets) > 1:
        return [{"name": name, **dict(info)} for name, info in sets.items()]
    return [{k: eval_set[k] for k in ("name", "num_samples", "fingerprint") if k in eval_set}]


def _selection(
    leaderboard_payload: Mapping[str, Any], chosen: Mapping[str, Any], sets: list[dict[str, Any]]
) -> dict[str, Any]:
    """The content of ``trainer_ext_selection.json``."""
    best = chosen["checkpoint"]
    entries = list(leaderboard_payload.get("entries") or [])
    runner_up = next((e for e in entries if e.get("checkpoint") != best), None)
    return {
        "schema_version": SCHEMA_VERSION,
        "chosen_checkpoint": best,
        "global_step": chosen.get("global_step"),
        "epoch": chosen.get("epoch"),
        "objective": dict(leaderboard_payload.get("objective") or {}),
        "objective_value": chosen.get("objective_value"),
        "interval": chosen.get("interval"),
        "best_estimate": leaderboard_payload.get("best_estimate"),
        "feasible": chosen.get("feasible"),
        "reason": leaderboard_payload.get("reason"),
        "held_out": sets,
        "runner_up": None if runner_up is None else {
            "checkpoint": runner_up.get("checkpoint"),
            "global_step": runner_up.get("global_step"),
            "objective_value": runner_up.get("objective_value"),
            "interval": runner_up.get("interval"),
            "feasible": runner_up.get("feasible"),
        },
        "checkpoints_evaluated": len(entries),
    }


def _results(selection: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(key, value) of every finite held-out result, the objective first."""
    objective = selection["objective"].get("metric")
    values = {key: value for key, value in metrics.items() if _number(value)}
    if objective and objective not in values and _number(selection.get("objective_value")):
        values[objective] = selection["objective_value"]
    first = [(objective, values.pop(objective))] if objective in values else []
    return first + list(values.items())


def _card(card_text: str | None, selection: Mapping[str, Any], metrics: Mapping[str, Any], *, default_model_name: str) -> str:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    card_text = card_text or ""
    if card_text.startswith("---"):
        # A malformed model-index is dropped with a warning rather than refused: it is replaced anyway.
        card = ModelCard(card_text, ignore_metadata_errors=True)
        data, text = card.data, card.text
    else:
        data, text = ModelCardData(), card_text
    task = next((r.task_type for r in data.eval_results or [] if r.task_type), TASK_TYPE)
    # The held-out set(s) by name: "holdout", or "reviews_2024+reviews_2025" with several.
    dataset = "+".join(str(s.get("name")) for s in selection["held_out"] if s.get("name")) or "held-out"
    results = _results(selection, metrics)
    data.model_name = data.model_name or default_model_name
    data.eval_results = [
        EvalResult(
            task_type=task,
            dataset_type=dataset,
            dataset_name=dataset,
            metric_type=key,
            metric_name=key,
            metric_value=float(value),
        )
        for key, value in results
    ]
    text = _with_section(text, _section(selection, results))
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{text}"))


def _with_section(card: str, section: str) -> str:
    if _SECTION.search(card):
        return _SECTION.sub(lambda _: section + "\n", card, count=1).rstrip("\n") + "\n"
    if not card.strip():
        return section
    return card.rstrip("\n") + "\n\n" + section


def _section(selection: Mapping[str, Any], results: Sequence[tuple[str, float]] = ()) -> str:
    objective = selection["objective"]
    metric = objective.get("metric", "?")
    direction = {True: "higher is better", False: "lower is better"}.get(objective.get("greater_is_better"), "")
    lines = [SECTION_TITLE, ""]
    lines.append(
        f"These weights are **{selection['chosen_checkpoint']}** (global step {selection['global_step']}), chosen by "
        f"trainer_ext among {selection['checkpoints_evaluated']} evaluated "
        f"checkpoint(s) of the training run."
    )
    lines.append("")
    lines.append(f"- Objective: `{metric}`" + (f" ({direction})" if direction else ""))
    constraints = objective.get("constraints") or []
    lines.append(f"- Constraints: {', '.join(f'`{c}`' for c in constraints)}" if constraints else "- Constraints: none")
    if objective.get("tie_breakers"):
        lines.append(f"- Tie-breakers: {', '.join(f'`{t}`' for t in objective['tie_breakers'])}")
    if objective.get("cost_matrix"):
        lines.append(f"- Cost matrix (rows true class, columns predicted): `{objective['cost_matrix']}`")
    lines.append(f"- Objective value: {_value(selection['objective_value'], selection.get('interval'))}"
                 + ("" if selection.get("feasible", True) else " (no checkpoint met every constraint)"))
    estimate = selection.get("best_estimate")
    if isinstance(estimate, Mapping) and _number(estimate.get("value")):
        lines.append(
            f"- Expected on new data: {_value(estimate['value'], estimate)} (selection-corrected: the held-out "
            f"value of the best of {selection['checkpoints_evaluated']} checkpoints is optimistic by "
            f"{estimate['optimism']:+.4f})"
        )
    for held_out in selection["held_out"]:
        lines.append(
            f"- Held-out set{' ' + repr(held_out['name']) if held_out.get('name') else ''}: "
            f"{held_out.get('num_samples', '?')} examples, fingerprint `{held_out.get('fingerprint', '?')}`"
        )
    runner_up = selection["runner_up"]
    if runner_up is None:
        lines.append("- Runner-up: none (one checkpoint was evaluated)")
    else:
        lines.append(
            f"- Runner-up: {runner_up['checkpoint']} (global step {runner_up['global_step']}), "
            f"{metric} = {_value(runner_up['objective_value'], runner_up.get('interval'))}"
        )
    if selection.get("reason"):
        lines += ["", f"Why: {selection['reason']}"]
    lines += ["", f"Details: `{PROVENANCE_FILENAME}` in this folder."]
    if results:
        lines += [
            "",
            RESULTS_TITLE,
            "",
            "The same values are this card's `model-index` results, which the Hub shows. Results the Trainer "
            "wrote elsewhere in this card, if any, come from its last evaluation on its own eval set, not "
            "necessarily of these weights.",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| `{key}`{' (objective)' if key == metric else ''} | {value:.4f} |" for key, value in results]
    return "\n".join(lines) + "\n"


def _value(value: Any, interval: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    text = f"{value:.4f}"
    if isinstance(interval, Mapping) and _number(interval.get("low")) and _number(interval.get("high")):
        confidence = interval.get("confidence")
        level = f"{confidence:.0%} " if _number(confidence) else ""
        text += f" ({level}bootstrap interval {interval['low']:.4f} to {interval['high']:.4f})"
    return text


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
