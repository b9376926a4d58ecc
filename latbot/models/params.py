"""Parameter counts of a recipe's model without weights: built on the meta device (no memory), from the
architecture presets (a `pretrained` path is not read)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _count(module_or_params) -> dict[str, int]:
    params = list(module_or_params.parameters() if isinstance(module_or_params, nn.Module) else module_or_params)
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def _without_weights(config):
    fields = type(config).model_fields
    return config.model_copy(update={"pretrained": None}) if "pretrained" in fields else config


def parameter_report(recipe) -> dict[str, Any]:
    """{"total": {...}, "components": {name: {total, trainable, frozen}}} for the recipe's model."""
    if recipe.stage in ("distill", "finetune"):
        return _student_report(recipe)
    from latbot.models.lam import LatentActionModel

    model_cfg = recipe.model.model_copy(
        update={"encoder": _without_weights(recipe.model.encoder), "decoder": _without_weights(recipe.model.decoder)}
    )
    with torch.device("meta"):
        model = LatentActionModel(model_cfg, recipe.data.num_frames)
    parts: dict[str, nn.Module] = {}
    enc, dec = model.encoder, model.decoder
    vlm = getattr(enc, "vlm", None)
    if vlm is not None:
        parts |= {
            "encoder.vision_tower": vlm.vision_tower,
            "encoder.projector": vlm.multi_modal_projector,
            "encoder.language_model": vlm.language_model,
        }
    for name in ("transformer", "vae"):
        if isinstance(getattr(dec, name, None), nn.Module):
            parts[f"decoder.{name}"] = getattr(dec, name)
    components = {name: _count(m) for name, m in parts.items()}
    for owner, prefix in ((enc, "encoder"), (dec, "decoder")):
        covered = {id(p) for name, m in parts.items() if name.startswith(prefix) for p in m.parameters()}
        rest = [p for p in owner.parameters() if id(p) not in covered]
        label = f"{prefix}.other" if covered else prefix
        components[label] = _count(rest)
    return {"total": _count(model), "components": components}


def _student_report(recipe) -> dict[str, Any]:
    """Distillation: the student (the teacher is a LAM run, counted by its own recipe); finetuning: the
    student and the action expert. The student's projection to the teacher's width is not counted."""
    from latbot import registry

    m = recipe.model
    with torch.device("meta"):
        if recipe.stage == "finetune":
            from latbot.models.vla import VisionLanguageAction

            model = VisionLanguageAction(_without_weights(m.student), m.action_expert, m.action_horizon)
            student, expert = model.student, model.expert
        else:
            model = student = registry.build("students", _without_weights(m.student))
            expert = None
    parts = {
        "student.vision_tower": student.vlm.vision_tower,
        "student.projector": student.vlm.multi_modal_projector,
        "student.language_model": student.vlm.language_model,
    }
    components = {name: _count(mod) for name, mod in parts.items()}
    covered = {id(p) for mod in parts.values() for p in mod.parameters()}
    components["student.other"] = _count(p for p in student.parameters() if id(p) not in covered)
    if expert is not None:
        components["action_expert"] = _count(expert)
    return {"total": _count(model), "components": components}
