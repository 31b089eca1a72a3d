"""LabelWords (issue 11): each class's score equals a by-hand teacher-forced forward of prompt + label ids.

The reference: for every example and class, one separate, unpadded forward of the prompt's ids followed
by the separately tokenized label ids, and the sum of ``torch.log_softmax`` at the label positions.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from scipy.special import softmax  # noqa: E402

from route_reviews_with_llm import LABEL_WORDS, label_words_tokenizer, prompt_of, tiny_causal_llama  # noqa: E402
from synthetic_reviews import make_reviews  # noqa: E402
from trainer_ext import LabelWords  # noqa: E402
from trainer_ext.errors import ConfigurationError  # noqa: E402
from trainer_ext.evaluation import default_collator, evaluate_model, prepare_held_out, probe_model  # noqa: E402

MULTI_TOKEN = {"NEGATIVE": " negative", "POSITIVE": " positive positive", "MIXED": " negative positive negative"}


@pytest.fixture(scope="module")
def reviews():
    return make_reviews(24, seed=3)


@pytest.fixture(scope="module")
def lw_tokenizer(reviews):
    return label_words_tokenizer(make_reviews(200, seed=0))


@pytest.fixture(scope="module")
def causal(lw_tokenizer):
    return tiny_causal_llama(lw_tokenizer, seed=1, num_layers=2).eval()


def _held_out(reviews, classes):
    return [{"prompt": prompt_of(r["text"]), "label": classes[i % len(classes)]} for i, r in enumerate(reviews)]


def _by_hand(model, tokenizer, prompt, label_text):
    ids = tokenizer(prompt)["input_ids"]
    if ids[-1] == tokenizer.eos_token_id:  # this tokenizer appends [EOS]; the answer follows the text
        ids = ids[:-1]
    answer = tokenizer(label_text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + answer])).logits[0]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(log_probs[len(ids) - 1 + j, token]) for j, token in enumerate(answer))


def _task_scores(model, tokenizer, rows, label_words, padding_side):
    task = LabelWords(label_words)
    tokenizer.padding_side = padding_side
    try:
        held_out = prepare_held_out(rows, name="h", task=task, tokenizer=tokenizer, model=model)
    finally:
        tokenizer.padding_side = "right"
    batch = task.collate(held_out.features)
    with torch.no_grad():
        return task.forward(model, batch).double().numpy(), batch


@pytest.mark.parametrize("label_words", [LABEL_WORDS, MULTI_TOKEN], ids=["one_token", "multi_token"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_scores_equal_a_separate_forward_of_prompt_plus_label(reviews, lw_tokenizer, causal, label_words, padding_side):
    rows = _held_out(reviews[:8], list(label_words))
    scores, batch = _task_scores(causal, lw_tokenizer, rows, label_words, padding_side)
    assert int((batch["attention_mask"] == 0).sum()) > 0  # prompts of different lengths: padding exercised
    expected = np.array([[_by_hand(causal, lw_tokenizer, r["prompt"], text) for text in label_words.values()] for r in rows])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_label_tokens_are_as_many_as_expected(lw_tokenizer):
    task = LabelWords(MULTI_TOKEN)
    task.bind_tokenizer(lw_tokenizer)
    assert [len(t) for t in task.label_token_ids] == [1, 2, 3]
    assert len(LabelWords(LABEL_WORDS).name) and LabelWords(LABEL_WORDS).name == "label_words"


def test_evaluation_gives_softmax_of_the_sums_and_single_label_keys(reviews, lw_tokenizer, causal):
    task = LabelWords(MULTI_TOKEN)
    rows = _held_out(reviews, list(MULTI_TOKEN))
    held_out = prepare_held_out(rows, name="h", task=task, tokenizer=lw_tokenizer, model=causal)
    collate = default_collator(lw_tokenizer, task=task)
    assert probe_model(causal, held_out, task=task, collate=collate) is True
    output = evaluate_model(causal, held_out, task=task, collate=collate, batch_size=3)
    sums = np.array([[_by_hand(causal, lw_tokenizer, r["prompt"], text) for text in MULTI_TOKEN.values()] for r in rows])
    np.testing.assert_allclose(output.probabilities, softmax(sums, axis=1), atol=1e-5)
    np.testing.assert_array_equal(output.predictions, sums.argmax(axis=1))
    np.testing.assert_array_equal(output.labels, [i % 3 for i in range(len(rows))])
    from sklearn.metrics import recall_score

    metrics = task.metrics(output.labels, output.predictions, output.probabilities)
    assert metrics["recall_negative"] == pytest.approx(recall_score(output.labels, output.predictions, labels=[0], average=None)[0])
    assert held_out.columns == ["prompt", "label"]


def test_labels_as_class_ids_in_key_order(reviews, lw_tokenizer, causal):
    task = LabelWords(LABEL_WORDS)
    rows = [{"prompt": prompt_of(r["text"]), "label": r["label"]} for r in reviews]
    held_out = prepare_held_out(rows, name="h", task=task, tokenizer=lw_tokenizer, model=causal)
    np.testing.assert_array_equal(held_out.labels, [r["label"] for r in reviews])


# ---- one test per bad input ------------------------------------------------------------------------


def test_no_prompt_column_is_refused_naming_it(reviews, lw_tokenizer, causal):
    rows = [{"text": r["text"], "label": "NEGATIVE"} for r in reviews]
    with pytest.raises(ConfigurationError, match=r"eval_dataset: .*'prompt' text column.*columns: \['label', 'text'\]"):
        prepare_held_out(rows, name="h", task=LabelWords(LABEL_WORDS), tokenizer=lw_tokenizer, model=causal)


def test_a_label_not_in_the_dict_is_refused(reviews, lw_tokenizer, causal):
    rows = _held_out(reviews, ["NEGATIVE", "NEUTRAL"])
    with pytest.raises(ConfigurationError, match=r"eval_dataset: 12 label\(s\) are outside .*'NEUTRAL'.*\['NEGATIVE', 'POSITIVE'\]"):
        prepare_held_out(rows, name="h", task=LabelWords(LABEL_WORDS), tokenizer=lw_tokenizer, model=causal)


@pytest.mark.parametrize("bad", [{"NEGATIVE": "", "POSITIVE": " positive"}, {"NEGATIVE": "  ", "POSITIVE": " positive"}])
def test_an_empty_label_text_is_refused(bad):
    with pytest.raises(ConfigurationError, match=r"label_words: every label text must be a non-empty string.*NEGATIVE"):
        LabelWords(bad)


def test_label_texts_with_the_same_tokens_are_refused(lw_tokenizer):
    task = LabelWords({"NEGATIVE": " negative", "BAD": "negative"})  # WordPiece drops the space: same ids
    with pytest.raises(ConfigurationError, match=r"label_words: 'NEGATIVE' and 'BAD' tokenize to the same ids"):
        task.bind_tokenizer(lw_tokenizer)


def test_a_model_that_is_not_causal_is_refused(reviews, lw_tokenizer):
    from synthetic_reviews import tiny_llama_classifier

    classifier = tiny_llama_classifier(lw_tokenizer, seed=0)
    task = LabelWords(LABEL_WORDS)
    held_out = prepare_held_out(_held_out(reviews, list(LABEL_WORDS)), name="h", task=task, tokenizer=lw_tokenizer, model=classifier)
    with pytest.raises(ConfigurationError, match=r"task: LabelWords needs a causal LM .*LlamaForSequenceClassification.*\(1, 2\)"):
        probe_model(classifier, held_out, task=task, collate=task.collate)


def test_no_tokenizer_is_refused(reviews, causal):
    with pytest.raises(ConfigurationError, match=r"processing_class"):
        prepare_held_out(_held_out(reviews, list(LABEL_WORDS)), name="h", task=LabelWords(LABEL_WORDS), tokenizer=None, model=causal)


def test_import_stays_light():
    import subprocess
    import sys

    code = "import sys, trainer_ext; trainer_ext.LabelWords; import trainer_ext.tasks.label_words; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
