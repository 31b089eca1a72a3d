"""Say in a saved model folder how its checkpoint was chosen. Pure: no torch, no transformers.

:func:`write_provenance` writes two things into the folder ``Trainer.save_model`` wrote:

* ``trainer_ext_selection.json``: the objective and constraints, the chosen checkpoint and its objective
  value (with its bootstrap interval when the leaderboard has one), the held-out set (name, size,
  fingerprint) and the runner-up; versioned like every trainer_ext file;
* a ``## How this checkpoint was chosen`` section in the model card ``README.md``: replaced when it is
  already there (the rest of the card is kept as it was), appended otherwise; the card is created when
  the folder has none.

Both are written atomically (temporary file, then ``os.replace``). Main process only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .records import SCHEMA_VERSION, write_json_atomic, write_text_atomic

__all__ = ["PROVENANCE_FILENAME", "MODEL_CARD_FILENAME", "SECTION_TITLE", "write_provenance"]

PROVENANCE_FILENAME = "trainer_ext_selection.json"
MODEL_CARD_FILENAME = "README.md"
SECTION_TITLE = "## How this checkpoint was chosen"
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
            may carry ``interval`` (``low``, ``high``, ``confidence``): it is reported with the value.
        held_out_info: the held-out set as a record's ``eval_set`` (``name``, ``num_samples``,
            ``fingerprint``), or a list of them with several held-out sets.

    Raises ``ValueError`` when the leaderboard has no best checkpoint (no checkpoint had a finite
    objective value): there is nothing to explain.
    """
    model_dir = Path(model_dir)
    best = leaderboard_payload.get("best_checkpoint")
    entries = list(leaderboard_payload.get("entries") or [])
    chosen = next((e for e in entries if e.get("checkpoint") == best), None)
    if best is None or chosen is None:
        raise ValueError(
            "leaderboard_payload: no best checkpoint (no checkpoint had a finite objective value); "
            "there is no choice to record."
        )
    runner_up = next((e for e in entries if e.get("checkpoint") != best), None)
    sets = [dict(held_out_info)] if isinstance(held_out_info, Mapping) else [dict(s) for s in held_out_info]
    objective = dict(leaderboard_payload.get("objective") or {})
    selection = {
        "schema_version": SCHEMA_VERSION,
        "chosen_checkpoint": best,
        "global_step": chosen.get("global_step"),
        "epoch": chosen.get("epoch"),
        "objective": objective,
        "objective_value": chosen.get("objective_value"),
        "interval": chosen.get("interval"),
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
    path = model_dir / PROVENANCE_FILENAME
    write_json_atomic(path, selection)

    card_path = model_dir / MODEL_CARD_FILENAME
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    write_text_atomic(card_path, _with_section(card, _section(selection)))
    return path


def _with_section(card: str, section: str) -> str:
    if _SECTION.search(card):
        return _SECTION.sub(lambda _: section + "\n", card, count=1).rstrip("\n") + "\n"
    if not card.strip():
        return section
    return card.rstrip("\n") + "\n\n" + section


def _section(selection: Mapping[str, Any]) -> str:
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
