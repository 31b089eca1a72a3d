"""trainer_ext.objectives: constraint parsing, violations by hand, and one test per validation branch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer_ext.errors import ConfigurationError
from trainer_ext.metrics import metric_direction, metric_keys
from trainer_ext.objectives import Constraint, Objective, as_objective, known_direction

EXPECTED_SHAPE = "'<metric key> <op> <number>'"


# --- Constraint.parse -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, metric, op, bound",
    [
        ("precision_negative >= 0.80", "precision_negative", ">=", 0.80),
        ("log_loss <= 0.5", "log_loss", "<=", 0.5),
        ("recall_negative > 0.7", "recall_negative", ">", 0.7),
        ("f1_macro < 1", "f1_macro", "<", 1.0),
        ("precision_negative>=0.8", "precision_negative", ">=", 0.8),
        ("   recall_negative   >=   .5   ", "recall_negative", ">=", 0.5),
        ("recall_negative >= 5.", "recall_negative", ">=", 5.0),
        ("log_loss <= 1e-3", "log_loss", "<=", 1e-3),
        ("log_loss <= 2.5E+2", "log_loss", "<=", 250.0),
        ("mcc >= -0.25", "mcc", ">=", -0.25),
        ("mcc >= +0.25", "mcc", ">=", 0.25),
        ("mcc>=-1e-2", "mcc", ">=", -0.01),
        ("eval/custom.score-v2 > 3", "eval/custom.score-v2", ">", 3.0),
    ],
)
def test_parse_accepts_every_documented_form(text, metric, op, bound):
    constraint = Constraint.parse(text)
    assert (constraint.metric, constraint.op) == (metric, op)
    assert constraint.bound == bound
    assert isinstance(constraint.bound, float)


def test_parse_returns_a_constraint_unchanged():
    constraint = Constraint("recall_negative", ">=", 0.5)
    assert Constraint.parse(constraint) is constraint


@pytest.mark.parametrize(
    "text",
    [
        "",
        "precision_negative",
        "precision_negative >= ",
        ">= 0.8",
        "precision_negative => 0.8",
        "precision_negative == 0.8",
        "precision_negative = 0.8",
        "precision_negative >= high",
        "precision_negative >= 0.8.1",
        "precision_negative >= nan",
        "precision_negative >= inf",
        "precision negative >= 0.8",
        "precision_negative >= 0.8 and recall_negative >= 0.5",
        "0.8 <= precision_negative",
    ],
)
def test_parse_rejects_malformed_text_naming_it_and_the_expected_shape(text):
    with pytest.raises(ConfigurationError) as excinfo:
        Constraint.parse(text)
    message = str(excinfo.value)
    assert message.startswith("constraints:")
    assert repr(text) in message
    assert EXPECTED_SHAPE in message
    assert "precision_negative >= 0.80" in message  # an example of the shape


@pytest.mark.parametrize("value", [0.8, None, ("precision_negative", ">=", 0.8)])
def test_parse_rejects_a_non_string(value):
    with pytest.raises(ConfigurationError, match=r"constraints: each constraint must be a string") as excinfo:
        Constraint.parse(value)
    assert type(value).__name__ in str(excinfo.value)


def test_parse_rejects_a_bound_that_overflows_to_infinity():
    # "1e999" matches the number shape but is inf as a float; an infinite bound gives a NaN violation.
    with pytest.raises(ConfigurationError, match=r"bound"):
        Constraint.parse("precision_negative >= 1e999")


@pytest.mark.parametrize(
    "metric, op, bound, match",
    [
        ("", ">=", 0.5, "metric"),
        (3, ">=", 0.5, "metric"),
        ("recall_negative", "==", 0.5, "op"),
        ("recall_negative", "=>", 0.5, "op"),
        ("recall_negative", ">=", math.nan, "bound"),
        ("recall_negative", ">=", math.inf, "bound"),
        ("recall_negative", ">=", "0.5", "bound"),
        ("recall_negative", ">=", True, "bound"),
    ],
)
def test_constraint_constructed_directly_is_validated(metric, op, bound, match):
    # Objective accepts Constraint instances as they are, so the dataclass must check itself.
    with pytest.raises(ConfigurationError, match=match):
        Constraint(metric, op, bound)


def test_constraint_bound_of_any_real_number_is_stored_as_float():
    for bound in (1, np.float32(0.5), np.int64(2)):
        constraint = Constraint("recall_negative", ">=", bound)
        assert constraint.bound == float(bound) and type(constraint.bound) is float


def test_str_round_trips_through_parse_at_full_precision():
    for text in ["precision_negative >= 0.8", "log_loss < 0.8123456789", "mcc >= -1e-07", "f1_macro > 1"]:
        constraint = Constraint.parse(text)
        assert Constraint.parse(str(constraint)) == constraint
    assert str(Constraint.parse("precision_negative >= 0.80")) == "precision_negative >= 0.8"


# --- Constraint.violation, by hand ---------------------------------------------------------


def test_violation_is_zero_when_met():
    assert Constraint.parse("precision_negative >= 0.8").violation(0.9) == 0.0
    assert Constraint.parse("precision_negative >= 0.8").violation(0.8) == 0.0
    assert Constraint.parse("log_loss <= 0.5").violation(0.25) == 0.0
    assert Constraint.parse("log_loss <= 0.5").violation(0.5) == 0.0
    assert Constraint.parse("recall_negative > 0.5").violation(0.75) == 0.0
    assert Constraint.parse("log_loss < 0.5").violation(0.25) == 0.0


def test_violation_is_the_miss_scaled_by_the_bound():
    # (0.5 - 0.25) / 0.5 and (0.75 - 0.5) / 0.5: exactly representable.
    assert Constraint.parse("precision_negative >= 0.5").violation(0.25) == 0.5
    assert Constraint.parse("log_loss <= 0.5").violation(0.75) == 0.5
    assert Constraint.parse("recall_negative > 0.5").violation(0.25) == 0.5
    assert Constraint.parse("log_loss < 2").violation(3.0) == 0.5
    # A negative bound is scaled by its absolute value: (-0.5 - -0.75) / 0.5.
    assert Constraint.parse("mcc >= -0.5").violation(-0.75) == 0.5


def test_violation_with_a_zero_bound_is_scaled_by_one():
    assert Constraint.parse("mcc >= 0").violation(-0.25) == 0.25
    assert Constraint.parse("mcc <= 0").violation(0.375) == 0.375


@pytest.mark.parametrize("text", ["precision_negative >= 0.8", "log_loss <= 0.5", "recall_negative > 0", "mcc < 0"])
def test_violation_of_nan_or_missing_is_infinite(text):
    constraint = Constraint.parse(text)
    assert constraint.violation(math.nan) == math.inf
    assert constraint.violation(None) == math.inf


def test_strict_bound_equal_value_misses_by_one_ulp():
    assert Constraint.parse("recall_negative > 0.5").violation(0.5) == math.ulp(1.0)
    assert Constraint.parse("log_loss < 0.5").violation(0.5) == math.ulp(1.0)
    assert Constraint.parse("mcc > 0").violation(0.0) == math.ulp(1.0)
    # The next float up (down) meets it.
    assert Constraint.parse("recall_negative > 0.5").violation(math.nextafter(0.5, 1.0)) == 0.0
    assert Constraint.parse("log_loss < 0.5").violation(math.nextafter(0.5, 0.0)) == 0.0


def test_constraint_str():
    assert str(Constraint.parse("precision_negative>=0.80")) == "precision_negative >= 0.8"
    assert str(Constraint.parse("log_loss < 1e-3")) == "log_loss < 0.001"


# --- known_direction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, direction",
    [
        ("accuracy", True),
        ("balanced_accuracy", True),
        ("mcc", True),
        ("f1_macro", True),
        ("f1_weighted", True),
        ("recall_negative", True),
        ("precision_very_negative", True),
        ("roc_auc_positive", True),
        ("average_precision_neg", True),
        ("log_loss", False),
        ("expected_cost", False),
        ("support_negative", None),
        ("eval_loss", None),
        ("my_score", None),
        ("Recall_negative", None),
    ],
)
def test_known_direction(key, direction):
    assert known_direction(key) is direction


def test_known_direction_agrees_with_metrics_for_every_key_it_produces():
    slugs = ["negative", "neutral", "very_positive"]
    for key in metric_keys(slugs, with_scores=True):
        assert known_direction(key) == metric_direction(key, slugs), key


# --- Objective construction: one test per validation branch ----------------------------------


def test_builtin_key_knows_its_direction():
    assert Objective("recall_negative").greater_is_better is True
    assert Objective("log_loss").greater_is_better is False


def test_explicit_direction_matching_a_builtin_key_is_accepted():
    assert Objective("recall_negative", True).greater_is_better is True
    assert Objective("log_loss", greater_is_better=False).greater_is_better is False


def test_custom_key_with_a_direction_is_accepted():
    assert Objective("eval_business_value", greater_is_better=True).greater_is_better is True
    assert Objective("eval_cost", greater_is_better=False).greater_is_better is False


@pytest.mark.parametrize("metric", ["", None, 3, ("recall_negative",)])
def test_metric_must_be_a_non_empty_string(metric):
    with pytest.raises(ConfigurationError, match=r"^metric: expected a metric key") as excinfo:
        Objective(metric)
    assert repr(metric) in str(excinfo.value)


def test_custom_key_without_direction_raises_naming_greater_is_better():
    with pytest.raises(ConfigurationError) as excinfo:
        Objective("eval_business_value")
    message = str(excinfo.value)
    assert message.startswith("greater_is_better:")
    assert "'eval_business_value'" in message
    assert "greater_is_better=True" in message and "greater_is_better=False" in message


@pytest.mark.parametrize("value", [1, 0, "yes"])
def test_greater_is_better_must_be_a_bool(value):
    with pytest.raises(ConfigurationError, match=r"^greater_is_better: expected True or False") as excinfo:
        Objective("eval_business_value", value)
    assert repr(value) in str(excinfo.value)


@pytest.mark.parametrize(
    "metric, wrong, known_word", [("recall_negative", False, "higher"), ("log_loss", True, "lower")]
)
def test_wrong_explicit_direction_for_a_builtin_key_raises(metric, wrong, known_word):
    with pytest.raises(ConfigurationError) as excinfo:
        Objective(metric, greater_is_better=wrong)
    message = str(excinfo.value)
    assert message.startswith("greater_is_better:")
    assert repr(metric) in message
    assert f"{known_word} is better" in message
    assert f"greater_is_better={wrong}" in message


def test_constraints_accept_strings_a_single_string_and_constraint_objects():
    single = Objective("recall_negative", constraints="precision_negative >= 0.8")
    assert single.constraints == (Constraint("precision_negative", ">=", 0.8),)
    mixed = Objective(
        "recall_negative", constraints=["precision_negative >= 0.8", Constraint("log_loss", "<=", 0.5)]
    )
    assert [str(c) for c in mixed.constraints] == ["precision_negative >= 0.8", "log_loss <= 0.5"]


def test_malformed_constraint_raises_from_objective():
    with pytest.raises(ConfigurationError, match=r"^constraints: cannot parse 'precision_negative => 0.8'"):
        Objective("recall_negative", constraints=["precision_negative => 0.8"])


def test_tie_breakers_accept_a_single_string():
    assert Objective("recall_negative", tie_breakers="f1_macro").tie_breakers == ("f1_macro",)
    assert Objective("recall_negative", tie_breakers=["f1_macro", "log_loss"]).tie_breakers == ("f1_macro", "log_loss")


@pytest.mark.parametrize("key", ["eval_business_value", "support_negative", 3])
def test_tie_breaker_with_unknown_direction_raises(key):
    with pytest.raises(ConfigurationError) as excinfo:
        Objective("recall_negative", tie_breakers=["f1_macro", key])
    message = str(excinfo.value)
    assert message.startswith("tie_breakers:")
    assert repr(key) in message
    assert "'log_loss'" in message  # names what is allowed


@pytest.mark.parametrize("policy", ["least_violation", "keep_incumbent", "raise"])
def test_on_infeasible_accepts_each_policy(policy):
    assert Objective("recall_negative", on_infeasible=policy).on_infeasible == policy


def test_on_infeasible_rejects_anything_else():
    with pytest.raises(ConfigurationError) as excinfo:
        Objective("recall_negative", on_infeasible="closest")
    message = str(excinfo.value)
    assert message.startswith("on_infeasible:")
    assert "'closest'" in message
    assert "['least_violation', 'keep_incumbent', 'raise']" in message


@pytest.mark.parametrize("value", [0, 0.0, 0.01, 2])
def test_min_delta_accepts_non_negative_numbers(value):
    objective = Objective("recall_negative", min_delta=value)
    assert objective.min_delta == value
    assert isinstance(objective.min_delta, float)


@pytest.mark.parametrize("value", [-0.01, math.nan, "0.01", None, True])
def test_min_delta_rejects_negative_nan_and_non_numbers(value):
    with pytest.raises(ConfigurationError, match=r"^min_delta: expected a number >= 0") as excinfo:
        Objective("recall_negative", min_delta=value)
    assert repr(value) in str(excinfo.value)


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_min_delta_mode_accepts_each_mode(mode):
    assert Objective("recall_negative", min_delta_mode=mode).min_delta_mode == mode


def test_min_delta_mode_rejects_anything_else():
    with pytest.raises(ConfigurationError) as excinfo:
        Objective("recall_negative", min_delta_mode="percent")
    message = str(excinfo.value)
    assert message.startswith("min_delta_mode:")
    assert "'percent'" in message and "['absolute', 'relative']" in message


def test_options_after_direction_are_keyword_only():
    with pytest.raises(TypeError):
        Objective("recall_negative", True, ["precision_negative >= 0.8"])  # type: ignore[misc]


def test_objective_is_frozen_and_hashable():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"])
    with pytest.raises(AttributeError):
        objective.metric = "accuracy"  # type: ignore[misc]
    assert hash(objective) == hash(Objective("recall_negative", constraints=["precision_negative >= 0.8"]))


# --- keys, check_keys, round trip, as_objective --------------------------------------------


def test_keys_lists_every_key_read_once_in_order():
    objective = Objective(
        "recall_negative",
        constraints=["precision_negative >= 0.8", "recall_negative > 0.1", "log_loss <= 1"],
        tie_breakers=["f1_macro", "log_loss"],
    )
    assert objective.keys == ("recall_negative", "precision_negative", "log_loss", "f1_macro")


def test_check_keys_passes_when_every_key_is_available():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"], tie_breakers=["f1_macro"])
    objective.check_keys(metric_keys(["negative", "positive"], with_scores=False))


def test_check_keys_names_the_missing_and_lists_the_available_keys():
    objective = Objective("recall_neg", constraints=["precision_negative >= 0.8"], tie_breakers=["log_loss"])
    available = metric_keys(["negative", "positive"], with_scores=False)
    with pytest.raises(ConfigurationError) as excinfo:
        objective.check_keys(available, argument="objective")
    message = str(excinfo.value)
    assert message.startswith("objective: unknown metric key(s) ['recall_neg', 'log_loss']")
    assert str(sorted(available)) in message


def test_check_keys_uses_the_argument_name():
    with pytest.raises(ConfigurationError, match=r"^metric_for_best: "):
        Objective("recall_neg").check_keys(["accuracy"], argument="metric_for_best")


def test_to_dict_from_dict_round_trip():
    objective = Objective(
        "recall_negative",
        constraints=["precision_negative >= 0.8123456789", "log_loss < 0.35", "mcc > -1e-07"],
        tie_breakers=["f1_macro", "log_loss"],
        on_infeasible="keep_incumbent",
        min_delta=0.005,
        min_delta_mode="relative",
    )
    data = objective.to_dict()
    assert data == {
        "metric": "recall_negative",
        "greater_is_better": True,
        "constraints": [str(c) for c in objective.constraints],
        "tie_breakers": ["f1_macro", "log_loss"],
        "on_infeasible": "keep_incumbent",
        "min_delta": 0.005,
        "min_delta_mode": "relative",
        "cost_matrix": None,
        "class_prior": None,
        "tune_threshold": False,
        "bootstrap_resamples": 1000,
        "confidence": 0.95,
        "seed": 0,
        "require_significance": False,
        "alpha": 0.05,
        "across_sets": "mean",
        "set_weights": None,
    }
    assert Objective.from_dict(data) == objective


def test_from_dict_round_trip_of_a_custom_key_keeps_its_direction():
    objective = Objective("eval_cost", greater_is_better=False)
    assert Objective.from_dict(objective.to_dict()) == objective


def test_from_dict_fills_defaults():
    assert Objective.from_dict({"metric": "recall_negative"}) == Objective("recall_negative")


def test_replace_changes_one_field_and_validates():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"])
    assert objective.replace(min_delta=0.01) == Objective(
        "recall_negative", constraints=["precision_negative >= 0.8"], min_delta=0.01
    )
    with pytest.raises(ConfigurationError, match=r"^on_infeasible:"):
        objective.replace(on_infeasible="ignore")


def test_as_objective_accepts_a_key_or_an_objective():
    objective = Objective("log_loss")
    assert as_objective(objective) is objective
    assert as_objective("recall_negative") == Objective("recall_negative")


def test_as_objective_string_for_a_custom_key_asks_for_the_direction():
    with pytest.raises(ConfigurationError, match=r"^greater_is_better:"):
        as_objective("eval_business_value")


@pytest.mark.parametrize("value", [None, 3, {"metric": "recall_negative"}])
def test_as_objective_rejects_other_types(value):
    with pytest.raises(ConfigurationError) as excinfo:
        as_objective(value)
    message = str(excinfo.value)
    assert message.startswith("objective: expected a metric key (str)")
    assert repr(value) in message and type(value).__name__ in message


def test_module_docstring_example():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.80"])
    assert objective.constraints[0].bound == 0.8
