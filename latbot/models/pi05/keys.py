"""Where each tensor of a pi0.5 checkpoint goes in LatBot: the one mapping table, pure (no I/O).

LeRobot's `pi05` checkpoints (`PI05Policy.save_pretrained`: config.json + model.safetensors) name tensors
`model.<path>`; openpi's PyTorch conversion (examples/convert_jax_model_to_pytorch.py, `PI0Pytorch`'s
state dict) uses the same paths without the leading `model.` — both go through this table (the openpi
form is derived from openpi's module names, not from a file at hand). Destinations are parameter names
of the `pi05` student (latbot/models/pi05/student.py) and the `pi05` expert (pi05/expert.py); the
files are read by latbot/models/pi05/checkpoint.py.
"""

from __future__ import annotations

# (checkpoint prefix, component, LatBot prefix); a key takes the first row whose prefix it starts with
TABLE: tuple[tuple[str, str, str], ...] = (
    ("paligemma_with_expert.paligemma.model.vision_tower.", "student", "vlm.vision_tower."),
    ("paligemma_with_expert.paligemma.model.multi_modal_projector.", "student", "vlm.multi_modal_projector."),
    ("paligemma_with_expert.paligemma.model.language_model.", "student", "vlm.language_model."),
    ("paligemma_with_expert.gemma_expert.model.layers.", "expert", "layers."),
    ("paligemma_with_expert.gemma_expert.model.norm.", "expert", "norm."),
    ("action_in_proj.", "expert", "action_in_proj."),
    ("action_out_proj.", "expert", "action_out_proj."),
    ("time_mlp_in.", "expert", "time_mlp_in."),
    ("time_mlp_out.", "expert", "time_mlp_out."),
)

# tensors a checkpoint may hold that pi0.5 never uses, with the reason they are left out
DROPPED: dict[str, str] = {
    "paligemma_with_expert.paligemma.lm_head.weight": (
        "PaliGemma's LM head is tied to language_model.embed_tokens (openpi decodes with the embedding "
        "matrix; LatBot's reasoning loss does too)"
    ),
    "paligemma_with_expert.gemma_expert.lm_head.weight": (
        "the expert never decodes text (openpi's expert has no head; LeRobot's wrapper class allocates one)"
    ),
}

# what each component owns in LatBot but no pi0.5 checkpoint holds (initialised fresh, reported)
LATBOT_ONLY: dict[str, tuple[str, ...]] = {
    "student": ("scene_queries", "motion_queries", "latent_proj."),
    "expert": ("state_proj.", "gripper_head."),
}

# the pi0.5 components a manifest lists, by LatBot prefix
COMPONENTS: dict[str, str] = {
    "vlm.vision_tower.": "siglip",
    "vlm.multi_modal_projector.": "projector",
    "vlm.language_model.": "gemma_2b",
    "layers.": "expert_layers",
    "norm.": "expert_final_norm",
    "action_in_proj.": "action_in_proj",
    "action_out_proj.": "action_out_proj",
    "time_mlp_in.": "time_mlp",
    "time_mlp_out.": "time_mlp",
}


def canonical(key: str) -> str:
    """LeRobot's `model.<path>` or openpi's `<path>` → `<path>`."""
    return key.removeprefix("model.")


def map_keys(keys) -> tuple[dict[str, tuple[str, str]], dict[str, str], list[str]]:
    """Checkpoint keys → ({key: (component, LatBot name)}, {key: why dropped}, [unknown keys])."""
    mapped, dropped, unknown = {}, {}, []
    for key in keys:
        path = canonical(key)
        if path in DROPPED:
            dropped[key] = DROPPED[path]
            continue
        row = next((r for r in TABLE if path.startswith(r[0])), None)
        if row is None:
            unknown.append(key)
        else:
            mapped[key] = (row[1], row[2] + path.removeprefix(row[0]))
    return mapped, dropped, sorted(unknown)


def latbot_only(component: str, name: str) -> bool:
    return name.startswith(LATBOT_ONLY[component])


def component_of(name: str) -> str:
    return next((v for k, v in COMPONENTS.items() if name.startswith(k)), "other")


def to_checkpoint(component: str, name: str, prefix: str = "model.") -> str:
    """The inverse of `map_keys`: a LatBot parameter name of `component` → its checkpoint key (LeRobot's
    `model.<path>`; prefix "" for openpi's form). LatBot-only names have none (KeyError)."""
    if latbot_only(component, name):
        raise KeyError(f"{component} {name} is LatBot's own: no pi0.5 checkpoint holds it")
    row = next((r for r in TABLE if r[1] == component and name.startswith(r[2])), None)
    if row is None:
        raise KeyError(f"{component} {name} is not in the pi0.5 key table")
    return prefix + row[0] + name.removeprefix(row[2])
