"""LabelWords projects onto the vocabulary only the positions it reads (the model's ``logits_to_keep``): the
task's collator pads on the left, so one position per prompt; a right-padded batch (a user's collator) keeps
the last positions down to its shortest prompt's end. Either way every class's score equals the by-hand
reference: one separate, unpadded forward of prompt + label ids, and the sum of the label tokens'
log-probabilities (float64)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from route_reviews_with_llm import label_words_tokenizer, prompt_of, tiny_causal_llama  # noqa: E402
from synthetic_reviews import make_reviews  # noqa: E402
from trainer_ext import LabelWords  # noqa: E402
from trainer_ext.evaluation import prepare_held_out  # noqa: E402

ONE_TOKEN = {"NEGATIVE": " negative", "POSITIVE": " positive"}
MULTI_TOKEN = {"NEGATIVE": " negative", "POSITIVE": " positive positive", "MIXED": " negative positive negative"}


@pytest.fixture(scope="module")
def setup():
    tokenizer = label_words_tokenizer(make_reviews(200, seed=0))
    model = tiny_causal_llama(tokenizer, seed=2, num_layers=2).eval()
    prompts = [prompt_of(r["text"]) for r in make_reviews(9, seed=5)]
    return tokenizer, model, prompts


def _by_hand(model, ids, answer):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + answer])).logits[0]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(log_probs[len(ids) - 1 + j, token]) for j, token in enumerate(answer))


def _right_padded(features):
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros((len(features), longest), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[i, : len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("label_words", [ONE_TOKEN, MULTI_TOKEN], ids=["one_token", "multi_token"])
def test_scores_equal_the_by_hand_forward_and_only_read_positions_are_projected(setup, label_words):
    tokenizer, model, prompts = setup
    task = LabelWords(label_words)
    held_out = prepare_held_out([{"prompt": p, "label": list(label_words)[0]} for p in prompts], name="h", task=task,
                                tokenizer=tokenizer, model=model)
    features = held_out.features
    lengths = [len(f["input_ids"]) for f in features]
    assert len(set(lengths)) > 1  # prompts of different lengths: padding is exercised
    answers = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in label_words.values()]
    expected = np.array([[_by_hand(model, f["input_ids"], a) for a in answers] for f in features])

    projected: list[int] = []  # positions per row that reach the LM head, per forward pass
    hook = model.lm_head.register_forward_hook(lambda module, args, output: projected.append(args[0].shape[1]))
    try:
        left = task.collate(features)
        assert bool((left["attention_mask"][:, -1] == 1).all()), "the task's collator pads on the left"
        with torch.no_grad():
            left_scores = task.forward(model, left).double().numpy()
        prompt_pass_left = projected[0]
        projected.clear()
        with torch.no_grad():
            right_scores = task.forward(model, _right_padded(features)).double().numpy()
        prompt_pass_right = projected[0]
    finally:
        hook.remove()

    np.testing.assert_allclose(left_scores, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(right_scores, expected, rtol=1e-4, atol=1e-4)
    assert prompt_pass_left == 1
    assert prompt_pass_right == max(lengths) - min(lengths) + 1 < max(lengths)
