"""A small word-level tokenizer built locally, for the tiny configurations used by tests and the CPU
quickstart (no model hub). Real-size models load their own tokenizer with `from_pretrained`.

The vocabulary covers the instruction template, MetaWorld/LIBERO-style instructions and the special
tokens InternVL and PaliGemma expect; other words map to [UNK]. It round-trips through
`save_pretrained` / `from_pretrained` like any transformers tokenizer.
"""

from __future__ import annotations

import re

from latbot.models.template import (
    ANSWER_END,
    ANSWER_MOTION,
    ANSWER_SCENE,
    ANSWER_SINGLE,
    QUESTION,
    STUDENT_QUESTION,
    SUBTASK_PROMPT,
)

SPECIALS = [
    "[PAD]",
    "[UNK]",
    "<bos>",
    "<eos>",
    "<image>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<|im_start|>",
    "<|im_end|>",
]
COMMON = """a an the and or of to in on into onto from with at by for up down off out over under behind
next between left right top bottom front back side open close closed opening push pull press pick place
put move reach grasp lift turn slide sweep insert unplug kick dunk hammer lock unlock take hand goal
puck ball cube block lid box button drawer door window handle lever faucet dial plate peg ring stick
thermos mug coffee machine nail wall shelf hole basket bin table bowl ramekin cup saucer stove cabinet
black red blue green yellow white wooden it its is be then user assistant frame
""".split()


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def build_tiny_tokenizer(extra_words: list[str] = ()):
    """A `PreTrainedTokenizerFast` with a word-level vocabulary (a few hundred entries)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in SPECIALS:
        vocab.setdefault(tok, len(vocab))
    text = " ".join(
        [
            QUESTION,
            ANSWER_SCENE,
            ANSWER_MOTION,
            ANSWER_END,
            STUDENT_QUESTION,
            SUBTASK_PROMPT,
            *COMMON,
            ANSWER_SINGLE,
            *extra_words,
        ]
    )
    for w in _words(text) + [f"{i}" for i in range(100)]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<bos>",
        eos_token="<eos>",
        extra_special_tokens={
            "image_token": "<image>",
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
        },
    )
