"""Synthetic customer reviews, a locally trained tokenizer and a tiny Llama classifier.

Everything here runs offline on a CPU in seconds; nothing is downloaded from the Hugging Face
Hub. The example ``route_negative_reviews.py`` and the test suite share it (the tests put
``examples/`` on ``sys.path``).

The reviews are built to make checkpoint choice matter:

* the classes are imbalanced (``negative_share`` of the reviews are NEGATIVE), so a model that
  leans towards POSITIVE scores a good accuracy with a poor recall on NEGATIVE;
* clear reviews carry their sentiment in plain words ("terrible", "want a refund") and in
  negations of the opposite words ("not worth the money", "never had a problem");
* ambiguous reviews either mix praise and complaints, their label usually (not always) the
  sentiment of the clause after the contrast ("the screen is great but it broke after a week"),
  or are lukewarm ("does the job. expected a bit more"), NEGATIVE about half the time at the
  default shares: a model gains almost no accuracy by calling those NEGATIVE, yet recall on
  NEGATIVE moves with every nudge of its decision, so the two metrics peak at different epochs;
* a share of the labels is flipped (``label_noise``), as with hurried human annotators.

Labels: 0 = NEGATIVE, 1 = POSITIVE (see ``LABELS``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = [
    "ID2LABEL",
    "LABEL2ID",
    "LABELS",
    "make_reviews",
    "tiny_llama_classifier",
    "tokenize_reviews",
    "train_tokenizer",
]

LABELS = ["NEGATIVE", "POSITIVE"]
ID2LABEL = dict(enumerate(LABELS))
LABEL2ID = {label: index for index, label in ID2LABEL.items()}

NEGATIVE, POSITIVE = 0, 1

# --------------------------------------------------------------------------------------------
# Word lists. Aspects are neutral; the polarity lives in adjectives, verdict phrases and negations.
# --------------------------------------------------------------------------------------------
_ASPECTS = [
    "the battery", "the screen", "the delivery", "customer service", "the price", "the packaging",
    "the sound", "the app", "the fit", "the instructions", "the build quality", "the setup",
    "the charger", "the strap", "the remote", "the keyboard", "the camera", "the handle",
    "the lid", "the motor", "the zipper", "the cable", "the software update", "the manual",
]
_POSITIVE_ADJECTIVES = [
    "great", "excellent", "fantastic", "solid", "reliable", "fast", "sturdy", "comfortable",
    "intuitive", "helpful", "perfect", "impressive", "smooth", "lovely", "brilliant", "superb",
]
_NEGATIVE_ADJECTIVES = [
    "terrible", "awful", "broken", "slow", "flimsy", "useless", "confusing", "rude",
    "disappointing", "cheap", "faulty", "noisy", "overpriced", "horrible", "poor", "sloppy",
]
_INTENSIFIERS = ["", "", "", "really ", "very ", "pretty ", "quite ", "honestly ", "so "]
_POSITIVE_VERDICTS = [
    "i love it", "would buy again", "highly recommend", "five stars", "worth every penny",
    "exceeded my expectations", "my kids love it", "does exactly what it says",
    "happy with the purchase", "best thing i bought this year", "works like a charm",
]
_NEGATIVE_VERDICTS = [
    "i want a refund", "returned it", "waste of money", "never again", "one star",
    "stopped working after a week", "do not buy", "still waiting for a reply",
    "it broke on the second day", "asked for my money back", "regret buying it",
]
# Negated opposites: the words of one polarity, meaning the other.
_NEGATED_POSITIVE = [  # read as NEGATIVE
    "is not {pos}", "was not {pos} at all", "is not as {pos} as advertised",
    "could not be less {pos}", "is never {pos}",
]
_NEGATED_NEGATIVE = [  # read as POSITIVE
    "is not {neg} at all", "was never {neg}", "is not {neg} like other reviews said",
]
_NEGATED_VERDICTS = {
    NEGATIVE: ["not worth the money", "would not recommend", "not happy with it", "not what i ordered"],
    POSITIVE: ["never had a problem", "could not be happier", "no complaints", "not a single issue"],
}
_FILLER = [
    "i bought this last month", "it arrived on tuesday", "ordered it for my sister",
    "i use it every day at work", "the box was blue", "it comes in three colors",
    "we set it up in the kitchen", "paid with a gift card", "this is my second one",
    "my husband picked it", "got it on sale", "i read the reviews first",
    "used it on a trip", "it replaced an older model", "the order number is in my account",
    "shipping took four days", "i am writing this after two weeks", "we have two dogs",
    "bought it for the office", "it sits on my desk",
]
_CONTRASTS = ["but", "however", "although", "though", "yet", "but then"]
# Lukewarm clauses: no strong word either way. A lukewarm review draws from both lists alike, so
# the words carry no signal; the lists are split only to read naturally.
_LUKEWARM = {
    NEGATIVE: [
        "could be better", "expected a bit more", "average at best", "it works most of the time",
        "meh", "not sure it was worth it", "two and a half stars", "it does the minimum",
    ],
    POSITIVE: [
        "it is okay", "does the job", "fine i guess", "decent for the price", "three stars",
        "nothing special really", "it is alright", "no strong feelings",
    ],
}
# Among ambiguous reviews, the share written as lukewarm rather than mixed, per label. Chosen so that
# at the default negative_share (0.3) a lukewarm review is NEGATIVE about half the time:
# 0.3 * 0.6 / (0.3 * 0.6 + 0.7 * 0.25) = 0.51.
_LUKEWARM_SHARE = {NEGATIVE: 0.6, POSITIVE: 0.25}


def _sentiment_clause(rng: random.Random, polarity: int, *, negation_rate: float = 0.25) -> str:
    """One clause that expresses ``polarity``, plainly or by negating the opposite words."""
    kind = rng.random()
    if kind < negation_rate:
        if rng.random() < 0.5:
            return rng.choice(_NEGATED_VERDICTS[polarity])
        aspect = rng.choice(_ASPECTS)
        if polarity == NEGATIVE:
            return f"{aspect} " + rng.choice(_NEGATED_POSITIVE).format(pos=rng.choice(_POSITIVE_ADJECTIVES))
        return f"{aspect} " + rng.choice(_NEGATED_NEGATIVE).format(neg=rng.choice(_NEGATIVE_ADJECTIVES))
    if kind < negation_rate + 0.3:
        return rng.choice(_POSITIVE_VERDICTS if polarity == POSITIVE else _NEGATIVE_VERDICTS)
    adjectives = _POSITIVE_ADJECTIVES if polarity == POSITIVE else _NEGATIVE_ADJECTIVES
    intensifiers = _INTENSIFIERS if polarity == POSITIVE else _INTENSIFIERS + ["a bit ", "kind of "]
    verb = rng.choice(["is", "was", "feels", "seems"])
    return f"{rng.choice(_ASPECTS)} {verb} {rng.choice(intensifiers)}{rng.choice(adjectives)}"


def _clear_review(rng: random.Random, label: int) -> list[str]:
    """Clauses that all (or all but one minor aside) carry ``label``'s sentiment."""
    n_clauses = 1 + min(int(rng.expovariate(0.8)), 5)
    clauses = [_sentiment_clause(rng, label) for _ in range(n_clauses)]
    if rng.random() < 0.2:  # a minor aside of the other polarity, never the last word
        clauses.insert(rng.randrange(len(clauses)), _sentiment_clause(rng, 1 - label))
    return clauses


def _ambiguous_review(rng: random.Random, label: int) -> list[str]:
    """Praise and complaints mixed; usually the clause after the contrast word carries ``label``."""
    n_each = 1 + min(int(rng.expovariate(1.0)), 3)
    first = [_sentiment_clause(rng, 1 - label) for _ in range(n_each)]
    second = [_sentiment_clause(rng, label) for _ in range(max(1, n_each - rng.randint(0, 1)))]
    if rng.random() < 0.3:  # the reviewer's verdict comes first: harder to read
        first, second = second, first
    contrast = rng.choice(_CONTRASTS)
    return first + [f"{contrast} {second[0]}"] + second[1:]


def _lukewarm_review(rng: random.Random) -> list[str]:
    """Neither praise nor complaint; the clauses say nothing about the label."""
    n_clauses = 1 + min(int(rng.expovariate(1.2)), 3)
    return [
        rng.choice(_LUKEWARM[NEGATIVE if rng.random() < 0.5 else POSITIVE]) for _ in range(n_clauses)
    ]


def _assemble(rng: random.Random, clauses: list[str]) -> str:
    """Interleave filler sentences, then cut to 5..60 words at a sentence end (always keeping the
    first sentence, padding with filler below 5 words)."""
    n_filler = min(int(rng.expovariate(0.6)), 8)  # long tail: most reviews are short
    sentences = list(clauses)
    for _ in range(n_filler):
        sentences.insert(rng.randrange(len(sentences) + 1), rng.choice(_FILLER))
    words: list[str] = []
    for sentence in sentences:
        sentence_words = sentence.split()
        if words and len(words) + len(sentence_words) > 60:
            break
        words.extend(sentence_words)
        words[-1] += rng.choice([".", ".", ".", "!", ","])
    while len(words) < 5:
        words.extend(rng.choice(_FILLER).split())
        words[-1] += "."
    words = words[:60]
    if rng.random() < 0.7:
        words[0] = words[0].capitalize()
    return " ".join(words)


def make_reviews(
    n: int,
    *,
    seed: int,
    negative_share: float = 0.3,
    ambiguous_share: float = 0.15,
    label_noise: float = 0.05,
) -> list[dict]:
    """Return ``n`` synthetic reviews as ``{"text": str, "label": int}`` (0 NEGATIVE, 1 POSITIVE).

    The same ``seed`` always gives the same reviews (a private ``random.Random(seed)``; the global
    random state is neither read nor changed).

    ``negative_share`` is the probability that a review is written as NEGATIVE;
    ``ambiguous_share`` the probability that it is ambiguous (mixed or lukewarm, see the module
    docstring) rather than clear; ``label_noise`` the probability that its label is then
    flipped. The observed share of label 0 is therefore
    ``negative_share * (1 - label_noise) + (1 - negative_share) * label_noise`` in expectation.
    Texts are 5 to 60 words long, most of them short.
    """
    for name, value in (
        ("negative_share", negative_share),
        ("ambiguous_share", ambiguous_share),
        ("label_noise", label_noise),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"make_reviews: {name} must be in [0, 1]. Got {value!r} instead.")
    if n < 0:
        raise ValueError(f"make_reviews: n must be >= 0. Got {n!r} instead.")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = NEGATIVE if rng.random() < negative_share else POSITIVE
        if rng.random() < ambiguous_share:
            if rng.random() < _LUKEWARM_SHARE[label]:
                clauses = _lukewarm_review(rng)
            else:
                clauses = _ambiguous_review(rng, label)
        else:
            clauses = _clear_review(rng, label)
        text = _assemble(rng, clauses)
        if rng.random() < label_noise:
            label = 1 - label
        rows.append({"text": text, "label": label})
    return rows


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def _wordpiece_vocabulary(words: Counter, vocab_size: int) -> dict[str, int]:
    """Special tokens, every character (word-initial and ``##`` continuation), then the most
    frequent words, ties in alphabetical order, up to ``vocab_size`` tokens (more only if the
    characters alone need more)."""
    alphabet = sorted({char for word in words for char in word})
    tokens = SPECIAL_TOKENS + alphabet + [f"##{char}" for char in alphabet]
    known = set(tokens)
    for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])):
        if len(tokens) >= vocab_size:
            break
        if word not in known:
            tokens.append(word)
            known.add(word)
    return {token: index for index, token in enumerate(tokens)}


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 2000):
    """Train a lowercase WordPiece tokenizer on ``texts``, locally, and wrap it for transformers.

    The vocabulary is the special tokens, every character seen (so any word of known characters
    splits into pieces rather than ``[UNK]``), then the most frequent whole words. It is counted
    here rather than by ``tokenizers.trainers.WordPieceTrainer``, which breaks frequency ties in
    hash-map order: two processes given the same texts got different vocabularies, token ids and
    therefore different models for the same seed. This one is the same for the same texts.

    Special tokens: ``[PAD]`` (id 0), ``[UNK]`` (1), ``[BOS]`` (2), ``[EOS]`` (3). Every encoding
    ends with ``[EOS]``, so a Llama-style classifier, which reads the last non-padding token,
    always reads the same token type; that token attends to the whole review. Padding is on the
    right; ``model_max_length`` is 256.

    Returns a ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    pre_tokenizer = pre_tokenizers.Whitespace()
    words: Counter = Counter()
    for text in texts:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))

    backend = Tokenizer(models.WordPiece(_wordpiece_vocabulary(words, vocab_size), unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.WordPiece()
    backend.post_processor = processors.TemplateProcessing(
        single="$A [EOS]",
        pair="$A [EOS] $B:1 [EOS]:1",
        special_tokens=[("[EOS]", SPECIAL_TOKENS.index("[EOS]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=256,
        padding_side="right",
        # transformers 4.x would also return token_type_ids, which Llama models do not accept.
        model_input_names=["input_ids", "attention_mask"],
    )


def tiny_llama_classifier(
    tokenizer,
    *,
    num_labels: int = 2,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 1,
):
    """A randomly initialised ``LlamaForSequenceClassification`` sized for ``tokenizer``.

    ``pad_token_id`` comes from the tokenizer: the Llama classifier pools the last token that is
    not padding and refuses batches of more than one row without it. Weights depend only on
    ``seed`` (``torch.manual_seed``). With the defaults and a vocabulary of about 260 tokens it has
    about 20 thousand parameters.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if tokenizer.pad_token_id is None:
        raise ValueError(
            "tiny_llama_classifier: tokenizer has no pad token; the Llama classifier needs one to "
            "find the last real token. Hint: tokenizer.pad_token = tokenizer.eos_token."
        )
    if id2label is None:
        id2label = ID2LABEL if num_labels == len(LABELS) else {i: f"LABEL_{i}" for i in range(num_labels)}
    id2label = {int(index): label for index, label in id2label.items()}
    if len(id2label) != num_labels:
        raise ValueError(
            f"tiny_llama_classifier: id2label must have num_labels={num_labels} entries. "
            f"Got {len(id2label)} instead."
        )
    num_heads = 4 if hidden_size % 4 == 0 else 2
    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        num_labels=num_labels,
        id2label=id2label,
        label2id={label: index for index, label in id2label.items()},
    )
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config)


def tokenize_reviews(rows: Sequence[dict], tokenizer, *, max_length: int = 128):
    """Tokenize ``rows`` (``{"text", "label"}``) into a ``datasets.Dataset``, without padding.

    Columns: ``input_ids``, ``attention_mask``, ``labels``. Texts longer than ``max_length``
    tokens are truncated (the final ``[EOS]`` is kept). Padding is left to the collator.
    """
    from datasets import Dataset

    texts = [row["text"] for row in rows]
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    return Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": [int(row["label"]) for row in rows],
        }
    )


_KEYWORD_POSITIVE = "good great love excellent nice fine".split()
_KEYWORD_NEGATIVE = "bad awful hate terrible poor broken".split()
_KEYWORD_FILLER = "the phone battery screen it was and service food movie very this a of".split()


def keyword_reviews(n: int, seed: int, negative_share: float = 0.4) -> list[dict]:
    """Easy reviews for tests: the label is carried by one or two keywords among filler words.

    The tiny model learns them over a few epochs at lr 3e-3 (held-out accuracy about 0.88, 0.95,
    0.97, 1.0 over four epochs of 160 reviews), so its checkpoints really differ. Deterministic for
    a seed. Returns ``{"text": str, "label": int}`` rows like :func:`make_reviews`.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = 0 if rng.random() < negative_share else 1
        words = [rng.choice(_KEYWORD_FILLER) for _ in range(rng.randint(3, 12))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(_KEYWORD_NEGATIVE if label == 0 else _KEYWORD_POSITIVE))
        rows.append({"text": " ".join(words), "label": label})
    return rows
