"""LabelWords in real training runs (issue 11): a tiny LlamaForCausalLM learns to answer " negative" or
" positive" after "<review> Sentiment:" (loss on the answer only); the callback picks and loads the
business-best. The reference for every recorded metric: by-hand teacher-forced log-probabilities of the
loaded model, scored by scikit-learn. Under a real Trainer, under PEFT LoRA, and under TRL's SFTTrainer
when trl is installed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from datasets import Dataset  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from sklearn.metrics import recall_score  # noqa: E402
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments  # noqa: E402

from route_reviews_with_llm import (  # noqa: E402
    LABEL_WORDS,
    held_out_rows,
    label_words_tokenizer,
    prompt_of,
    tiny_causal_llama,
    training_rows,
)
from synthetic_reviews import make_reviews  # noqa: E402
from trainer_ext import BestCheckpointCallback, LabelWords  # noqa: E402

OBJECTIVE = "recall_negative"


@pytest.fixture(scope="module")
def data():
    train, held = make_reviews(400, seed=0), make_reviews(120, seed=1)
    return train, held, label_words_tokenizer(train)


def _args(out, epochs=3, lr=3e-3):
    return TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=16, per_device_eval_batch_size=32,
        learning_rate=lr, save_strategy="epoch", eval_strategy="no", logging_strategy="no", report_to=[],
        seed=0, use_cpu=True, disable_tqdm=True,
    )


def _by_hand_predictions(model, tokenizer, held):
    """Argmax over classes of sum log p(label tokens | prompt), one unpadded forward per example and class."""
    answers = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in LABEL_WORDS.values()]
    predictions = []
    model.eval()
    with torch.no_grad():
        for review in held:
            ids = tokenizer(prompt_of(review["text"]))["input_ids"][:-1]  # drop the appended [EOS]
            sums = []
            for answer in answers:
                log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids + answer])).logits[0].double(), -1)
                sums.append(sum(float(log_probs[len(ids) - 1 + j, t]) for j, t in enumerate(answer)))
            predictions.append(int(np.argmax(sums)))
    return np.array(predictions)


def _check_pick(trainer, callback, tokenizer, held, out):
    board = callback.leaderboard
    entries = board["entries"]
    assert len(entries) == 3
    values = [e["metrics"][OBJECTIVE] for e in entries]
    assert len({round(e["metrics"]["log_loss"], 6) for e in entries}) == 3  # the checkpoints differ
    assert values[0] == max(values)
    best = entries[0]["checkpoint"]
    assert trainer.state.best_model_checkpoint == str(out / best)
    labels = np.array([r["label"] for r in held])
    predictions = _by_hand_predictions(trainer.model, tokenizer, held)  # the loaded model
    assert entries[0]["metrics"][OBJECTIVE] == pytest.approx(recall_score(labels, predictions, pos_label=0))
    assert entries[0]["metrics"]["accuracy"] == pytest.approx(float((labels == predictions).mean()))
    return best


def test_trainer_picks_and_loads_the_business_best(tmp_path, data):
    train, held, tokenizer = data
    task = LabelWords(LABEL_WORDS)
    callback = BestCheckpointCallback(Dataset.from_list(held_out_rows(held)), OBJECTIVE, task=task)
    trainer = Trainer(
        model=tiny_causal_llama(tokenizer, seed=0), args=_args(tmp_path),
        train_dataset=Dataset.from_list(training_rows(train, task, tokenizer)),
        data_collator=DataCollatorForSeq2Seq(tokenizer), processing_class=tokenizer, callbacks=[callback],
    )
    trainer.train()
    best = _check_pick(trainer, callback, tokenizer, held, tmp_path)
    saved = load_file(str(tmp_path / best / "model.safetensors"))
    for name, tensor in trainer.model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    record = json.loads((tmp_path / best / "checkpoint_metrics.json").read_text())
    assert record["task"] == "label_words"


def test_peft_lora_adapter_is_evaluated_and_loaded(tmp_path, data):
    peft = pytest.importorskip("peft")
    train, held, tokenizer = data
    task = LabelWords(LABEL_WORDS)
    model = peft.get_peft_model(
        tiny_causal_llama(tokenizer, seed=0),
        peft.LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "lm_head"]),
    )
    callback = BestCheckpointCallback(Dataset.from_list(held_out_rows(held)), OBJECTIVE, task=task)
    trainer = Trainer(
        model=model, args=_args(tmp_path, lr=1e-2), train_dataset=Dataset.from_list(training_rows(train, task, tokenizer)),
        data_collator=DataCollatorForSeq2Seq(tokenizer), processing_class=tokenizer, callbacks=[callback],
    )
    trainer.train()
    best = _check_pick(trainer, callback, tokenizer, held, tmp_path)
    adapter = load_file(str(tmp_path / best / "adapter_model.safetensors"))
    state = peft.get_peft_model_state_dict(trainer.model)
    assert adapter and set(adapter) == set(state)
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, adapter[name], rtol=0, atol=0)


def test_trl_sft_trainer(tmp_path, data):
    trl = pytest.importorskip("trl")
    train, held, tokenizer = data
    task = LabelWords(LABEL_WORDS)
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in training_rows(train, task, tokenizer)]
    args = trl.SFTConfig(
        output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=16, learning_rate=3e-3,
        save_strategy="epoch", eval_strategy="no", logging_strategy="no", report_to=[], seed=0, use_cpu=True,
        disable_tqdm=True, dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
    )
    callback = BestCheckpointCallback(Dataset.from_list(held_out_rows(held)), OBJECTIVE, task=task)
    trainer = trl.SFTTrainer(
        model=tiny_causal_llama(tokenizer, seed=0), args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, callbacks=[callback],
    )
    trainer.train()
    _check_pick(trainer, callback, tokenizer, held, tmp_path)


def _cli_evaluate(folder, data, *, processes):
    import os
    import socket
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    arguments = ["-m", "trainer_ext", "evaluate", str(folder), "--data", str(data), "--objective", OBJECTIVE,
                 "--batch-size", "32", "--label-words", json.dumps(LABEL_WORDS)]
    if processes > 1:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        arguments = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                     "--master_port", str(port), *arguments]
    done = subprocess.run([sys.executable, *arguments], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((folder / "checkpoint_leaderboard.json").read_text()), done.stderr


def test_cli_evaluate_on_2_processes_equals_the_callback_on_1(tmp_path, data):
    import shutil

    train, held, tokenizer = data
    task = LabelWords(LABEL_WORDS)
    run_dir = tmp_path / "run"
    callback = BestCheckpointCallback(Dataset.from_list(held_out_rows(held)), OBJECTIVE, task=task)
    Trainer(
        model=tiny_causal_llama(tokenizer, seed=0), args=_args(run_dir),
        train_dataset=Dataset.from_list(training_rows(train, task, tokenizer)),
        data_collator=DataCollatorForSeq2Seq(tokenizer), processing_class=tokenizer, callbacks=[callback],
    ).train()
    expected = {e["checkpoint"]: e["metrics"] for e in callback.leaderboard["entries"]}
    data_file = tmp_path / "held.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in held_out_rows(held)))
    for processes in (2,):  # the callback's run is the 1-process reference; a 1-process CLI run adds ~15 s
        folder = tmp_path / f"cli_{processes}"
        shutil.copytree(run_dir, folder)
        board, progress = _cli_evaluate(folder, data_file, processes=processes)
        assert f"{processes} process" in progress  # really evaluated on that many processes
        got = {e["checkpoint"]: e["metrics"] for e in board["entries"]}
        assert set(got) == set(expected)
        for name, metrics in expected.items():
            for key, value in metrics.items():
                assert got[name][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (processes, name, key)
