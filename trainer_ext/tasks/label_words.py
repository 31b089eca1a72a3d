"""Label words: a causal LM that answers a prompt with the text of a class (issue 11).

``LabelWords({"NEGATIVE": " negative", "POSITIVE": " positive"})`` is a :class:`SingleLabel` task
whose classes are the dict's keys, in order. Only the forward differs: class ``c`` scores

    s_c = sum_j log p(label_c[j] | prompt, label_c[:j])

the sum of the log-probabilities of the tokens of its label text following the prompt, exactly what a
teacher-forced forward of ``prompt + label_text`` gives. The probabilities are the softmax over the
classes of those sums, the prediction their argmax; from there on every single-label key, objective,
threshold and interval applies unchanged (the rows are :class:`SingleLabel`'s).

Tokenization
------------
The prompt is tokenized with the Trainer's ``processing_class`` (special tokens added as the tokenizer
adds them, trailing special tokens such as an appended EOS removed: the answer follows the prompt's
last text token), **without truncation**. Each label text is tokenized **separately**, without special
tokens, and its ids are appended to the prompt's. A BPE tokenizer may merge across the boundary when it
tokenizes ``prompt + label_text`` as one string (``"Sentiment: negative"`` can give other tokens than
``"Sentiment:"`` then ``" negative"``); scoring the separately tokenized label is what makes the score
equal to a teacher-forced forward of the concatenated *ids*, and it is how the training examples should
be built too (:meth:`LabelWords.encode_example` builds them so: the prompt's labels ``-100``).

Cost
----
One forward pass per batch of prompts. The task's collator pads prompts on the left, as generation
does (any padding scores the same: position ids are computed from the attention mask), so that every
prompt ends in the batch's last position and only that position is projected onto the vocabulary (the
model's ``logits_to_keep=1``, when its forward takes it; a batch padded otherwise, by a
``data_collator`` of the user's, keeps the last positions down to its shortest prompt's end). The full
``[batch, tokens, vocabulary]`` logits cost more than the whole model for a real vocabulary: hidden 256,
4 layers, a vocabulary of 32,000 took 3.6x the time of a loop keeping the last position only
(``scripts/bench_eval.py --task label_words --model-vocab 32000``), and at B = 32 and 256 tokens they
are 1 GiB per batch. When every label text is one token, every class is read from the logit row of the
prompt's last token. A class of ``L > 1`` tokens
adds one forward of its ``L - 1`` continuation tokens per batch, on a copy of the prompt's KV cache (the
number of passes is the same for every batch, as FSDP and ZeRO-3 need).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


from ..errors import ConfigurationError
from . import SingleLabel

__all__ = ["LabelWords"]

PROMPT_COLUMN = "prompt"


class LabelWords(SingleLabel):
    """A causal LM (``AutoModelForCausalLM``, plain or wrapped by PEFT) answering with label words.

    ``label_words``: class name -> the text the model answers for it (``{"NEGATIVE": " negative", ...}``),
    at least two classes, every text non-empty and the token sequences pairwise different once
    tokenized. ``prompt_column``: the held-out column with the prompt text (default ``"prompt"``); a
    held-out set of pre-tokenized prompts (``input_ids``) is accepted as well. Labels: class names (the
    dict's keys) or ids in key order.
    """

    name: ClassVar[str] = "label_words"

    def __init__(self, label_words: Mapping[str, str], *, prompt_column: str = PROMPT_COLUMN) -> None:
        if not isinstance(label_words, Mapping):
            raise ConfigurationError(
                f"label_words: expected a dict of class name -> label text, e.g. "
                f"{{'NEGATIVE': ' negative', 'POSITIVE': ' positive'}}; got {type(label_words).__name__}."
            )
        if len(label_words) < 2:
            raise ConfigurationError(f"label_words: expected at least 2 classes; got {dict(label_words)!r}.")
        bad = {k: v for k, v in label_words.items() if not isinstance(v, str) or not v.strip()}
        if bad:
            raise ConfigurationError(
                f"label_words: every label text must be a non-empty string (the answer the model gives); "
                f"got {bad!r}."
            )
        if not isinstance(prompt_column, str) or not prompt_column:
            raise ConfigurationError(f"prompt_column: expected a column name; got {prompt_column!r}.")
        super().__init__([str(k) for k in label_words])
        self.label_words: dict[str, str] = {str(k): v for k, v in label_words.items()}
        self.prompt_column = prompt_column
        self.label_token_ids: list[list[int]] | None = None  # set by bind_tokenizer
        self._special_ids: set[int] = set()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.label_words == self.label_words  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.label_words.items())))

    def __repr__(self) -> str:
        return f"LabelWords({self.label_words!r})"

    # ---- tokenization ------------------------------------------------------------------------

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Tokenize every label text (separately, no special tokens) with ``tokenizer``; raise when a
        text gives no token or two classes give the same tokens."""
        if tokenizer is None or not callable(tokenizer):
            raise ConfigurationError(
                "task: LabelWords tokenizes the prompts and label texts with the Trainer's processing_class, "
                "but none is available. Pass processing_class=tokenizer to the Trainer."
            )
        ids = [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in self.label_words.values()]
        empty = [name for name, t in zip(self.label_words, ids) if not t]
        if empty:
            raise ConfigurationError(f"label_words: the label text of {empty} gives no token with this tokenizer.")
        seen: dict[tuple[int, ...], str] = {}
        for name, t in zip(self.label_words, ids):
            if tuple(t) in seen:
                raise ConfigurationError(
                    f"label_words: {seen[tuple(t)]!r} and {name!r} tokenize to the same ids {t} "
                    f"({self.label_words[seen[tuple(t)]]!r}, {self.label_words[name]!r}): the model cannot tell "
                    f"them apart. Use label texts the tokenizer knows."
                )
            seen[tuple(t)] = name
        self.label_token_ids = ids
        self._special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])

    def prompt_ids(self, tokenizer: Any, prompt: str) -> list[int]:
        """The prompt's ids: special tokens as the tokenizer adds them, trailing special tokens
        (an appended EOS or SEP) removed, no truncation."""
        ids = list(tokenizer(str(prompt))["input_ids"])
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        while ids and ids[-1] in special:
            ids.pop()
        return ids

    def encode_example(self, tokenizer: Any, prompt: str, label: str | int) -> dict[str, list[int]]:
        """A training example scored exactly as the held-out set is: ``input_ids`` the prompt's ids then
        the label text's ids, ``labels`` -100 on the prompt (loss on the answer only)."""
        class_id = self.read_labels([label], argument="label")[0]
        answer = list(tokenizer(self.label_words[self.label_names[class_id]], add_special_tokens=False)["input_ids"])
        prompt_ids = self.prompt_ids(tokenizer, prompt)
        return {
            "input_ids": prompt_ids + answer,
            "attention_mask": [1] * (len(prompt_ids) + len(answer)),
            "labels": [-100] * len(prompt_ids) + answer,
        }

    def held_out_features(
        self, rows: Sequence[Mapping[str, Any]], tokenizer: Any, *, argument: str
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Each held-out example's prompt ids (``{"input_ids": [...]}``) and the column they came from.
        Called by :func:`trainer_ext.evaluation.prepare_held_out`; binds ``tokenizer``."""
        self.bind_tokenizer(tokenizer)
        first = rows[0]
        if self.prompt_column in first:
            empty = [i for i, row in enumerate(rows) if not str(row[self.prompt_column])]
            if empty:
                raise ConfigurationError(f"{argument}: {len(empty)} prompt(s) are empty, e.g. row {empty[0]}.")
            features = [{"input_ids": self.prompt_ids(tokenizer, row[self.prompt_column])} for row in rows]
            return features, [self.prompt_column]
        if "input_ids" in first:
            return [{"input_ids": list(map(int, row["input_ids"]))} for row in rows], ["input_ids"]
        raise ConfigurationError(
            f"{argument}: the label-words task reads a '{self.prompt_column}' text column (the prompt the model "
            f"answers with a label text); columns: {sorted(first)}. Add it, or pass "
            f"LabelWords(..., prompt_column='<the column with the prompts>')."
        )

    def collate(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Pad prompt ids to the longest on the left (pad id 0, masked): every prompt then ends in the last
        position, the only one whose logits are computed (see Cost in the module docstring)."""
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros((len(features), longest), dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            span = slice(longest - n, longest)
            ids[i, span] = torch.as_tensor(list(f["input_ids"]), dtype=torch.long)
            mask[i, span] = 1
        return {"input_ids": ids, "attention_mask": mask}

    # ---- the forward ---------------------------------------------------------------------------

    def forward(self, model: Any, inputs: Mapping[str, Any]) -> Any:
        """Sums of label-token log-probabilities ``[batch, C]`` (float32) for a batch of prompts."""
        import torch

        if self.label_token_ids is None:
            raise RuntimeError("internal error: LabelWords.forward before bind_tokenizer")
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.to(ids.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        last = (mask * torch.arange(ids.shape[1], device=ids.device)).argmax(-1)  # the last real token, any padding
        lengths = mask.sum(-1)
        multi_token = any(len(t) > 1 for t in self.label_token_ids)
        keep = {"logits_to_keep": int(ids.shape[1] - last.min())} if _keeps_logits(model) else {}
        output = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=multi_token, **keep)
        logits = self._causal_logits(model, output, ids)
        rows = torch.arange(ids.shape[0], device=ids.device)
        kept_from = ids.shape[1] - logits.shape[1]  # the logits are those of the last positions
        first = torch.log_softmax(logits[rows, last - kept_from].float(), dim=-1)
        scores = first[:, [t[0] for t in self.label_token_ids]].clone()
        if not multi_token:
            return scores
        cache, cache_argument = _prompt_cache(model, output)
        if cache is None:
            raise ConfigurationError(
                f"task: label texts of several tokens are scored on the prompt's KV cache, but "
                f"{type(model).__name__} returned none (use_cache=True). Use one-token label texts."
            )
        for c, tokens in enumerate(self.label_token_ids):
            if len(tokens) == 1:
                continue
            follow = torch.as_tensor(tokens, dtype=torch.long, device=ids.device)
            steps = len(tokens) - 1
            continued = model(
                input_ids=follow[:-1].expand(ids.shape[0], steps),
                attention_mask=torch.cat([mask, torch.ones((ids.shape[0], steps), dtype=mask.dtype, device=mask.device)], -1),
                position_ids=lengths[:, None] + torch.arange(steps, device=ids.device),
                use_cache=True,
                **{cache_argument: copy.deepcopy(cache)},  # a copy: the continuation appends to it
            )
            later = torch.log_softmax(self._causal_logits(model, continued, ids).float(), dim=-1)
            scores[:, c] += later.gather(-1, follow[1:].expand(ids.shape[0], steps)[..., None]).squeeze(-1).sum(-1)
        return scores

    def _causal_logits(self, model: Any, output: Any, ids: Any) -> Any:
        logits = output["logits"] if isinstance(output, Mapping) else getattr(output, "logits", None)
        if logits is None or logits.dim() != 3 or logits.shape[0] != ids.shape[0]:
            shape = None if logits is None else tuple(logits.shape)
            raise ConfigurationError(
                f"task: LabelWords needs a causal LM (AutoModelForCausalLM, plain or under PEFT) returning "
                f"logits [batch, tokens, vocabulary]; {type(model).__name__} returned logits of shape {shape}."
            )
        largest = max(max(t) for t in self.label_token_ids or [[0]])
        if largest >= logits.shape[-1]:
            raise ConfigurationError(
                f"task: label token id {largest} is outside the model's vocabulary of {logits.shape[-1]}; "
                f"is processing_class the model's tokenizer?"
            )
        return logits


def _keeps_logits(model: Any) -> bool:
    """Does ``model.forward`` (the base model's under PEFT) take ``logits_to_keep``? An int there keeps the
    logits of that many last positions, in every transformers release this package supports (4.50+)."""
    from ..evaluation import _forward_parameters  # evaluation imports the tasks: imported when called

    parameters = _forward_parameters(model)
    return parameters is not None and "logits_to_keep" in parameters


def _prompt_cache(model: Any, output: Any) -> tuple[Any, str]:
    """The KV cache of the prompt's forward and the argument that passes it back: the name the model's
    output gave it (``cache`` in transformers 5.x, where ``past_key_values`` is deprecated;
    ``past_key_values`` in 4.x, where a ``cache=`` argument would vanish into ``**kwargs`` unread)."""
    get = output.get if isinstance(output, Mapping) else (lambda key: getattr(output, key, None))
    for name in ("cache", "past_key_values"):
        cache = get(name)
        if cache is not None:
            return cache, name
    return None, "past_key_values"
