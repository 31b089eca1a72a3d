"""Real Trainer runs on a tiny Llama classifier: the business objectives of issue 4 inside training.

Every run trains the same model (seed 0) on the same reviews for 20 steps and saves every 5 steps, so
each run has the same four checkpoints: training is deterministic and the callback draws no random
numbers, and only the choice among them differs. The first checkpoint calls almost every review
POSITIVE; later ones catch more NEGATIVE reviews, some at a cost in precision, so objectives disagree.

Scenario values (a constraint bound, min_delta, a tiny held-out set) are derived from the records of an
unconstrained run, and each test first asserts that its scenario really happened (the constraint
excludes the unconstrained best, a later checkpoint improves by less than min_delta, ...), so no test
passes because the checkpoints happened to agree. Every expected value is recomputed from the files on
disk (records, ``checkpoint_scores*.npz``, ``config.json``) with scikit-learn or by hand.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, precision_recall_curve, recall_score
from synthetic_reviews import keyword_reviews, tiny_llama_classifier, tokenize_reviews, train_tokenizer
from transformers import Trainer, TrainingArguments

from trainer_ext import (
    BestCheckpointCallback,
    Candidate,
    Constraint,
    InfeasibleObjectiveError,
    Metric,
    Objective,
    TrainerExtWarning,
    apply_threshold,
    select_best,
)
from trainer_ext.records import load_record
from trainer_ext.uncertainty import bootstrap_interval

# 160 training reviews at batch 16: 10 steps per epoch; 2 epochs, a save every 5 steps.
CHECKPOINTS = ["checkpoint-5", "checkpoint-10", "checkpoint-15", "checkpoint-20"]
SEEDED = {"bootstrap_resamples": 500, "seed": 3}  # the uncertainty settings under test
COST = [[0, 1], [50, 0]]  # rows true class, columns predicted: a POSITIVE called NEGATIVE costs 50
PRIOR = [0.995, 0.005]


# ---- runs ------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished (or failed) training run and what it left on disk."""

    out: Path
    trainer: Trainer
    callback: BestCheckpointCallback
    caught: list = field(default_factory=list)  # warnings
    error: BaseException | None = None

    @property
    def board(self) -> dict:
        return json.loads((self.out / "checkpoint_leaderboard.json").read_text())

    @property
    def best(self) -> str:
        return self.board["best_checkpoint"]

    def records(self) -> dict:
        """Checkpoint records still on disk, in step order."""
        return {name: load_record(self.out / name) for name in CHECKPOINTS if (self.out / name).is_dir()}

    def scores(self, checkpoint: str, filename: str = "checkpoint_scores.npz") -> dict[str, np.ndarray]:
        with np.load(self.out / checkpoint / filename) as arrays:
            return {k: arrays[k] for k in arrays.files}

    def trainer_warnings(self) -> list[str]:
        return [str(w.message) for w in self.caught if issubclass(w.category, TrainerExtWarning)]


def _args(out: Path, **overrides) -> TrainingArguments:
    base = dict(
        output_dir=str(out),
        num_train_epochs=2,
        save_strategy="steps",
        save_steps=5,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        learning_rate=3e-3,
        eval_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        logging_steps=100,
        disable_tqdm=True,
    )
    base.update(overrides)
    return TrainingArguments(**base)


def _run(data, out: Path, objective, *, eval_dataset=None, expect_error=None, args=None, **cb_kwargs) -> Run:
    callback = BestCheckpointCallback(data["holdout"] if eval_dataset is None else eval_dataset, objective, **cb_kwargs)
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0),
        args=_args(out, **(args or {})),
        train_dataset=data["train"],
        processing_class=data["tokenizer"],
        callbacks=[callback],
    )
    run = Run(out, trainer, callback)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrainerExtWarning)
        if expect_error is None:
            trainer.train()
        else:
            with pytest.raises(expect_error) as info:
                trainer.train()
            run.error = info.value
    run.caught = list(caught)
    return run


def _values(run: Run, key: str) -> dict[str, float]:
    return {name: record.metrics[key] for name, record in run.records().items()}


def _argbest(values: dict[str, float], *, greater: bool = True) -> str:
    """The best checkpoint by one value; exact ties go to the earlier checkpoint (dicts are in step order)."""
    sign = 1.0 if greater else -1.0
    return max(values, key=lambda name: (sign * values[name], -CHECKPOINTS.index(name)))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A model of 20 thousand parameters gains nothing from intra-op threads, and on a busy 2-core machine
    two threads made each run 2 to 10 times slower (they wait on each other). Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data():
    train_rows = keyword_reviews(160, seed=1)
    eval_rows = keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    return {
        "tokenizer": tokenizer,
        "train": tokenize_reviews(train_rows, tokenizer),
        "holdout": tokenize_reviews(eval_rows, tokenizer),
    }


@pytest.fixture(scope="module")
def plain(data, tmp_path_factory):
    """No constraint: the reference the scenarios are derived from."""
    return _run(data, tmp_path_factory.mktemp("plain"), Objective("recall_negative", **SEEDED))


# ---- 1. constraints: feasible checkpoints first; on_infeasible ---------------------------------------


@pytest.fixture(scope="module")
def constrained(data, plain, tmp_path_factory):
    """A precision bound that the unconstrained best misses and some other checkpoint meets."""
    precision = _values(plain, "precision_negative")
    above = sorted(p for p in precision.values() if p > precision[plain.best])
    assert above, f"scenario: some checkpoint must be more precise than the unconstrained best; got {precision}"
    bound = round((precision[plain.best] + above[0]) / 2, 4)
    objective = Objective("recall_negative", constraints=[f"precision_negative >= {bound}"], **SEEDED)
    return _run(data, tmp_path_factory.mktemp("constrained"), objective), bound


def test_constraint_puts_feasible_checkpoints_first(plain, constrained):
    run, bound = constrained
    constraint = str(Constraint.parse(f"precision_negative >= {bound}"))
    records = run.records()
    assert list(records) == CHECKPOINTS
    for name, record in records.items():
        raw = json.loads((run.out / name / "checkpoint_metrics.json").read_text())
        assert {"feasible", "violations"} <= set(raw)
        precision = record.metrics["precision_negative"]
        assert record.feasible == (precision >= bound)
        expected_miss = 0.0 if precision >= bound else (bound - precision) / bound
        assert record.violations == {constraint: pytest.approx(expected_miss, abs=1e-12)}
    feasible = {name: r.metrics["recall_negative"] for name, r in records.items() if r.feasible}
    assert 0 < len(feasible) < len(records), "scenario: some checkpoints feasible, some not"

    # the unconstrained best is infeasible; the choice is the highest recall among the feasible ones
    assert not records[plain.best].feasible
    assert run.best == _argbest(feasible) != plain.best
    assert records[run.best].feasible
    assert records[plain.best].metrics["recall_negative"] > records[run.best].metrics["recall_negative"]
    assert run.trainer.state.best_model_checkpoint == str(run.out / run.best)
    assert "meeting precision_negative >=" in run.board["reason"]
    for entry in run.board["entries"]:
        assert entry["feasible"] == records[entry["checkpoint"]].feasible
        assert entry["violations"] == pytest.approx(records[entry["checkpoint"]].violations)
    # and the same choice re-ranked from the records alone
    candidates = [Candidate(name, r.global_step, r.metrics) for name, r in records.items()]
    assert select_best(candidates, run.callback.objective).best_checkpoint == run.best


def _unreachable(policy: str) -> Objective:
    return Objective("recall_negative", constraints=["accuracy >= 1.01"], on_infeasible=policy)  # bounds > 1 allowed


def test_on_infeasible_least_violation_picks_the_closest(data, tmp_path):
    run = _run(data, tmp_path, _unreachable("least_violation"))
    records = run.records()
    assert not any(r.feasible for r in records.values())
    accuracy, recall = _values(run, "accuracy"), _values(run, "recall_negative")
    assert _argbest(accuracy) != _argbest(recall), "scenario: the closest to the bound is not the best value"
    assert run.best == _argbest(accuracy)  # smallest violation (1.01 - accuracy) / 1.01 wins over recall
    assert records[run.best].violations["accuracy >= 1.01"] == pytest.approx((1.01 - accuracy[run.best]) / 1.01)
    assert "chosen by least_violation" in run.board["reason"]
    assert any("no checkpoint met" in m and run.best in m for m in run.trainer_warnings())


def test_on_infeasible_keep_incumbent_keeps_the_first(data, tmp_path):
    run = _run(data, tmp_path, _unreachable("keep_incumbent"))
    recall = _values(run, "recall_negative")
    assert all(recall[c] > recall[CHECKPOINTS[0]] for c in CHECKPOINTS[1:]), "scenario: every later one is better"
    assert run.best == CHECKPOINTS[0]
    assert run.trainer.state.best_model_checkpoint == str(tmp_path / CHECKPOINTS[0])
    assert "chosen by keep_incumbent" in run.board["reason"]
    assert any("no checkpoint met" in m for m in run.trainer_warnings())


def test_on_infeasible_raise_raises_at_the_end_of_training(data, tmp_path):
    run = _run(data, tmp_path, _unreachable("raise"), expect_error=InfeasibleObjectiveError)
    assert "accuracy >= 1.01" in str(run.error) and "recall_negative" in str(run.error)
    # not at the first infeasible save: training ran to the end and every checkpoint was scored
    assert run.trainer.state.global_step == 20
    assert list(run.records()) == CHECKPOINTS
    assert not any(r.feasible for r in run.records().values())


# ---- 2. min_delta --------------------------------------------------------------------------------------


def _walk(values: dict[str, float], min_delta: float) -> str:
    """Reference: a later checkpoint (higher is better) takes over only by more than min_delta."""
    names = list(values)
    best = names[0]
    for name in names[1:]:
        if values[name] - values[best] > min_delta:
            best = name
    return best


@pytest.fixture(scope="module")
def min_delta_run(data, plain, tmp_path_factory):
    """min_delta just above the gain by which the unconstrained best took over."""
    recall = _values(plain, "recall_negative")
    earlier = [v for name, v in recall.items() if CHECKPOINTS.index(name) < CHECKPOINTS.index(plain.best)]
    assert earlier, "scenario: the unconstrained best must not be the first checkpoint"
    min_delta = round(recall[plain.best] - max(earlier) + 0.01, 4)
    return _run(data, tmp_path_factory.mktemp("min_delta"), Objective("recall_negative", min_delta=min_delta, **SEEDED))


def test_min_delta_improvement_below_it_does_not_take_over(plain, min_delta_run):
    run = min_delta_run
    min_delta = run.callback.objective.min_delta
    recall = _values(run, "recall_negative")
    assert recall == _values(plain, "recall_negative")  # the same checkpoints as the plain run
    later = [c for c in CHECKPOINTS[CHECKPOINTS.index(run.best) + 1 :] if 0 < recall[c] - recall[run.best] <= min_delta]
    assert later, f"scenario: a later checkpoint improves on the best by less than {min_delta}: {recall}"
    assert plain.best in later  # ... and it is the one chosen without min_delta
    assert run.best == _walk(recall, min_delta) != plain.best
    assert run.board["entries"][0]["checkpoint"] == run.best
    assert "must improve by more than" in run.board["reason"]
    assert run.trainer.state.best_global_step == int(run.best.split("-")[1])


# ---- 3. costs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cost_run(data, tmp_path_factory):
    return _run(data, tmp_path_factory.mktemp("cost"), Objective("expected_cost", cost_matrix=COST))


@pytest.fixture(scope="module")
def prior_run(data, tmp_path_factory):
    objective = Objective("expected_cost", cost_matrix=COST, class_prior=PRIOR)
    return _run(data, tmp_path_factory.mktemp("prior"), objective)


def _saved_confusion_matrix(run: Run, checkpoint: str) -> np.ndarray:
    scores = run.scores(checkpoint)
    return confusion_matrix(scores["labels"], scores["predictions"], labels=[0, 1])


def test_expected_cost_is_mean_cost_per_example(cost_run):
    cost = np.asarray(COST, dtype=float)
    expected = {}
    for name, record in cost_run.records().items():
        cm = _saved_confusion_matrix(cost_run, name)
        assert cm.tolist() == record.confusion_matrix
        expected[name] = float((cm * cost).sum() / cm.sum())
        assert record.metrics["expected_cost"] == pytest.approx(expected[name], abs=1e-12)
        assert record.objective_value == record.metrics["expected_cost"]
    assert cost_run.best == _argbest(expected, greater=False)
    # a missed POSITIVE costs 50: the cheapest checkpoint is not the most accurate one
    assert cost_run.best != _argbest(_values(cost_run, "accuracy"))


def test_expected_cost_with_class_prior_reweights_each_class(cost_run, prior_run):
    cost = np.asarray(COST, dtype=float)
    expected = {}
    for name, record in prior_run.records().items():
        cm = _saved_confusion_matrix(prior_run, name)
        support = cm.sum(axis=1)
        expected[name] = float(
            sum(PRIOR[i] * sum(cm[i, j] / support[i] * cost[i, j] for j in range(2)) for i in range(2))
        )
        assert record.metrics["expected_cost"] == pytest.approx(expected[name], abs=1e-12)
    assert prior_run.best == _argbest(expected, greater=False)
    assert prior_run.best != cost_run.best  # production's class mix changes the choice


# ---- 4. tuned decision thresholds ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def threshold_run(data, tmp_path_factory):
    return _run(data, tmp_path_factory.mktemp("threshold"), Objective("f1_negative", tune_threshold=True))


def test_tuned_threshold_is_recorded_applied_and_optimal(threshold_run):
    run = threshold_run
    thresholds = {}
    for name, record in run.records().items():
        t = record.decision_threshold
        assert isinstance(t, float) and 0.0 < t < 1.0
        thresholds[name] = t
        scores = run.scores(name)
        y, p, pred = scores["labels"], scores["probabilities"], scores["predictions"]
        assert np.array_equal(pred, (p[:, 1] >= t).astype(np.int64))
        assert np.array_equal(apply_threshold(p, t), pred)
        # the record's metrics are those at the threshold ...
        cm = confusion_matrix(y, pred, labels=[0, 1])
        assert record.confusion_matrix == cm.tolist()
        # ... and its f1_negative is the best F1 of NEGATIVE over every threshold. Predicting 1 iff
        # p1 >= t means NEGATIVE iff -p1 > -t: -p1 is the NEGATIVE score with the same cuts (p0 = 1 - p1
        # only up to float32 rounding, which could merge or split ties).
        precision, recall, _ = precision_recall_curve(y == 0, -p[:, 1].astype(np.float64))
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0)
        assert record.metrics["f1_negative"] == pytest.approx(f1.max(), abs=1e-12)
        assert record.objective_value == record.metrics["f1_negative"]
        config = json.loads((run.out / name / "config.json").read_text())
        assert config["decision_threshold"] == {"class_id": 1, "threshold": t}
    assert len(set(thresholds.values())) > 1, "scenario: checkpoints get different thresholds"
    assert any(abs(t - 0.5) > 1e-3 for t in thresholds.values()), "scenario: a threshold other than argmax's"
    assert run.best == _argbest(_values(run, "f1_negative"))
    # at the end the model holds the best checkpoint's weights and its threshold
    assert run.trainer.model.config.decision_threshold == {"class_id": 1, "threshold": thresholds[run.best]}
    entry = run.board["entries"][0]
    assert entry["checkpoint"] == run.best and entry["decision_threshold"] == thresholds[run.best]


# ---- 5. uncertainty -----------------------------------------------------------------------------------------


def test_bootstrap_interval_per_checkpoint_is_seeded_and_reproducible(plain, constrained, min_delta_run):
    widths = []
    for name, record in plain.records().items():
        interval = record.objective_interval
        assert interval["low"] <= interval["value"] <= interval["high"]
        assert interval["value"] == record.objective_value == record.metrics["recall_negative"]
        assert (interval["resamples"], interval["seed"], interval["confidence"]) == (500, 3, 0.95)
        widths.append(interval["high"] - interval["low"])
        # other runs with the same seed, key and checkpoints: identical intervals
        assert constrained[0].records()[name].objective_interval == interval
        assert min_delta_run.records()[name].objective_interval == interval
    assert max(widths) > 0.05  # 30 NEGATIVE reviews: the intervals are not degenerate
    # the seed reaches the bootstrap: the same counts resampled with seed 3 give the recorded interval
    cm = np.asarray(plain.records()[plain.best].confusion_matrix)
    recorded = plain.records()[plain.best].objective_interval
    assert bootstrap_interval(cm, "recall_negative", ["negative", "positive"], resamples=500, seed=3).to_dict() == recorded
    other_seed = bootstrap_interval(cm, "recall_negative", ["negative", "positive"], resamples=500, seed=4)
    assert (other_seed.low, other_seed.high) != (recorded["low"], recorded["high"])
    entries = plain.board["entries"]
    assert [e["interval"] for e in entries] == [plain.records()[e["checkpoint"]].objective_interval for e in entries]


def test_leaderboard_compares_best_with_runner_up(plain):
    board = plain.board
    best, runner_up = board["entries"][0], board["entries"][1]
    comparison = board["comparison"]
    assert (comparison["first"], comparison["second"]) == (best["checkpoint"], runner_up["checkpoint"])
    assert comparison["difference"] == pytest.approx(best["objective_value"] - runner_up["objective_value"], abs=1e-12)
    assert comparison["difference"] > 0
    assert comparison["low"] <= comparison["difference"] <= comparison["high"]
    assert 0.5 < comparison["win_share"] <= 1.0
    assert (comparison["resamples"], comparison["seed"]) == (500, 3)


@pytest.fixture(scope="module")
def significance_run(data, plain, tmp_path_factory):
    """Six held-out reviews on which the first checkpoint is wrong once and every later one never."""
    first, later = CHECKPOINTS[0], CHECKPOINTS[1:]
    scores = {name: plain.scores(name) for name in CHECKPOINTS}
    labels = scores[first]["labels"]
    right = {name: s["predictions"] == labels for name, s in scores.items()}
    # not at 0.5 (the first checkpoint is barely trained: all its scores are within 0.08 of it), so that
    # another batch composition (float noise ~1e-7) cannot flip a prediction
    clear = np.all([np.abs(s["probabilities"][:, 1] - 0.5) > 0.005 for s in scores.values()], axis=0)
    all_right = np.flatnonzero(clear & np.all([right[c] for c in CHECKPOINTS], axis=0))
    only_first_wrong = np.flatnonzero(clear & ~right[first] & np.all([right[c] for c in later], axis=0))
    assert len(all_right) >= 5 and len(only_first_wrong) >= 1, "scenario: no such reviews in the held-out set"
    rows = [int(i) for i in all_right[:5]] + [int(only_first_wrong[0])]
    objective = Objective("accuracy", require_significance=True, **SEEDED)
    return _run(data, tmp_path_factory.mktemp("significance"), objective, eval_dataset=data["holdout"].select(rows))


def test_require_significance_keeps_an_earlier_best(significance_run):
    run = significance_run
    accuracy = _values(run, "accuracy")
    correct = {name: np.trace(np.asarray(r.confusion_matrix)) for name, r in run.records().items()}
    assert correct == {CHECKPOINTS[0]: 5, **{c: 6 for c in CHECKPOINTS[1:]}}, "scenario: better by one review"
    assert run.best == CHECKPOINTS[0]
    reason = run.board["reason"]
    assert "not significantly" in reason and CHECKPOINTS[1] in reason
    # without require_significance the next checkpoint would have won
    candidates = [Candidate(name, r.global_step, r.metrics) for name, r in run.records().items()]
    assert select_best(candidates, Objective("accuracy")).best_checkpoint == CHECKPOINTS[1]
    assert accuracy[CHECKPOINTS[1]] > accuracy[run.best]
    comparison = run.board["comparison"]  # the kept best is worse than the runner-up on these six reviews
    assert comparison["first"] == run.best and comparison["difference"] < 0 and comparison["win_share"] == 0.0


# ---- 6. top-k survives rotation -----------------------------------------------------------------------------


def test_keep_top_k_protects_the_k_best_from_rotation(data, tmp_path):
    run = _run(
        data, tmp_path, Objective("precision_negative"), keep_top_k=2, args={"save_total_limit": 1}
    )
    board = run.board
    assert len(board["entries"]) == 4  # every save scored, also those rotated away
    ranking = [e["checkpoint"] for e in board["entries"]]
    top2, newest = ranking[:2], CHECKPOINTS[-1]
    assert newest not in top2, "scenario: the newest checkpoint is not among the two best"
    precision = {e["checkpoint"]: e["metrics"]["precision_negative"] for e in board["entries"]}
    assert set(top2) == set(sorted(precision, key=lambda c: (-precision[c], CHECKPOINTS.index(c)))[:2])
    on_disk = {p.name for p in tmp_path.glob("checkpoint-*")}
    assert on_disk == set(top2) | {newest}  # the Trainer alone would keep only the newest and the best
    assert board["best_checkpoint"] == top2[0]
    for entry in board["entries"]:
        assert entry["protected"] == (entry["checkpoint"] in top2)
        assert entry["exists"] == (entry["checkpoint"] in on_disk)
    assert run.trainer.args.save_total_limit == 1  # the user's value is back after training


# ---- 7. several held-out sets ------------------------------------------------------------------------------


SETS = ("reviews_2024", "reviews_2025")


def _two_sets(data) -> dict:
    holdout = data["holdout"]
    return {"reviews_2024": holdout.select(range(30)), "reviews_2025": holdout.select(range(30, len(holdout)))}


@pytest.fixture(scope="module")
def sets_by_2025(data, tmp_path_factory):
    """The objective names one set's key; unprefixed keys are the mean over the sets (the default)."""
    objective = Objective("reviews_2025_precision_negative")
    return _run(data, tmp_path_factory.mktemp("sets_by_2025"), objective, eval_dataset=_two_sets(data))


@pytest.fixture(scope="module")
def sets_worst(data, tmp_path_factory):
    objective = Objective("recall_negative", across_sets="worst")
    return _run(data, tmp_path_factory.mktemp("sets_worst"), objective, eval_dataset=_two_sets(data))


def test_several_sets_are_logged_recorded_and_averaged(data, sets_by_2025):
    run = sets_by_2025
    sets = _two_sets(data)
    logged = [h for h in run.trainer.state.log_history if "holdout_recall_negative" in h]
    assert [h["step"] for h in logged] == [5, 10, 15, 20]
    for h in logged:
        assert {f"holdout_{s}_recall_negative" for s in SETS} <= set(h)
    for name, record in run.records().items():
        assert not (run.out / name / "checkpoint_scores.npz").exists()  # one file per set instead
        per_set = []
        for s in SETS:
            scores = run.scores(name, f"checkpoint_scores.{s}.npz")
            assert np.array_equal(scores["labels"], np.asarray(sets[s]["labels"]))
            expected = recall_score(scores["labels"], scores["predictions"], pos_label=0, zero_division=0.0)
            assert record.metrics[f"{s}_recall_negative"] == pytest.approx(expected, abs=1e-12)
            per_set.append(expected)
        assert record.metrics["recall_negative"] == pytest.approx(np.mean(per_set), abs=1e-12)
        assert record.metrics["support_negative"] == sum(record.metrics[f"{s}_support_negative"] for s in SETS)


def test_several_sets_worst_takes_the_minimum(sets_by_2025, sets_worst):
    worst, mean = {}, _values(sets_by_2025, "recall_negative")
    for name, record in sets_worst.records().items():
        per_set = [record.metrics[f"{s}_recall_negative"] for s in SETS]
        assert per_set == [sets_by_2025.records()[name].metrics[f"{s}_recall_negative"] for s in SETS]
        assert record.metrics["recall_negative"] == min(per_set)
        worst[name] = min(per_set)
    assert worst != mean, "scenario: the sets disagree somewhere"
    assert sets_worst.best == _argbest(worst)


def test_objective_naming_one_set_picks_by_that_set(sets_by_2025):
    run = sets_by_2025
    by_2025 = _values(run, "reviews_2025_precision_negative")
    assert run.best == _argbest(by_2025)
    # scenario: neither the other set nor the combined value would pick it
    assert _argbest(_values(run, "reviews_2024_precision_negative")) != run.best
    assert _argbest(_values(run, "precision_negative")) != run.best
    assert run.board["entries"][0]["objective_value"] == by_2025[run.best]
    for name, record in run.records().items():
        assert record.objective_value == by_2025[name]
        assert record.objective_interval["value"] == by_2025[name]  # bootstrapped on that set alone


# ---- 8. custom metrics and evaluate modules ----------------------------------------------------------------


_LOCAL_METRIC = '''
import datasets
import evaluate


class ReviewRates(evaluate.Metric):
    """A local metric script (no hub download): share of class 1 found, share of errors."""

    def _info(self):
        return evaluate.MetricInfo(
            description="positive_hit_rate: share of class-1 examples predicted 1; error_rate: share wrong",
            citation="",
            inputs_description="predictions, references: class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        pairs = list(zip(predictions, references))
        positives = sum(1 for _, r in pairs if r == 1)
        hits = sum(1 for p, r in pairs if r == 1 and p == 1)
        return {
            "positive_hit_rate": hits / positives if positives else 0.0,
            "error_rate": sum(1 for p, r in pairs if p != r) / len(pairs),
        }
'''


@pytest.fixture(scope="module")
def local_module(tmp_path_factory):
    import evaluate

    path = tmp_path_factory.mktemp("metric_script") / "review_rates.py"
    path.write_text(_LOCAL_METRIC)
    return evaluate.load(str(path))


NEG_RATE = Metric(
    "neg_rate",  # share of all reviews that are NEGATIVE and flagged
    lambda m: m["recall_negative"] * m["support_negative"] / (m["support_negative"] + m["support_positive"]),
    greater_is_better=True,
)
BRIER = Metric("brier", lambda y, p, pred: float(((p[:, 1] - y) ** 2).mean()), greater_is_better=False, inputs="predictions")


@pytest.fixture(scope="module")
def custom_run(data, local_module, tmp_path_factory):
    return _run(
        data, tmp_path_factory.mktemp("custom"), Objective("neg_rate", greater_is_better=True),
        custom_metrics=[NEG_RATE, BRIER], evaluate_modules=[local_module],
    )


def test_custom_metrics_are_computed_and_drive_the_choice(custom_run):
    run = custom_run
    for name, record in run.records().items():
        scores = run.scores(name)
        y, p, pred = scores["labels"], scores["probabilities"], scores["predictions"]
        assert record.metrics["neg_rate"] == pytest.approx(np.mean((y == 0) & (pred == 0)), abs=1e-12)
        assert record.metrics["brier"] == pytest.approx(np.mean((p[:, 1] - y) ** 2), abs=1e-6)  # saved as float32
        assert record.metrics["positive_hit_rate"] == pytest.approx(np.mean(pred[y == 1] == 1), abs=1e-12)
        assert record.objective_value == record.metrics["neg_rate"]
    logged = [h for h in run.trainer.state.log_history if "holdout_neg_rate" in h]
    assert len(logged) == 4 and all("holdout_brier" in h and "holdout_positive_hit_rate" in h for h in logged)
    neg_rate = _values(run, "neg_rate")
    assert run.best == _argbest(neg_rate)
    assert run.best != _argbest(_values(run, "accuracy")), "scenario: the custom objective is not accuracy"


def test_evaluate_module_output_is_usable_as_objective(data, local_module, custom_run, tmp_path):
    run = _run(
        data, tmp_path, Objective("positive_hit_rate", greater_is_better=True), evaluate_modules=[local_module]
    )
    hit_rate = _values(run, "positive_hit_rate")
    assert hit_rate == _values(custom_run, "positive_hit_rate")
    assert hit_rate == pytest.approx(_values(run, "recall_positive"), abs=1e-12)  # what the module computes
    assert run.best == _argbest(hit_rate) != custom_run.best
    assert run.board["objective"]["metric"] == "positive_hit_rate"


def test_worst_of_a_lower_is_better_module_key_is_the_highest(data, local_module, tmp_path):
    objective = Objective("error_rate", greater_is_better=False, across_sets="worst")
    run = _run(data, tmp_path, objective, eval_dataset=_two_sets(data), evaluate_modules=[local_module])
    per_set = {name: [r.metrics[f"{s}_error_rate"] for s in SETS] for name, r in run.records().items()}
    assert any(a != b for a, b in per_set.values()), "scenario: the sets' error rates differ"
    for name, record in run.records().items():
        assert per_set[name] == pytest.approx([1 - record.metrics[f"{s}_accuracy"] for s in SETS], abs=1e-12)
        assert record.metrics["error_rate"] == max(per_set[name])  # the worst set is the one with more errors


def test_require_significance_refuses_a_key_it_cannot_resample(data, tmp_path):
    """A custom key cannot be resampled from confusion counts: refused before the first step."""
    from trainer_ext import ConfigurationError, Metric

    acc2 = Metric("acc2", lambda m: m["accuracy"], greater_is_better=True)
    callback = BestCheckpointCallback(
        data["holdout"], Objective("acc2", greater_is_better=True, require_significance=True), custom_metrics=[acc2]
    )
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0),
        args=TrainingArguments(str(tmp_path), report_to=[], use_cpu=True, save_strategy="epoch"),
        train_dataset=data["train"], processing_class=data["tokenizer"], callbacks=[callback],
    )
    with pytest.raises(ConfigurationError, match="require_significance: the paired bootstrap resamples"):
        trainer.train()
    assert trainer.state.global_step == 0

