"""trainer_ext.selection: every rule of the module docstring by hand, then properties against a brute force."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer_ext.errors import InfeasibleObjectiveError
from trainer_ext.objectives import Constraint, Objective
from trainer_ext.selection import Candidate, Selection, select_best


def cand(step: int, **metrics: float) -> Candidate:
    return Candidate(f"checkpoint-{step}", step, metrics)


def names(selection: Selection) -> list[str]:
    return [r.checkpoint for r in selection.ranking]


# --- rule 1: NaN or missing is never best -----------------------------------------------------


def test_nan_objective_is_never_best_even_when_otherwise_better():
    selection = select_best(
        [cand(100, recall_negative=0.5), cand(200, recall_negative=math.nan), cand(300, recall_negative=0.25)],
        Objective("recall_negative"),
    )
    assert selection.best_checkpoint == "checkpoint-100"
    assert names(selection) == ["checkpoint-100", "checkpoint-300", "checkpoint-200"]
    assert selection.ranking[-1].objective_value is None


def test_missing_objective_key_counts_as_nan():
    selection = select_best([cand(100, accuracy=0.9), cand(200, recall_negative=0.25)], Objective("recall_negative"))
    assert selection.best_checkpoint == "checkpoint-200"
    assert selection.ranking[1].objective_value is None


def test_nan_for_a_lower_is_better_key_is_not_taken_as_best():
    # A naive "min" over log_loss with NaN mapped to -inf would pick the NaN.
    selection = select_best([cand(100, log_loss=0.5), cand(200, log_loss=math.nan)], Objective("log_loss"))
    assert selection.best_checkpoint == "checkpoint-100"


def test_only_nan_candidates_give_no_best_and_still_a_ranking():
    selection = select_best(
        [cand(200, recall_negative=math.nan), cand(100, accuracy=0.9)], Objective("recall_negative")
    )
    assert selection.best is None
    assert selection.best_checkpoint is None
    assert names(selection) == ["checkpoint-100", "checkpoint-200"]
    assert [r.rank for r in selection.ranking] == [1, 2]
    assert selection.reason == "no checkpoint has a finite objective value"


def test_no_candidates():
    selection = select_best([], Objective("recall_negative"))
    assert selection.best is None and selection.ranking == ()


def test_feasible_nan_is_ranked_after_an_infeasible_finite_value():
    # Rule 1 comes before rule 2: a NaN objective value is last whatever its feasibility.
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.5"])
    selection = select_best(
        [
            cand(100, recall_negative=math.nan, precision_negative=0.75),
            cand(200, recall_negative=0.5, precision_negative=0.25),
        ],
        objective,
    )
    assert selection.best_checkpoint == "checkpoint-200"
    assert names(selection) == ["checkpoint-200", "checkpoint-100"]


# --- rule 2: feasibility first ---------------------------------------------------------------


def test_feasible_beats_a_higher_infeasible_value():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"])
    selection = select_best(
        [
            cand(100, recall_negative=0.95, precision_negative=0.70),
            cand(200, recall_negative=0.80, precision_negative=0.85),
            cand(300, recall_negative=0.85, precision_negative=0.79),
        ],
        objective,
    )
    assert selection.best_checkpoint == "checkpoint-200"
    assert selection.best.feasible and selection.best.violations == {"precision_negative >= 0.8": 0.0}
    assert [r.feasible for r in selection.ranking] == [True, False, False]
    assert "among 1 of 3 checkpoints meeting precision_negative >= 0.8" in selection.reason


def test_nan_constraint_metric_is_infeasible():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.5"])
    selection = select_best(
        [
            cand(100, recall_negative=0.5, precision_negative=0.75),
            cand(200, recall_negative=0.9, precision_negative=math.nan),
        ],
        objective,
    )
    assert selection.best_checkpoint == "checkpoint-100"
    assert selection.ranking[1].violations == {"precision_negative >= 0.5": math.inf}
    assert selection.ranking[1].total_violation == math.inf


def test_strict_constraint_equal_value_is_infeasible():
    objective = Objective("accuracy", constraints=["recall_negative > 0.5"])
    selection = select_best(
        [cand(100, accuracy=0.75, recall_negative=0.5), cand(200, accuracy=0.5, recall_negative=0.75)], objective
    )
    assert selection.best_checkpoint == "checkpoint-200"


def test_every_constraint_must_be_met_and_violations_add_up():
    objective = Objective("accuracy", constraints=["precision_negative >= 0.5", "log_loss <= 0.5"])
    selection = select_best(
        [
            cand(100, accuracy=0.9, precision_negative=0.25, log_loss=0.75),
            cand(200, accuracy=0.5, precision_negative=0.5, log_loss=0.5),
        ],
        objective,
    )
    assert selection.best_checkpoint == "checkpoint-200"
    loser = selection.ranking[1]
    assert loser.violations == {"precision_negative >= 0.5": 0.5, "log_loss <= 0.5": 0.5}
    assert loser.total_violation == 1.0


# --- rule 3: better value, direction honoured ------------------------------------------------


def test_higher_wins_for_a_higher_is_better_key():
    selection = select_best(
        [cand(100, f1_macro=0.5), cand(200, f1_macro=0.75), cand(300, f1_macro=0.625)],
        Objective("f1_macro"),
    )
    assert names(selection) == ["checkpoint-200", "checkpoint-300", "checkpoint-100"]


def test_lower_wins_for_a_lower_is_better_key():
    selection = select_best(
        [cand(100, log_loss=0.5), cand(200, log_loss=0.25), cand(300, log_loss=0.75)],
        Objective("log_loss"),
    )
    assert names(selection) == ["checkpoint-200", "checkpoint-100", "checkpoint-300"]
    assert "lowest log_loss (0.25)" in selection.reason


def test_custom_key_direction_is_honoured():
    candidates = [cand(100, eval_cost=3.0), cand(200, eval_cost=2.0)]
    assert select_best(candidates, Objective("eval_cost", greater_is_better=False)).best_checkpoint == "checkpoint-200"
    assert select_best(candidates, Objective("eval_cost", greater_is_better=True)).best_checkpoint == "checkpoint-100"


# --- rule 4: ties --------------------------------------------------------------------------


def test_exact_tie_keeps_the_earlier_checkpoint():
    selection = select_best(
        [cand(300, f1_macro=0.5), cand(100, f1_macro=0.5), cand(200, f1_macro=0.5)],
        Objective("f1_macro"),
    )
    assert names(selection) == ["checkpoint-100", "checkpoint-200", "checkpoint-300"]
    assert "ties keep the earlier checkpoint" in selection.reason


def test_tie_order_uses_global_step_not_the_name():
    # "checkpoint-1000" sorts before "checkpoint-200" as text.
    selection = select_best([cand(1000, f1_macro=0.5), cand(200, f1_macro=0.5)], Objective("f1_macro"))
    assert selection.best_checkpoint == "checkpoint-200"


def test_first_tie_breaker_decides():
    objective = Objective("f1_macro", tie_breakers=["recall_negative", "accuracy"])
    selection = select_best(
        [
            cand(100, f1_macro=0.5, recall_negative=0.5, accuracy=0.9),
            cand(200, f1_macro=0.5, recall_negative=0.75, accuracy=0.1),
        ],
        objective,
    )
    assert selection.best_checkpoint == "checkpoint-200"
    assert "a tie on f1_macro was broken by recall_negative" in selection.reason


def test_second_tie_breaker_decides_when_the_first_is_equal():
    objective = Objective("f1_macro", tie_breakers=["recall_negative", "accuracy"])
    selection = select_best(
        [
            cand(100, f1_macro=0.5, recall_negative=0.5, accuracy=0.75),
            cand(200, f1_macro=0.5, recall_negative=0.5, accuracy=0.5),
        ],
        objective,
    )
    assert selection.best_checkpoint == "checkpoint-100"
    assert "a tie on f1_macro was broken by accuracy" in selection.reason


def test_tie_breaker_direction_lower_log_loss_wins():
    objective = Objective("f1_macro", tie_breakers=["log_loss"])
    selection = select_best(
        [
            cand(100, f1_macro=0.5, log_loss=0.5),
            cand(200, f1_macro=0.5, log_loss=0.25),
            cand(300, f1_macro=0.5, log_loss=0.75),
        ],
        objective,
    )
    assert names(selection) == ["checkpoint-200", "checkpoint-100", "checkpoint-300"]
    assert "broken by log_loss" in selection.reason


def test_tie_breaker_favouring_the_earlier_checkpoint_is_named_in_the_reason():
    # The tie-breaker decided even though the incumbent stayed.
    objective = Objective("f1_macro", tie_breakers=["log_loss"])
    selection = select_best([cand(100, f1_macro=0.5, log_loss=0.25), cand(200, f1_macro=0.5, log_loss=0.5)], objective)
    assert selection.best_checkpoint == "checkpoint-100"
    assert "a tie on f1_macro was broken by log_loss" in selection.reason


def test_tie_breakers_only_act_on_exact_ties():
    objective = Objective("f1_macro", tie_breakers=["recall_negative"])
    selection = select_best(
        [cand(100, f1_macro=0.5000001, recall_negative=0.0), cand(200, f1_macro=0.5, recall_negative=1.0)], objective
    )
    assert selection.best_checkpoint == "checkpoint-100"
    assert "broken by" not in selection.reason


def test_nan_tie_breaker_is_worst():
    objective = Objective("f1_macro", tie_breakers=["recall_negative"])
    selection = select_best(
        [cand(100, f1_macro=0.5, recall_negative=math.nan), cand(200, f1_macro=0.5, recall_negative=0.0)], objective
    )
    assert selection.best_checkpoint == "checkpoint-200"


def test_all_tie_breakers_equal_keeps_the_earlier_checkpoint():
    objective = Objective("f1_macro", tie_breakers=["recall_negative"])
    selection = select_best(
        [cand(200, f1_macro=0.5, recall_negative=0.5), cand(100, f1_macro=0.5, recall_negative=0.5)], objective
    )
    assert selection.best_checkpoint == "checkpoint-100"
    assert "ties keep the earlier checkpoint" in selection.reason


def test_infinite_objective_values_that_tie_go_to_the_tie_breakers():
    # inf - inf is NaN, not 0: equal infinite values are still an exact tie.
    objective = Objective("eval_score", greater_is_better=True, tie_breakers=["f1_macro"])
    selection = select_best(
        [cand(100, eval_score=math.inf, f1_macro=0.25), cand(200, eval_score=math.inf, f1_macro=0.75)], objective
    )
    assert selection.best_checkpoint == "checkpoint-200"
    assert names(selection) == ["checkpoint-200", "checkpoint-100"]


# --- rule 3: min_delta -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "later, expected",
    [
        (0.5625, "checkpoint-100"),  # +0.0625 < 0.125
        (0.625, "checkpoint-100"),  # +0.125: must be more than min_delta
        (0.75, "checkpoint-200"),  # +0.25
    ],
)
def test_min_delta_absolute(later, expected):
    objective = Objective("recall_negative", min_delta=0.125)
    selection = select_best([cand(100, recall_negative=0.5), cand(200, recall_negative=later)], objective)
    assert selection.best_checkpoint == expected
    assert "must improve by more than 0.125 (absolute)" in selection.reason


@pytest.mark.parametrize(
    "later, expected",
    [(0.4375, "checkpoint-100"), (0.375, "checkpoint-100"), (0.25, "checkpoint-200")],
)
def test_min_delta_absolute_for_a_lower_is_better_key(later, expected):
    objective = Objective("log_loss", min_delta=0.125)
    selection = select_best([cand(100, log_loss=0.5), cand(200, log_loss=later)], objective)
    assert selection.best_checkpoint == expected


@pytest.mark.parametrize(
    "later, expected",
    [(0.5625, "checkpoint-100"), (0.625, "checkpoint-100"), (0.75, "checkpoint-200")],
)
def test_min_delta_relative_is_a_fraction_of_the_current_best(later, expected):
    objective = Objective("recall_negative", min_delta=0.25, min_delta_mode="relative")  # 0.25 * 0.5 = 0.125
    selection = select_best([cand(100, recall_negative=0.5), cand(200, recall_negative=later)], objective)
    assert selection.best_checkpoint == expected
    assert "(relative)" in selection.reason


def test_min_delta_relative_uses_the_absolute_value_of_a_negative_best():
    objective = Objective("mcc", min_delta=0.5, min_delta_mode="relative")  # 0.5 * |-0.5| = 0.25
    assert select_best([cand(100, mcc=-0.5), cand(200, mcc=-0.375)], objective).best_checkpoint == "checkpoint-100"
    assert select_best([cand(100, mcc=-0.5), cand(200, mcc=-0.125)], objective).best_checkpoint == "checkpoint-200"


def test_min_delta_is_measured_against_the_current_best_not_the_previous_checkpoint():
    # 0.5 -> 0.5625 -> 0.625: each step is +0.0625, but the third beats the best (0.5) by 0.125.
    objective = Objective("recall_negative", min_delta=0.1)
    selection = select_best(
        [cand(100, recall_negative=0.5), cand(200, recall_negative=0.5625), cand(300, recall_negative=0.625)], objective
    )
    assert selection.best_checkpoint == "checkpoint-300"


def test_min_delta_does_not_let_a_worse_checkpoint_win():
    objective = Objective("recall_negative", min_delta=0.125)
    selection = select_best([cand(100, recall_negative=0.75), cand(200, recall_negative=0.5)], objective)
    assert selection.best_checkpoint == "checkpoint-100"


def test_min_delta_does_not_override_feasibility():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.5"], min_delta=0.5)
    selection = select_best(
        [
            cand(100, recall_negative=0.75, precision_negative=0.25),
            cand(200, recall_negative=0.5, precision_negative=0.5),
        ],
        objective,
    )
    assert selection.best_checkpoint == "checkpoint-200"


def test_relative_min_delta_against_an_infinitely_bad_best():
    # The first value is the worst possible (log_loss = inf); a finite one must take over, whatever the mode.
    for min_delta in (0.0, 0.1):
        objective = Objective("log_loss", min_delta=min_delta, min_delta_mode="relative")
        selection = select_best([cand(100, log_loss=math.inf), cand(200, log_loss=0.5)], objective)
        assert selection.best_checkpoint == "checkpoint-200", min_delta


# --- rule 5: none feasible -------------------------------------------------------------------

INFEASIBLE_RUN = [
    # precision_negative >= 0.8 is missed by all three: scaled misses 0.375, 0.0625, 0.125.
    cand(100, recall_negative=0.9, precision_negative=0.5),
    cand(200, recall_negative=0.5, precision_negative=0.75),
    cand(300, recall_negative=0.75, precision_negative=0.7),
]


def test_least_violation_picks_the_smallest_total_scaled_violation():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"])
    selection = select_best(INFEASIBLE_RUN, objective)
    assert names(selection) == ["checkpoint-200", "checkpoint-300", "checkpoint-100"]
    assert selection.best.total_violation == pytest.approx(0.0625)
    assert not selection.best.feasible
    assert "no checkpoint meets precision_negative >= 0.8; chosen by least_violation" in selection.reason


def test_least_violation_equal_violation_falls_back_to_the_objective():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.5"])
    selection = select_best(
        [
            cand(100, recall_negative=0.5, precision_negative=0.25),
            cand(200, recall_negative=0.75, precision_negative=0.25),
        ],
        objective,
    )
    assert selection.best_checkpoint == "checkpoint-200"


def test_keep_incumbent_keeps_the_first_checkpoint_until_a_feasible_one():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"], on_infeasible="keep_incumbent")
    selection = select_best(INFEASIBLE_RUN, objective)
    assert selection.best_checkpoint == "checkpoint-100"
    assert "chosen by keep_incumbent" in selection.reason
    feasible_later = INFEASIBLE_RUN + [cand(400, recall_negative=0.25, precision_negative=0.8)]
    assert select_best(feasible_later, objective).best_checkpoint == "checkpoint-400"


def test_keep_incumbent_skips_a_nan_first_checkpoint():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"], on_infeasible="keep_incumbent")
    run = [cand(50, recall_negative=math.nan, precision_negative=0.1)] + INFEASIBLE_RUN
    assert select_best(run, objective).best_checkpoint == "checkpoint-100"


def test_raise_before_the_end_behaves_like_least_violation():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"], on_infeasible="raise")
    selection = select_best(INFEASIBLE_RUN, objective, final=False)
    assert selection.best_checkpoint == "checkpoint-200"


def test_raise_when_final_names_the_closest_checkpoint():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"], on_infeasible="raise")
    with pytest.raises(InfeasibleObjectiveError) as excinfo:
        select_best(INFEASIBLE_RUN, objective, final=True)
    message = str(excinfo.value)
    assert "no checkpoint meets every constraint of 'recall_negative'" in message
    assert "the closest, checkpoint-200" in message
    assert "precision_negative >= 0.8" in message
    assert "on_infeasible='least_violation'" in message  # the hint


def test_raise_when_final_does_not_raise_when_one_is_feasible():
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"], on_infeasible="raise")
    run = INFEASIBLE_RUN + [cand(400, recall_negative=0.25, precision_negative=0.8)]
    assert select_best(run, objective, final=True).best_checkpoint == "checkpoint-400"


@pytest.mark.parametrize("policy", ["least_violation", "keep_incumbent"])
def test_other_policies_never_raise_when_final(policy):
    objective = Objective("recall_negative", constraints=["precision_negative >= 0.8"], on_infeasible=policy)
    assert select_best(INFEASIBLE_RUN, objective, final=True).best is not None


# --- the story -----------------------------------------------------------------------

# Epoch 4 has the best accuracy (what metric_for_best_model="accuracy" keeps); epoch 5 catches more
# negative reviews at the same macro F1. The business cares about negatives.
STORY = [
    Candidate("checkpoint-100", 100, {"accuracy": 0.80, "recall_negative": 0.70, "f1_macro": 0.78}),
    Candidate("checkpoint-200", 200, {"accuracy": 0.86, "recall_negative": 0.80, "f1_macro": 0.84}),
    Candidate("checkpoint-300", 300, {"accuracy": 0.89, "recall_negative": 0.84, "f1_macro": 0.87}),
    Candidate("checkpoint-400", 400, {"accuracy": 0.905, "recall_negative": 0.865, "f1_macro": 0.89}),
    Candidate("checkpoint-500", 500, {"accuracy": 0.900, "recall_negative": 0.870, "f1_macro": 0.89}),
]


def test_story_accuracy_keeps_epoch_4():
    assert select_best(STORY, Objective("accuracy")).best_checkpoint == "checkpoint-400"


def test_story_recall_negative_picks_epoch_5():
    selection = select_best(STORY, Objective("recall_negative"))
    assert selection.best_checkpoint == "checkpoint-500"
    assert selection.best.objective_value == 0.870
    assert selection.reason == "checkpoint-500: highest recall_negative (0.87) of 5 checkpoints"


def test_story_equal_f1_broken_by_recall_negative_picks_epoch_5():
    selection = select_best(STORY, Objective("f1_macro", tie_breakers=["recall_negative"]))
    assert selection.best_checkpoint == "checkpoint-500"
    assert "a tie on f1_macro was broken by recall_negative" in selection.reason


def test_story_equal_f1_broken_by_accuracy_keeps_epoch_4():
    selection = select_best(STORY, Objective("f1_macro", tie_breakers=["accuracy"]))
    assert selection.best_checkpoint == "checkpoint-400"
    assert "a tie on f1_macro was broken by accuracy" in selection.reason


# --- the result ----------------------------------------------------------------------------


def test_ranking_is_best_first_with_ranks_one_to_n():
    selection = select_best(list(reversed(STORY)), Objective("recall_negative"))
    assert names(selection) == [
        "checkpoint-500",
        "checkpoint-400",
        "checkpoint-300",
        "checkpoint-200",
        "checkpoint-100",
    ]
    assert [r.rank for r in selection.ranking] == [1, 2, 3, 4, 5]
    assert selection.best == selection.ranking[0]
    assert selection.best.rank == 1


def test_selection_is_frozen_and_keeps_the_objective():
    objective = Objective("recall_negative")
    selection = select_best(STORY, objective)
    assert selection.objective is objective
    with pytest.raises(AttributeError):
        selection.best = None  # type: ignore[misc]


def test_duplicate_checkpoint_names_are_rejected():
    with pytest.raises(ValueError, match="checkpoint names must be unique"):
        select_best([Candidate("checkpoint-100", 100, {}), Candidate("checkpoint-100", 200, {})], Objective("accuracy"))


# --- properties ----------------------------------------------------------------------------

KEYS = ["accuracy", "recall_negative", "precision_negative", "f1_macro", "log_loss"]
LOWER_IS_BETTER = {"log_loss"}  # the reference's own direction table, independent of the library
GRID = [0.0, 0.25, 0.5, 0.75, 1.0]  # few values, so ties and equal bounds are common
# Comparison-based rules only care about order and equality: a small pool with irregular values,
# NaN, inf and None (the key is missing) finds ties and edge cases faster than arbitrary floats.
VALUES = st.sampled_from(GRID + [0.1, 1 / 3, 0.6, 0.9, math.nan, math.inf, None])
OPS = [">=", "<=", ">", "<"]
PROPERTY = settings(max_examples=200, deadline=None)


@st.composite
def candidate_lists(draw, min_size: int = 0, max_size: int = 6) -> list[Candidate]:
    steps = draw(st.lists(st.integers(0, 50), min_size=min_size, max_size=max_size))  # repeated steps allowed
    candidates = []
    for i, step in enumerate(steps):
        metrics = {key: value for key in KEYS if (value := draw(VALUES)) is not None}
        candidates.append(Candidate(f"checkpoint-{step}-{i}", step, metrics))
    return candidates


@st.composite
def constraints(draw, max_size: int = 3) -> list[Constraint]:
    return draw(
        st.lists(
            st.builds(Constraint, st.sampled_from(KEYS), st.sampled_from(OPS), st.sampled_from(GRID + [0.6, 0.9])),
            max_size=max_size,
        )
    )


@st.composite
def objectives(draw, *, with_constraints: bool = True, with_min_delta: bool = True) -> Objective:
    return Objective(
        draw(st.sampled_from(KEYS)),
        constraints=draw(constraints()) if with_constraints else (),
        tie_breakers=draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True)),
        on_infeasible=draw(st.sampled_from(["least_violation", "keep_incumbent", "raise"])),
        min_delta=draw(st.sampled_from([0.0, 0.01, 0.25])) if with_min_delta else 0.0,
        min_delta_mode=draw(st.sampled_from(["absolute", "relative"])),
    )


def outcome(candidates, objective, final):
    try:
        return select_best(candidates, objective, final=final)
    except InfeasibleObjectiveError as error:
        return str(error)


@PROPERTY
@given(candidates=candidate_lists(), objective=objectives(), final=st.booleans(), data=st.data())
def test_property_input_order_never_changes_the_choice_or_the_ranking(candidates, objective, final, data):
    shuffled = data.draw(st.permutations(candidates))
    assert outcome(shuffled, objective, final) == outcome(candidates, objective, final)


@PROPERTY
@given(candidates=candidate_lists(), objective=objectives())
def test_property_feasible_is_never_ranked_below_infeasible(candidates, objective):
    selection = select_best(candidates, objective)
    finite = [r for r in selection.ranking if r.objective_value is not None]
    nan = [r for r in selection.ranking if r.objective_value is None]
    assert list(selection.ranking) == finite + nan  # rule 1: NaN last
    feasibility = [r.feasible for r in finite]
    assert feasibility == sorted(feasibility, reverse=True)  # all feasible ones, then the rest
    if any(feasibility):
        assert selection.best is not None and selection.best.feasible
    assert [r.rank for r in selection.ranking] == list(range(1, len(candidates) + 1))
    assert (selection.best is None) == (not finite)


def _tighten(constraint: Constraint, by: float) -> Constraint:
    bound = constraint.bound + by if constraint.op in (">=", ">") else constraint.bound - by
    return Constraint(constraint.metric, constraint.op, bound)


@PROPERTY
@given(
    candidates=candidate_lists(min_size=1),
    objective=objectives(),
    by=st.lists(st.sampled_from([0.0, 1e-9, 0.1, 0.25, 1.0]), min_size=3, max_size=3),
)
def test_property_tightening_a_bound_never_makes_an_infeasible_checkpoint_feasible(candidates, objective, by):
    tightened = Objective.from_dict(
        {**objective.to_dict(), "constraints": [_tighten(c, d) for c, d in zip(objective.constraints, by)]}
    )
    before = {r.checkpoint: r.feasible for r in select_best(candidates, objective).ranking}
    after = {r.checkpoint: r.feasible for r in select_best(candidates, tightened).ranking}
    for checkpoint, feasible in after.items():
        assert before[checkpoint] or not feasible, checkpoint
    # And constraint by constraint.
    for original, tight in zip(objective.constraints, tightened.constraints):
        for candidate in candidates:
            value = candidate.metrics.get(original.metric)
            if original.violation(value) > 0:
                assert tight.violation(value) > 0


def reference_best(candidates: list[Candidate], objective: Objective) -> str | None:
    """Brute force: the max by (objective value, tie-breakers in order), then the earliest step."""

    def signed(value, greater):
        if value is None or math.isnan(value):
            return -math.inf  # a NaN tie-breaker is worse than any number
        return value if greater else -value

    eligible = [c for c in candidates if not math.isnan(c.metrics.get(objective.metric, math.nan))]
    if not eligible:
        return None

    def key(c):
        return (signed(c.metrics[objective.metric], objective.greater_is_better),) + tuple(
            signed(c.metrics.get(t), t not in LOWER_IS_BETTER) for t in objective.tie_breakers
        )

    top = max(key(c) for c in eligible)
    return min((c for c in eligible if key(c) == top), key=lambda c: (c.global_step, c.checkpoint)).checkpoint


@PROPERTY
@given(candidates=candidate_lists(), objective=objectives(with_constraints=False, with_min_delta=False))
def test_property_without_constraints_best_is_the_brute_force_max(candidates, objective):
    selection = select_best(candidates, objective, final=True)
    assert selection.best_checkpoint == reference_best(candidates, objective)
    # The ranking below the best follows the same order.
    ordered = [r.checkpoint for r in selection.ranking if r.objective_value is not None]
    remaining = [c for c in candidates]
    expected = []
    while True:
        name = reference_best(remaining, objective)
        if name is None:
            break
        expected.append(name)
        remaining = [c for c in remaining if c.checkpoint != name]
    assert ordered == expected
