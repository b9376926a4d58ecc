"""Building transformers models from a preset or loading real weights with `from_pretrained`, with
errors a person can act on; and LoRA adapters."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latbot.errors import LatBotError


class ModelBuildError(LatBotError):
    """A model cannot be built or loaded as configured."""


def load_pretrained(
    pretrained: str | None, model_cls: type, model_type: str, preset: Callable[[], tuple], attn_implementation: str
) -> tuple[nn.Module, Any]:
    """(model, tokenizer). `pretrained` is a local directory or a hub id; None builds `preset()` randomly
    initialised (on the current default device — `torch.device("meta")` counts parameters for free)."""
    if pretrained is None:
        config, tokenizer = preset()
        config._attn_implementation = attn_implementation
        return model_cls(config), tokenizer
    from transformers import AutoConfig, AutoTokenizer

    local = Path(pretrained).expanduser()
    looks_local = pretrained.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.is_dir():
        raise ModelBuildError(f"pretrained: '{pretrained}' does not exist (expected a directory or a hub id)")
    try:
        config = AutoConfig.from_pretrained(pretrained)
    except (OSError, ValueError) as e:
        raise ModelBuildError(f"pretrained: cannot read a model config from '{pretrained}': {e}".splitlines()[0]) from e
    if config.model_type != model_type:
        raise ModelBuildError(
            f"pretrained: '{pretrained}' holds a '{config.model_type}' model, but this encoder needs '{model_type}'"
        )
    try:
        model = model_cls.from_pretrained(pretrained, attn_implementation=attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(pretrained)
    except (OSError, ValueError) as e:
        raise ModelBuildError(f"pretrained: cannot load '{pretrained}': {e}".splitlines()[0]) from e
    return model, tokenizer


class LoRALinear(nn.Module):
    """y = W x + (B A x) · α / r with A, B trainable and W frozen; B starts at zero (no change at init)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = (alpha or rank) / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def lora(module: nn.Module, rank: int, targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> int:
    """Wrap the attention projections of `module` with LoRA; returns how many were wrapped."""
    wrapped = 0
    for child in list(module.modules()):
        for attr in targets:
            sub = getattr(child, attr, None)
            if isinstance(sub, nn.Linear):
                setattr(child, attr, LoRALinear(sub, rank))
                wrapped += 1
    return wrapped
