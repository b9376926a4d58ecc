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
    from latbot.models import deferred

    if deferred.active():  # dist.meta_init: each rank reads its own shards of these files later
        model = _deferred_transformers(pretrained, model_cls, config, attn_implementation)
        if model is not None:
            try:
                return model, AutoTokenizer.from_pretrained(pretrained)
            except (OSError, ValueError) as e:
                raise ModelBuildError(f"pretrained: cannot load '{pretrained}': {e}".splitlines()[0]) from e
    try:
        model = model_cls.from_pretrained(pretrained, attn_implementation=attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(pretrained)
    except (OSError, ValueError) as e:
        raise ModelBuildError(f"pretrained: cannot load '{pretrained}': {e}".splitlines()[0]) from e
    return model, tokenizer


def _snapshot(pretrained: str) -> Path | None:
    """The local directory of `pretrained` (a directory, or a hub id already in the local cache)."""
    local = Path(pretrained).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(pretrained, allow_patterns=["*.json", "*.safetensors"], local_files_only=True))
    except Exception:  # not cached, or not a hub id: the ordinary from_pretrained reports it
        return None


def _deferred_transformers(pretrained: str, model_cls: type, config, attn_implementation: str) -> nn.Module | None:
    """`model_cls(config)` with its parameters on the meta device and each one's place in the checkpoint's
    safetensors files recorded (`latbot.models.deferred`); the keys are mapped to parameter names with
    transformers' own conversion rules (renamings, the base-model prefix). None when the checkpoint needs
    more than renaming (fused or split tensors) or leaves a parameter out: the caller loads it the ordinary
    way then."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    from latbot.models import deferred

    directory = _snapshot(pretrained)
    files = deferred.safetensors_files(directory) if directory is not None else []
    if not files:
        return None
    config._attn_implementation = attn_implementation
    with deferred.parameters_on_meta():
        model = model_cls(config)
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    own = model.state_dict()
    located: dict[str, deferred.Located] = {}
    for key, loc in deferred.header_keys(files).items():
        target, converter = rename_source_key(key, renamings, converters, model.base_model_prefix, own)
        if converter is not None:
            return None
        if target in own:
            located[target] = loc
    for names in _aliases(model).values():  # tied parameters: found under any of their names
        found = next((located[n] for n in names if n in located), None)
        if found is None:
            return None
        located.update(dict.fromkeys(names, found))
    stored = deferred.shapes(located)
    for name, shape in stored.items():
        if shape != tuple(own[name].shape):
            raise ModelBuildError(
                f"pretrained: '{pretrained}' stores {name} as {list(shape)}, the model built from its config has "
                f"{list(own[name].shape)}; the checkpoint is damaged or was saved by another architecture"
            )
    deferred.record(model, located)
    return model.eval()  # as from_pretrained returns it


def _aliases(model: nn.Module) -> dict[int, list[str]]:
    """{id(parameter): every name it has} (tied parameters have several)."""
    out: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        out.setdefault(id(p), []).append(name)
    return out


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
