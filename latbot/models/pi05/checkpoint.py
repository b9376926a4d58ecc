"""Loading pi0.5 weights into the `pi05` student and expert: the file side of `pretrained: <dir>`.

Model code reads no files (docs/architecture.md): `architecture()` builds the student and expert
without weights, and the stages call `apply(student=…, expert=…)` (or `load_pi05(dir, student=…,
expert=…)`) after building the model. This module is, with latbot/models/loading.py, one of the two
sanctioned loaders of real weights under latbot/models/ (tests/test_architecture.py exempts both). A
directory is a LeRobot `pi05` checkpoint (`config.json` written by `PI05Policy.save_pretrained` and its
safetensors weights) or an openpi PyTorch conversion (the same tensor paths without `model.`). Every
tensor goes through the table of `latbot.models.pi05.keys`: a key the table does not know, a parameter of
a requested component the checkpoint lacks, or a shape that differs is an error listing them all. Tensors
keep their dtype (`load_state_dict(assign=True)`); only safetensors are read (nothing is unpickled).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latbot.errors import LatBotError
from latbot.models.pi05 import keys

CONFIG_FIELDS = (
    "type", "paligemma_variant", "action_expert_variant", "dtype", "chunk_size", "max_action_dim",
    "max_state_dim", "num_inference_steps", "time_sampling_beta_alpha", "time_sampling_beta_beta",
    "min_period", "max_period", "image_resolution", "tokenizer_max_length",
)  # fmt: skip


class PretrainedError(LatBotError):
    """A pretrained checkpoint cannot be loaded as configured."""


def read_pi05(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json fields, {key: tensor}) of a pi0.5 checkpoint directory."""
    from safetensors import safe_open

    root = Path(path).expanduser()
    files = sorted(root.glob("*.safetensors")) if root.is_dir() else []
    if not files:
        raise PretrainedError(
            f"pretrained: '{path}' is not a pi0.5 checkpoint directory (expected config.json and *.safetensors, "
            "e.g. a LeRobot pi05 checkpoint such as lerobot/pi05_base downloaded with `hf download`)"
        )
    config = json.loads((root / "config.json").read_text()) if (root / "config.json").is_file() else {}
    tensors = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                tensors[key] = st.get_tensor(key)
    return {k: config[k] for k in CONFIG_FIELDS if k in config}, tensors


def load_pi05(path: str | Path, *, student=None, expert=None) -> dict[str, Any]:
    """Load the checkpoint's VLM into `student` and its expert (layers, final norm, action and time
    projections) into `expert` (either may be None) → a report for the stage manifest."""
    config, tensors = read_pi05(path)
    mapped, dropped, unknown = keys.map_keys(tensors)
    if unknown:
        raise PretrainedError(f"pretrained: '{path}' holds {len(unknown)} tensor(s) pi0.5 does not have: {unknown}")
    report: dict[str, Any] = {"checkpoint": str(path), "config": config, "dropped": sorted(dropped)}
    for component, module in (("student", student), ("expert", expert)):
        if module is None:
            continue
        state = {name: tensors[key] for key, (comp, name) in mapped.items() if comp == component}
        own = module.state_dict()
        missing = sorted(n for n in own if n not in state and not keys.latbot_only(component, n))
        extra = sorted(n for n in state if n not in own)
        shapes = sorted(
            f"{n}: checkpoint {tuple(t.shape)} vs model {tuple(own[n].shape)}"
            for n, t in state.items()
            if n in own and t.shape != own[n].shape
        )
        if missing or extra or shapes:
            raise PretrainedError(
                f"pretrained: '{path}' does not fit the {component} as configured: missing {missing}, "
                f"not in the model {extra}, shapes differ {shapes}"
            )
        module.load_state_dict(state, strict=False, assign=True)
        components = sorted({keys.component_of(n) for n in state})
        report[component] = {
            "components": components,
            "tensors": len(state),
            "parameters": int(sum(t.numel() for t in state.values())),
            "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in state.values()}),
            "initialised_fresh": sorted(n for n in own if keys.latbot_only(component, n)),
        }
    return report


def apply(student=None, expert=None) -> dict[str, Any]:
    """Load `pretrained` of the given pi05 parts (their Config names the directory) → {part: report}; {}
    when none asks for weights. The stages call it right after building the model."""
    parts = {}
    for name, module in (("student", student), ("expert", expert)):
        path = getattr(getattr(module, "config", None), "pretrained", None)
        if path and getattr(module, "reads_prefix_cache", False):
            parts[name] = load_pi05(path, **{name: module})[name] | {"checkpoint": str(path)}
    return parts
