"""trainer_ext.evaluation with a real ``datasets.Dataset`` and a real tiny model built from config.

References: a real Trainer (which columns its ``remove_unused_columns`` keeps), and the model's own
forward pass over each example (softmax of the logits), computed here without trainer_ext.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator  # noqa: E402

from trainer_ext.errors import ConfigurationError  # noqa: E402
from trainer_ext.evaluation import (  # noqa: E402
    default_collator,
    evaluate_model,
    prepare_held_out,
    probe_model,
)
from trainer_ext.tasks import SingleLabel  # noqa: E402

NAMES = ["NEGATIVE", "POSITIVE"]
TEXTS = ["great phone and a fine screen", "awful battery", "bad", "I love it, excellent service", "poor, broken"]
RATINGS = ["POSITIVE", "NEGATIVE", "NEGATIVE", "POSITIVE", "NEGATIVE"]


def _tokenized_with_extras(tokenizer):
    encoded = tokenizer(TEXTS, truncation=True, max_length=64)
    return datasets.Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "sentence": TEXTS,  # a string column: the collator cannot make a tensor of it
            "review_id": [f"r{i}" for i in range(len(TEXTS))],
            "idx": list(range(len(TEXTS))),
            "label": [NAMES.index(r) for r in RATINGS],
        }
    )


def _by_hand(model, tokenizer):
    """Each example alone through the model: the softmax of its logits."""
    model.eval()
    with torch.no_grad():
        rows = [torch.softmax(model(**tokenizer(t, return_tensors="pt")).logits.float(), -1)[0] for t in TEXTS]
    return torch.stack(rows).numpy()


def test_extra_columns_are_dropped_as_the_trainer_drops_them(tmp_path, tokenizer, tiny_model):
    dataset = _tokenized_with_extras(tokenizer)
    task = SingleLabel(NAMES)
    held_out = prepare_held_out(dataset, name="holdout", task=task, model=tiny_model)
    trainer = Trainer(
        model=tiny_model,
        args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True),
        eval_dataset=dataset,
    )
    kept_by_trainer = trainer._remove_unused_columns(dataset).column_names
    assert held_out.columns == kept_by_trainer  # the same columns, in the same order
    assert held_out.columns == ["input_ids", "attention_mask", "label"]
    assert all(set(f) == {"input_ids", "attention_mask"} for f in held_out.features)

    collate = DataCollatorWithPadding(tokenizer)
    output = evaluate_model(tiny_model, held_out, task=task, collate=collate, batch_size=2)
    expected = _by_hand(tiny_model, tokenizer)
    np.testing.assert_allclose(output.probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(output.predictions, expected.argmax(axis=1))
    np.testing.assert_array_equal(output.labels, [1, 0, 0, 1, 0])


def test_raw_text_and_labels_under_other_column_names(tokenizer, tiny_model):
    task = SingleLabel(NAMES)
    renamed = datasets.Dataset.from_dict({"sentence": TEXTS, "rating": RATINGS, "source": ["web"] * len(TEXTS)})
    plain = datasets.Dataset.from_dict({"text": TEXTS, "labels": RATINGS})
    held_out = prepare_held_out(
        renamed, name="holdout", task=task, tokenizer=tokenizer, text_column="sentence", label_column="rating"
    )
    reference = prepare_held_out(plain, name="holdout", task=task, tokenizer=tokenizer)
    assert held_out.columns == ["sentence", "rating"]
    assert held_out.fingerprint == reference.fingerprint
    np.testing.assert_array_equal(held_out.labels, [1, 0, 0, 1, 0])
    output = evaluate_model(tiny_model, held_out, task=task, collate=DataCollatorWithPadding(tokenizer), batch_size=4)
    np.testing.assert_allclose(output.probabilities, _by_hand(tiny_model, tokenizer), atol=1e-5)


def test_unknown_column_names_say_which_argument_and_what_was_found(tokenizer):
    task = SingleLabel(NAMES)
    renamed = datasets.Dataset.from_dict({"sentence": TEXTS, "rating": RATINGS})
    with pytest.raises(ConfigurationError) as error:
        prepare_held_out(renamed, name="h", task=task, tokenizer=tokenizer, text_column="sentence", label_column="stars")
    message = str(error.value)
    assert message.startswith("label_column: 'stars' is not a column of eval_dataset")
    assert "['sentence', 'rating']" in message and "label_column='<" in message
    with pytest.raises(ConfigurationError) as error:
        prepare_held_out(renamed, name="h", task=task, tokenizer=tokenizer, text_column="body", label_column="rating")
    message = str(error.value)
    assert "examples have neither 'input_ids' nor a 'body' column" in message
    assert "['rating', 'sentence']" in message and "text_column=" in message


def test_probe_tells_scores_from_ids_and_checks_the_width(tokenizer, tiny_model):
    dataset = _tokenized_with_extras(tokenizer)
    collate = DataCollatorWithPadding(tokenizer)
    held_out = prepare_held_out(dataset, name="h", task=SingleLabel(NAMES), model=tiny_model)
    assert probe_model(tiny_model, held_out, task=SingleLabel(NAMES), collate=collate) is True

    class ClassIds(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)

    assert probe_model(ClassIds(tiny_model), held_out, task=SingleLabel(NAMES), collate=collate) is False
    with pytest.raises(ConfigurationError, match=r"logits have shape \(1, 2\), expected \[batch, 3\]"):
        probe_model(tiny_model, held_out, task=SingleLabel(["a", "b", "c"]), collate=collate)


def test_default_collator_pads_with_a_tokenizer(tokenizer):
    assert isinstance(default_collator(tokenizer), DataCollatorWithPadding)
    assert default_collator(None) is default_data_collator
