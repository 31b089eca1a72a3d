"""On the CPU the evaluation plan has at most ``batch_size`` rows per batch (``max_batch_rows``): there,
many-row batches of short examples cost more per token (``scripts/bench_eval.py --task ... --threads 1``).
The reference is the plain length-sorted split into batches of B rows, written here."""

from __future__ import annotations

import numpy as np
import pytest

from trainer_ext.evaluation import batch_cost, max_batch_rows, plan_batches


def _sorted_split(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def test_cpu_rows_are_the_batch_size_and_accelerators_keep_the_budget():
    assert max_batch_rows("cpu", 32) == 32
    assert max_batch_rows("cuda", 32) is None and max_batch_rows("mps", 8) is None


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_capped_plan_is_the_length_sorted_split_into_batches_of_b(batch_size):
    lengths = np.clip(np.rint(np.random.default_rng(batch_size).lognormal(np.log(64), 0.75, 500)), 8, 256).astype(np.int64)
    capped = plan_batches(lengths, batch_size, max_rows=max_batch_rows("cpu", batch_size))
    # budget // longest >= batch_size for every batch, so the cap is what decides: exactly the sorted split
    assert [b.tolist() for b in capped] == _sorted_split(lengths, batch_size)
    budget = batch_size * int(lengths.max())
    assert all(batch_cost(b, lengths) <= budget for b in capped)


def test_without_a_cap_short_examples_still_go_many_to_a_batch():
    lengths = np.array([256] + [20] * 100)
    uncapped = plan_batches(lengths, 4)
    # budget 4 x 256 = 1024 tokens: 1024 // 256 = 4 rows (the long one, 3 short), then 1024 // 20 = 51, then 46
    assert [len(b) for b in uncapped] == [4, 51, 46]
    assert [len(b) for b in plan_batches(lengths, 4, max_rows=4)] == [4] * 25 + [1]


def test_evaluation_on_the_cpu_runs_batches_of_at_most_b_rows(tokenizer, tiny_model):
    """A real model and evaluate_model: every forward pass has at most B rows, every example is scored
    once, and the probabilities equal one example at a time (no padding) within float32 rounding."""
    import torch
    from transformers import DataCollatorWithPadding

    from trainer_ext.evaluation import evaluate_model, prepare_held_out
    from trainer_ext.tasks import SingleLabel

    rng = np.random.default_rng(0)
    ids = [[int(t) for t in rng.integers(5, len(tokenizer), int(n))] + [tokenizer.eos_token_id]
           for n in rng.integers(3, 40, 37)]
    from datasets import Dataset

    dataset = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids],
                                 "labels": [int(v) for v in rng.integers(0, 2, len(ids))]})
    task = SingleLabel(["NEGATIVE", "POSITIVE"])
    held_out = prepare_held_out(dataset, name="holdout", task=task, model=tiny_model)
    rows: list[int] = []
    hook = tiny_model.register_forward_pre_hook(lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                                with_kwargs=True)
    try:
        output = evaluate_model(tiny_model, held_out, task=task, collate=DataCollatorWithPadding(tokenizer), batch_size=4)
    finally:
        hook.remove()
    assert max(rows) == 4 and sum(rows) == len(ids)
    with torch.no_grad():
        one_by_one = np.stack([torch.softmax(tiny_model(input_ids=torch.tensor([x])).logits[0], -1).numpy() for x in ids])
    np.testing.assert_allclose(output.probabilities, one_by_one, atol=1e-5)
