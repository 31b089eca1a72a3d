"""Load a checkpoint folder's weights into a model that is already in memory.

Used when the Trainer will not load the best model itself (``load_best_model_at_end=False``, for
example with ``eval_strategy="no"``). Handles what ``Trainer.save_model`` writes: ``model.safetensors``
or ``pytorch_model.bin``, sharded weights with an index file, and PEFT adapters
(``adapter_model.safetensors``, with ``modules_to_save`` such as the classification head).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["load_weights"]


def _tied_keys(model: torch.nn.Module) -> set[str]:
    """Parameter names that share storage with another parameter (safetensors saves one of each)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = tensor.data_ptr() if tensor.numel() else id(tensor)
        if key in seen:
            tied.update({name, seen[key]})
        else:
            seen[key] = name
    return tied


def _check(result, model: torch.nn.Module, folder: Path) -> None:
    missing = [k for k in result.missing_keys if k not in _tied_keys(model)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"loading {folder}: the checkpoint does not match the model (missing: {missing[:5]}, "
            f"unexpected: {list(result.unexpected_keys)[:5]})"
        )


def load_weights(model: torch.nn.Module, checkpoint_dir: str | os.PathLike) -> None:
    """Load the weights saved in ``checkpoint_dir`` into ``model`` in place.

    Raises FileNotFoundError when the folder holds no weights we know, RuntimeError when they do not
    fit the model.
    """
    folder = Path(checkpoint_dir)
    adapter = next((folder / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (folder / n).is_file()), None)
    if adapter is not None and hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict  # optional extra: trainer-ext[peft]

        state = _read(adapter)
        result = set_peft_model_state_dict(model, state, adapter_name=getattr(model, "active_adapter", "default"))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise RuntimeError(f"loading adapter {adapter}: unexpected keys {list(unexpected)[:5]}")
        return
    index = next(
        (folder / n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json") if (folder / n).is_file()),
        None,
    )
    if index is not None:
        result = _load_sharded_checkpoint()(model, str(folder), strict=False)
        _check(result, model, folder)
        return
    single = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
    if single is None:
        raise FileNotFoundError(f"{folder}: no model.safetensors, pytorch_model.bin, sharded index or adapter found")
    result = model.load_state_dict(_read(single), strict=False)
    _check(result, model, folder)


def _load_sharded_checkpoint():
    """transformers' loader of sharded weights (``*.index.json``): in ``transformers.modeling_utils`` on
    every release we support (4.50 to 5.x); newer releases also export it from ``trainer_utils``."""
    try:
        from transformers.trainer_utils import load_sharded_checkpoint
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import load_sharded_checkpoint
    return load_sharded_checkpoint


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
