"""Token classification (issue 11): every key against seqeval, -100 handling, IOBES, bad id2label/labels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

seqeval_metrics = pytest.importorskip("seqeval.metrics")

from trainer_ext.errors import ConfigurationError  # noqa: E402
from trainer_ext.tasks.token import IGNORE_INDEX, NO_TOKEN, TokenClassification  # noqa: E402
from trainer_ext.uncertainty import bootstrap_interval, paired_bootstrap  # noqa: E402

IOB2 = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
IOBES = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-ORG", "I-ORG", "E-ORG", "S-ORG"]


def _pad(sequences):
    width = max(len(s) for s in sequences)
    out = np.full((len(sequences), width), NO_TOKEN, dtype=np.int64)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
    return out


def _reference(names, labels, predictions):
    """seqeval on the tag sequences with the -100 positions removed."""
    y_true, y_pred = [], []
    for true, pred in zip(labels, predictions):
        keep = [j for j, t in enumerate(true) if t != IGNORE_INDEX]
        y_true.append([names[true[j]] for j in keep])
        y_pred.append([names[pred[j]] for j in keep])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = seqeval_metrics.classification_report(y_true, y_pred, output_dict=True)
        accuracy = seqeval_metrics.accuracy_score(y_true, y_pred)
    return report, accuracy


def _check_against_seqeval(names, labels, predictions):
    task = TokenClassification(names)
    got = task.metrics(_pad(labels), _pad(predictions), None)
    report, accuracy = _reference(names, labels, predictions)
    assert got["token_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    for average in ("micro", "macro", "weighted"):
        for field, key in (("precision", "precision"), ("recall", "recall"), ("f1-score", "f1")):
            if average == "weighted" and key != "f1":
                continue
            expected = report[f"{average} avg"][field]
            if np.isnan(expected):  # seqeval's mean of no type; ours is 0.0 (documented)
                expected = 0.0
            assert got[f"{key}_{average}"] == pytest.approx(expected, abs=1e-12), (key, average)
    for entity, slug in zip(task.entity_types, task.type_slugs):
        row = report.get(entity, {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
        assert got[f"precision_{slug}"] == pytest.approx(row["precision"], abs=1e-12)
        assert got[f"recall_{slug}"] == pytest.approx(row["recall"], abs=1e-12)
        assert got[f"f1_{slug}"] == pytest.approx(row["f1-score"], abs=1e-12)
        assert got[f"support_{slug}"] == row["support"]
    return task, got


def _sentences(num_tags, with_ignored):
    tag = st.integers(0, num_tags - 1)
    token = st.one_of(tag, st.just(IGNORE_INDEX)) if with_ignored else tag

    @st.composite
    def sentences(draw):
        n = draw(st.integers(1, 8))
        lengths = [draw(st.integers(1, 12)) for _ in range(n)]
        labels = [[draw(token) for _ in range(k)] for k in lengths]
        for s in labels:  # at least one labelled token per sentence
            if all(t == IGNORE_INDEX for t in s):
                s[0] = 0
        predictions = [[draw(tag) for _ in s] for s in labels]
        return labels, predictions

    return sentences()


@settings(max_examples=150, deadline=None)
@given(_sentences(len(IOB2), with_ignored=True))
def test_every_key_equals_seqeval_on_random_iob2(data):
    _check_against_seqeval(IOB2, *data)


@settings(max_examples=150, deadline=None)
@given(_sentences(len(IOBES), with_ignored=False))
def test_every_key_equals_seqeval_on_random_iobes(data):
    task, _ = _check_against_seqeval(IOBES, *data)
    assert task.scheme == "IOBES"


def test_ignored_positions_are_removed_not_scored():
    # B-PER [-100] I-PER: one PER entity over the two labelled tokens, whatever is predicted at -100.
    labels = [[1, IGNORE_INDEX, 2, 0]]
    predictions = [[1, 3, 2, 0]]  # B-LOC at the ignored position would split the entity if it counted
    task, got = _check_against_seqeval(IOB2, labels, predictions)
    assert got["recall_per"] == 1.0 and got["precision_per"] == 1.0 and got["token_accuracy"] == 1.0
    assert got["support_loc"] == 0.0 and got["precision_loc"] == 0.0


def test_keys_and_statistics_layout():
    task = TokenClassification(IOB2)
    assert task.entity_types == ["LOC", "MISC", "PER"]
    assert "recall_per" in task.metric_keys() and "token_accuracy" in task.metric_keys()
    stats = task.statistics(_pad([[1, 2, 0, 3]]), _pad([[1, 2, 0, 0]]))
    assert stats.tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0], [3, 1, 0]]


def test_bootstrap_resamples_sentences():
    task = TokenClassification(IOB2)
    rng = np.random.default_rng(0)
    labels = [list(rng.integers(0, 7, 6)) for _ in range(40)]
    predictions = [[t if rng.random() < 0.7 else int(rng.integers(0, 7)) for t in s] for s in labels]
    labels, predictions = _pad(labels), _pad(predictions)
    per_sentence = task.resampling_statistics(labels, predictions)
    assert per_sentence.shape == (40, 4, 3)
    draws = task.resample(per_sentence, resamples=200, rng=np.random.default_rng(1))
    # every resample holds 40 sentences' tokens in some combination; the token totals vary across resamples
    assert draws.shape == (200, 4, 3) and len({int(d[3].sum()) for d in draws}) == 1  # 6 tokens each
    assert len({int(d[3, 0]) for d in draws}) > 1
    interval = bootstrap_interval(per_sentence, "recall_per", task, resamples=300, seed=0)
    point = task.metrics(labels, predictions, None)["recall_per"]
    assert interval.value == pytest.approx(point) and interval.low <= point <= interval.high
    same = paired_bootstrap(labels, predictions, predictions, "f1_micro", task, greater_is_better=True, resamples=100)
    assert same.difference == 0.0 and same.low == 0.0 and same.high == 0.0


@pytest.mark.parametrize(
    "names",
    [["LABEL_0", "LABEL_1", "LABEL_2"], ["O", "PER", "LOC"], ["O", "B_PER", "I_PER"], ["B-PER", "I-PER"], ["O", "X-PER"]],
)
def test_bad_id2label_is_refused_and_shown(names):
    with pytest.raises(ConfigurationError, match="id2label") as error:
        TokenClassification(names)
    assert str(names) in str(error.value)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [([3, 1], r"labels\[0\] is 3"), ([[0, 1], [0, 9]], r"labels\[1\]\[1\] is 9"), ([[0], []], r"labels\[1\] is empty"),
     ([[IGNORE_INDEX, IGNORE_INDEX]], "every label is -100")],
)
def test_bad_held_out_labels_name_the_argument(raw, shown):
    with pytest.raises(ConfigurationError, match=shown) as error:
        TokenClassification(IOB2).read_labels(raw, argument="eval_dataset")
    assert str(error.value).startswith("eval_dataset:") and "one label per token" in str(error.value)


def test_labels_that_do_not_match_input_ids_are_refused():
    task = TokenClassification(IOB2)
    labels = task.read_labels([[IGNORE_INDEX, 1, IGNORE_INDEX]], argument="eval_dataset")
    with pytest.raises(ConfigurationError, match=r"labels\[0\] has 3 entries but input_ids\[0\] has 4 tokens"):
        task.check_features(labels, [{"input_ids": [5, 6, 7, 8]}], argument="eval_dataset")
    task.check_features(labels, [{"input_ids": [5, 6, 7]}], argument="eval_dataset")


def test_pure_module_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, trainer_ext.tasks.token; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
