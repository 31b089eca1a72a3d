"""The synthetic data, tokenizer and tiny model that the examples and the Trainer tests stand on."""

from __future__ import annotations

import random
import re
import statistics

import pytest
import torch

from synthetic_reviews import (  # _LUKEWARM: the phrases that make a review lukewarm
    _LUKEWARM,
    ID2LABEL,
    LABEL2ID,
    LABELS,
    make_reviews,
    tiny_llama_classifier,
    tokenize_reviews,
)

CONTRAST = re.compile(r"\b(but|however|although|though|yet)\b")


# --- make_reviews ------------------------------------------------------------------------------
def test_labels_are_negative_zero_positive_one():
    assert LABELS == ["NEGATIVE", "POSITIVE"]
    assert ID2LABEL == {0: "NEGATIVE", 1: "POSITIVE"}
    assert LABEL2ID == {"NEGATIVE": 0, "POSITIVE": 1}


def test_same_seed_same_reviews_other_seed_other_reviews():
    assert make_reviews(300, seed=3) == make_reviews(300, seed=3)
    assert make_reviews(300, seed=3) != make_reviews(300, seed=4)


def test_global_random_state_is_left_alone():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    make_reviews(50, seed=0)
    assert random.random() == expected


def test_rows_are_text_and_binary_label():
    rows = make_reviews(500, seed=1)
    assert len(rows) == 500
    for row in rows:
        assert set(row) == {"text", "label"}
        assert isinstance(row["text"], str) and row["text"].strip()
        assert row["label"] in (0, 1)
    assert make_reviews(0, seed=1) == []


def test_lengths_are_5_to_60_words_with_a_long_tail():
    lengths = [len(row["text"].split()) for row in make_reviews(2000, seed=2)]
    assert min(lengths) >= 5 and max(lengths) <= 60
    assert statistics.median(lengths) <= 20
    assert sum(length > 35 for length in lengths) >= 0.02 * len(lengths)


@pytest.mark.parametrize(
    ("negative_share", "label_noise"), [(0.3, 0.0), (0.3, 0.05), (0.1, 0.2), (0.5, 0.0)]
)
def test_negative_share_matches_the_request_after_noise(negative_share, label_noise):
    rows = make_reviews(4000, seed=5, negative_share=negative_share, label_noise=label_noise)
    observed = sum(row["label"] == 0 for row in rows) / len(rows)
    expected = negative_share * (1 - label_noise) + (1 - negative_share) * label_noise
    assert observed == pytest.approx(expected, abs=0.03)


def test_ambiguous_share_controls_mixed_and_lukewarm_reviews():
    lukewarm_phrases = [phrase for phrases in _LUKEWARM.values() for phrase in phrases]

    def ambiguous_share_seen(ambiguous_share):
        rows = make_reviews(1000, seed=6, ambiguous_share=ambiguous_share)
        texts = [row["text"].lower() for row in rows]
        return sum(
            bool(CONTRAST.search(text)) or any(phrase in text for phrase in lukewarm_phrases) for text in texts
        ) / len(rows)

    assert ambiguous_share_seen(0.0) == 0.0
    assert ambiguous_share_seen(0.5) == pytest.approx(0.5, abs=0.06)
    assert ambiguous_share_seen(1.0) >= 0.95  # a few lose the telling clause to the 60-word cut


def test_negations_appear():
    texts = " ".join(row["text"] for row in make_reviews(500, seed=7))
    assert re.search(r"\bnot (great|good|excellent|reliable|worth)", texts) or " is not " in texts
    assert "never" in texts


@pytest.mark.parametrize("argument", ["negative_share", "ambiguous_share", "label_noise"])
def test_shares_outside_0_1_are_rejected_by_name(argument):
    with pytest.raises(ValueError, match=argument):
        make_reviews(10, seed=0, **{argument: 1.5})


# --- tokenizer -----------------------------------------------------------------------------------
def test_tokenizer_pads_right_with_pad_and_masks_it(tokenizer):
    assert tokenizer.pad_token == "[PAD]" and tokenizer.unk_token == "[UNK]"
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 256
    batch = tokenizer(["terrible", "the battery is great and i love it"], padding=True)
    short_ids, long_ids = batch["input_ids"]
    assert len(short_ids) == len(long_ids)
    n_real = sum(batch["attention_mask"][0])
    assert short_ids[n_real:] and all(i == tokenizer.pad_token_id for i in short_ids[n_real:])
    assert all(m == 0 for m in batch["attention_mask"][0][n_real:])
    assert short_ids[n_real - 1] == tokenizer.eos_token_id  # every encoding ends with [EOS]


def test_tokenizer_lowercases_and_knows_unknowns(tokenizer):
    assert tokenizer("TERRIBLE Battery")["input_ids"] == tokenizer("terrible battery")["input_ids"]
    assert tokenizer.unk_token_id in tokenizer("猫")["input_ids"]


# --- tokenize_reviews ----------------------------------------------------------------------------
def test_tokenize_reviews_gives_unpadded_columns_and_labels(tokenizer):
    rows = make_reviews(64, seed=8)
    dataset = tokenize_reviews(rows, tokenizer, max_length=16)
    assert sorted(dataset.column_names) == ["attention_mask", "input_ids", "labels"]
    assert dataset["labels"] == [row["label"] for row in rows]
    lengths = [len(ids) for ids in dataset["input_ids"]]
    assert max(lengths) == 16 and min(lengths) < 16  # truncated, and not padded
    assert all(tokenizer.pad_token_id not in ids for ids in dataset["input_ids"])
    assert all(ids[-1] == tokenizer.eos_token_id for ids in dataset["input_ids"])


# --- tiny_llama_classifier -----------------------------------------------------------------------
def test_model_is_a_small_llama_classifier_wired_to_the_tokenizer(tiny_model, tokenizer):
    config = tiny_model.config
    assert type(tiny_model).__name__ == "LlamaForSequenceClassification"
    assert config.pad_token_id == tokenizer.pad_token_id
    assert config.id2label == ID2LABEL and config.label2id == LABEL2ID
    assert config.vocab_size == len(tokenizer)
    assert config.hidden_size == 32 and config.num_hidden_layers == 1
    assert 2 <= config.num_attention_heads <= 4
    assert config.max_position_embeddings == 256
    assert tiny_model.num_parameters() < 100_000


def test_same_seed_same_weights(tokenizer):
    first = tiny_llama_classifier(tokenizer, seed=0).state_dict()
    second = tiny_llama_classifier(tokenizer, seed=0).state_dict()
    other = tiny_llama_classifier(tokenizer, seed=1).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_forward_on_a_padded_batch_gives_logits_b_by_2_independent_of_padding(tiny_model, tokenizer):
    texts = [row["text"] for row in make_reviews(4, seed=9)]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch should need padding"
    tiny_model.eval()
    with torch.no_grad():
        logits = tiny_model(**batch).logits
        alone = torch.cat([tiny_model(**tokenizer([text], return_tensors="pt")).logits for text in texts])
    assert logits.shape == (4, 2)
    # The classifier reads each row's last real token, so padding must not change its logits.
    torch.testing.assert_close(logits, alone, atol=1e-5, rtol=1e-4)


@pytest.fixture
def one_torch_thread():
    # The tiny model's matrices are too small to share between threads: on a busy 2-core machine
    # this test took 99 s with two threads and 3 s with one.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_tiny_model_learns_the_reviews_with_a_real_trainer(tokenizer, tmp_path, one_torch_thread):
    """The Trainer tests rely on this model learning; a model that never learns proves nothing."""
    from transformers import Trainer, TrainingArguments

    train_rows = make_reviews(2000, seed=10)
    holdout_rows = make_reviews(400, seed=11)
    model = tiny_llama_classifier(tokenizer, seed=0)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=3,
        learning_rate=3e-3,
        per_device_train_batch_size=32,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    Trainer(model=model, args=args, train_dataset=tokenize_reviews(train_rows, tokenizer),
            processing_class=tokenizer).train()

    holdout = tokenize_reviews(holdout_rows, tokenizer)
    model.eval()
    with torch.no_grad():
        batch = tokenizer.pad(holdout[:], return_tensors="pt")
        labels = batch.pop("labels")
        predictions = model(**batch).logits.argmax(-1)
    accuracy = (predictions == labels).float().mean().item()
    majority_rate = max(labels.float().mean().item(), 1 - labels.float().mean().item())
    assert set(predictions.tolist()) == {0, 1}, "the model predicts one class only"
    assert accuracy >= majority_rate + 0.05, (accuracy, majority_rate)
