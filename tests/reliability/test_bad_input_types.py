"""Wrong types for each constructor argument of ``BestCheckpointCallback``: refused at construction with a
``ConfigurationError`` naming the argument and what was received (``tests/integration/test_bad_input.py``
has the other bad inputs; README "Bad input and what it produces" lists them all).
"""

from __future__ import annotations

import pytest

from trainer_ext import BestCheckpointCallback, ConfigurationError, Metric

HELD_OUT = [{"input_ids": [5, 6, 3], "labels": 0}, {"input_ids": [7, 3], "labels": 1}]
METRIC = Metric("flagged", lambda m: m["recall_negative"], greater_is_better=True)

# (argument=value as passed, the start of the message)
CASES = [
    ({"eval_dataset": 42}, r"eval_dataset: expected a datasets\.Dataset or a torch Dataset with a length; got int\."),
    ({"eval_dataset": None}, r"eval_dataset: expected a datasets\.Dataset .*; got NoneType\."),
    ({"eval_dataset": [1, 2]}, r"eval_dataset: each example must be a dict of features with a 'labels' .*; got int\."),
    ({"eval_dataset": {}}, r"eval_dataset: got an empty dict"),
    ({"eval_dataset": {"reviews 2025": HELD_OUT}}, r"eval_dataset: set names prefix metric keys, .*; got 'reviews 2025'\."),
    ({"objective": None}, r"objective: expected a metric key \(str\) .* or an Objective; got None \(NoneType\)\."),
    ({"objective": ["recall_negative"]}, r"objective: expected a metric key .*; got \['recall_negative'\] \(list\)\."),
    ({"objective": ""}, r"metric: expected a metric key such as 'recall_negative'; got ''\."),
    ({"data_collator": 5}, r"data_collator: expected a callable; got int\."),
    ({"batch_size": "8"}, r"batch_size: expected a positive int or None; got '8'\."),
    ({"name": 3}, r"name: expected letters, digits and '_' \(it prefixes logged keys\); got 3\."),
    ({"keep_top_k": "3"}, r"keep_top_k: expected a positive int or None; got '3'\."),
    ({"keep_top_k": 0}, r"keep_top_k: expected a positive int or None; got 0\."),
    ({"keep_top_k": True}, r"keep_top_k: expected a positive int or None; got True\."),
    ({"custom_metrics": [1]}, r"custom_metrics: expected trainer_ext\.Metric\(name, fn, greater_is_better\) items"),
    ({"custom_metrics": METRIC}, r"custom_metrics: expected a list of trainer_ext\.Metrics; got Metric\."),
    ({"custom_metrics": 5}, r"custom_metrics: expected a list of trainer_ext\.Metrics; got int\."),
    ({"evaluate_modules": [1]}, r"evaluate_modules: expected evaluate modules with \.compute\(\) .*; got 1 \(int\)\."),
    ({"evaluate_modules": 5}, r"evaluate_modules: expected a list of evaluate modules; got int\."),
    ({"label_names": "AB"}, r"label_names: expected the class names in id order, .*; got 'AB'\."),
    ({"label_names": 5}, r"label_names: expected the class names in id order, .*; got 5\."),
    ({"label_names": [0, 1]}, r"label_names: expected the class names in id order, .*; got \[0, 1\]\."),
    ({"load_best_at_end": "no"}, r"load_best_at_end: expected True or False; got 'no'\."),
    ({"load_best_at_end": None}, r"load_best_at_end: expected True or False; got None\."),
    ({"save_scores": "no"}, r"save_scores: expected True or False; got 'no'\."),
    ({"text_column": 5}, r"text_column: expected a column name \(str\); got 5\."),
    ({"text_column": ""}, r"text_column: expected a column name \(str\); got ''\."),
    ({"label_column": ["rating"]}, r"label_column: expected a column name \(str\); got \['rating'\]\."),
    ({"label_column": "stars"}, r"label_column: 'stars' is not a column of eval_dataset \(columns: "),
    ({"task": "multilabel"}, r"task: expected one of \[.*\], a trainer_ext task object .*; got 'multilabel'\."),
    ({"eval_steps": 0}, r"eval_steps: expected a positive int or None; got 0\."),
    ({"eval_steps": 2.5}, r"eval_steps: expected a positive int or None; got 2\.5\."),
    ({"save": "best"}, r"save: expected one of \['all', 'improved', 'top_k'\]; got 'best'\."),
    ({"save": "top_k"}, r"save: 'top_k' saves the evaluations that enter the keep_top_k best; pass keep_top_k="),
    ({"early_stopping_patience": 0}, r"early_stopping_patience: expected a positive int or None; got 0\."),
    ({"early_stopping_threshold": -0.01}, r"early_stopping_threshold: expected a number >= 0 \(in the objective's units\); got -0\.01\."),
    ({"early_stopping_threshold": "0.1"}, r"early_stopping_threshold: expected a number >= 0 .*; got '0\.1'\."),
]


def _case_id(case) -> str:
    kwargs = case.values[0] if hasattr(case, "values") else case[0]
    ((argument, value),) = kwargs.items()
    shown = repr(value) if isinstance(value, (int, str, list, dict, type(None))) else f"{type(value).__name__}(...)"
    return f"{argument}={shown}"[:40]


@pytest.mark.parametrize(("kwargs", "message"), CASES, ids=[_case_id(c) for c in CASES])
def test_wrong_type_is_refused_at_construction(kwargs, message):
    arguments = {"eval_dataset": HELD_OUT, "objective": "recall_negative", **kwargs}
    with pytest.raises(ConfigurationError, match=f"^{message}"):
        BestCheckpointCallback(**arguments)


def test_every_constructor_argument_has_a_wrong_type_case():
    import inspect

    covered = {next(iter(c.values[0] if hasattr(c, "values") else c[0])) for c in CASES}
    arguments = set(inspect.signature(BestCheckpointCallback.__init__).parameters) - {"self"}
    assert arguments <= covered, f"no wrong-type case for {sorted(arguments - covered)}"
