"""Real fine-tuning setups on this CPU machine: LoRA adapters (peft), bf16, gradient checkpointing and
train/eval mode, sharded checkpoints. Each test runs a real Trainer on a tiny Llama classifier."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from synthetic_reviews import keyword_reviews, tiny_llama_classifier, tokenize_reviews, train_tokenizer  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from trainer_ext import BestCheckpointCallback  # noqa: E402
from trainer_ext.checkpoint_io import load_weights  # noqa: E402
from trainer_ext.evaluation import prepare_held_out, evaluate_model  # noqa: E402

peft = pytest.importorskip("peft", reason="the peft extra (pip install 'trainer-ext[peft]') is part of the dev extra")


@pytest.fixture(scope="module")
def data():
    train_rows, eval_rows = keyword_reviews(160, seed=1), keyword_reviews(61, seed=2)
    tokenizer = train_tokenizer([r["text"] for r in train_rows + eval_rows])
    holdout = tokenize_reviews(eval_rows, tokenizer)
    return {
        "tokenizer": tokenizer,
        "train": tokenize_reviews(train_rows, tokenizer),
        "flipped": holdout.map(lambda row: {"labels": 1 - row["labels"]}),  # the best is an early checkpoint
    }


def _args(out, **overrides):
    base = dict(
        output_dir=str(out), num_train_epochs=3, per_device_train_batch_size=16, learning_rate=1e-2,
        save_strategy="epoch", eval_strategy="no", report_to=[], use_cpu=True, seed=0, logging_steps=100,
        disable_tqdm=True,
    )
    base.update(overrides)
    return TrainingArguments(**base)


def _lora(tokenizer):
    config = peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    return peft.get_peft_model(tiny_llama_classifier(tokenizer, seed=0), config)


def _adapter_matches(model, checkpoint: Path) -> bool:
    saved = load_file(str(checkpoint / "adapter_model.safetensors"))
    current = peft.get_peft_model_state_dict(model)
    assert set(saved) == set(current)
    assert any("score" in k for k in saved), "the classification head (modules_to_save) is saved with the adapter"
    return all(torch.equal(current[k].cpu(), v) for k, v in saved.items())


@pytest.mark.parametrize("trainer_loads", [False, True], ids=["callback-loads", "trainer-loads"])
def test_lora_adapter_best_is_active_at_the_end(data, tmp_path, trainer_loads):
    model = _lora(data["tokenizer"])
    callback = BestCheckpointCallback(data["flipped"], "accuracy")
    extra = {"eval_strategy": "epoch", "load_best_model_at_end": True} if trainer_loads else {}
    trainer = Trainer(
        model=model, args=_args(tmp_path, **extra), train_dataset=data["train"],
        eval_dataset=data["flipped"] if trainer_loads else None, processing_class=data["tokenizer"],
        callbacks=[callback],
    )
    trainer.train()
    best = callback.leaderboard["best_checkpoint"]
    assert best != "checkpoint-30", "the scenario must make the best differ from the last checkpoint"
    assert (tmp_path / best / "adapter_model.safetensors").is_file()
    assert not (tmp_path / best / "model.safetensors").exists()  # a PEFT checkpoint holds the adapter only
    assert _adapter_matches(trainer.model, tmp_path / best)
    assert not _adapter_matches(trainer.model, tmp_path / "checkpoint-30")
    # the held-out evaluation used the adapted model: the record's accuracy is the adapted model's
    record = json.loads((tmp_path / best / "checkpoint_metrics.json").read_text())
    held_out = prepare_held_out(data["flipped"], name="x", label_names=["NEGATIVE", "POSITIVE"])
    from transformers import DataCollatorWithPadding

    output = evaluate_model(trainer.model, held_out, collate=DataCollatorWithPadding(data["tokenizer"]), batch_size=16, num_classes=2)
    assert (output.predictions == output.labels).mean() == pytest.approx(record["metrics"]["accuracy"])


def test_bf16_evaluation_is_recorded_and_metrics_come_from_float32(data, tmp_path, monkeypatch):
    # transformers 4.50's TrainingArguments(bf16=True) sets os.environ["ACCELERATE_MIXED_PRECISION"] =
    # "bf16", and every later Trainer of this test process would then train under bf16 autocast (a later
    # test compared such a run with a float32 reload and failed). monkeypatch restores the variable.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    callback = BestCheckpointCallback(data["flipped"], "accuracy")
    trainer = Trainer(
        model=tiny_llama_classifier(data["tokenizer"], seed=0), args=_args(tmp_path, bf16=True, num_train_epochs=1),
        train_dataset=data["train"], processing_class=data["tokenizer"], callbacks=[callback],
    )
    trainer.train()
    record = json.loads((tmp_path / "checkpoint-10" / "checkpoint_metrics.json").read_text())
    assert record["evaluation"]["precision"] == "bf16"
    scores = dict(__import__("numpy").load(tmp_path / "checkpoint-10" / "checkpoint_scores.npz"))
    assert scores["probabilities"].dtype.name == "float32"
    assert abs(scores["probabilities"].sum(axis=1) - 1).max() < 1e-5


def test_gradient_checkpointing_and_dropout_training_is_unchanged_by_the_callback(data, tmp_path):
    """Same seeds: the training losses with the callback equal those without it, step for step."""
    losses = {}
    for with_callback in (False, True):
        model = tiny_llama_classifier(data["tokenizer"], seed=0)
        for layer in model.model.layers:
            layer.self_attn.attention_dropout = 0.2
        callbacks = [BestCheckpointCallback(data["flipped"], "accuracy")] if with_callback else []
        trainer = Trainer(
            model=model,
            args=_args(tmp_path / str(with_callback), gradient_checkpointing=True, save_strategy="steps", save_steps=4,
                       num_train_epochs=2, logging_steps=1),
            train_dataset=data["train"], processing_class=data["tokenizer"], callbacks=callbacks,
        )
        trainer.train()
        losses[with_callback] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses[True]) == 20
    assert losses[True] == losses[False]


def test_evaluation_restores_every_submodule_mode(data):
    model = tiny_llama_classifier(data["tokenizer"], seed=0)
    model.train()
    model.model.layers[0].mlp.eval()  # a frozen piece a user keeps in eval mode
    before = {name: m.training for name, m in model.named_modules()}
    held_out = prepare_held_out(data["flipped"], name="x", label_names=["NEGATIVE", "POSITIVE"])
    from transformers import DataCollatorWithPadding

    evaluate_model(model, held_out, collate=DataCollatorWithPadding(data["tokenizer"]), batch_size=8, num_classes=2)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("trainer_loads", [False, True], ids=["callback-loads", "trainer-loads"])
def test_sharded_checkpoints_load_the_best(data, tmp_path, trainer_loads):
    model = tiny_llama_classifier(data["tokenizer"], seed=0)
    # large models are saved in shards; make this small one shard too
    model.save_pretrained = functools.partial(type(model).save_pretrained, model, max_shard_size="40KB")
    callback = BestCheckpointCallback(data["flipped"], "accuracy")
    extra = {"eval_strategy": "epoch", "load_best_model_at_end": True} if trainer_loads else {}
    trainer = Trainer(
        model=model, args=_args(tmp_path, learning_rate=3e-3, **extra), train_dataset=data["train"],
        eval_dataset=data["flipped"] if trainer_loads else None, processing_class=data["tokenizer"], callbacks=[callback],
    )
    trainer.train()
    best = tmp_path / callback.leaderboard["best_checkpoint"]
    assert best.name != "checkpoint-30"
    shards = sorted(best.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (best / "model.safetensors.index.json").is_file()
    saved = {}
    for shard in shards:
        saved.update(load_file(str(shard)))
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


def test_load_weights_refuses_a_checkpoint_of_another_model(data, tmp_path):
    small = tiny_llama_classifier(data["tokenizer"], seed=0)
    small.save_pretrained(tmp_path)
    other = tiny_llama_classifier(data["tokenizer"], seed=0, hidden_size=16)
    with pytest.raises(RuntimeError, match="does not match the model|size mismatch"):
        load_weights(other, tmp_path)
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_weights(other, tmp_path / "nowhere")
