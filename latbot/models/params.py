"""Parameter counts of a recipe's model without weights: its stage's `architecture()` built on the meta device
(no memory; a `pretrained` path is not read), split into the parts the stage names (`Stage.components`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _count(module_or_params) -> dict[str, int]:
    params = list(module_or_params.parameters() if isinstance(module_or_params, nn.Module) else module_or_params)
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def parameter_report(stage) -> dict[str, Any]:
    """{"total": {...}, "components": {name: {total, trainable, frozen}}} for the model of `stage` (a stage
    object: `latbot.stages.Stage`)."""
    with torch.device("meta"):
        model = stage.architecture()
    components = {name: _count(part) for name, part in stage.components(model).items()}
    return {"total": _count(model), "components": components}
