"""`latbot export RUN --format lerobot`: a finetuned LatBot pi0.5 policy as a LeRobot 0.6 `pi05` checkpoint.

A finished finetuning run whose student and action expert are both `pi05` is written in the layout
`PI05Policy.save_pretrained` + its processor pipelines write (LeRobot 0.6.1)::

    OUT/config.json                      PI05Config: chunk size, image resolution, max_action_dim, flow settings,
                                         input features (one image per camera of the run, the state) and the action
    OUT/model.safetensors                keys `model.<path>`: the inverse of latbot/models/pi05/keys.py
    OUT/policy_preprocessor.json         rename → batch → normalise (q01/q99) → state bins in the prompt → tokenise
    OUT/policy_preprocessor_step_3_normalizer_processor.safetensors     the q01/q99 LeRobot normalises with
    OUT/policy_postprocessor.json        unnormalise (q01/q99) → CPU
    OUT/policy_postprocessor_step_0_unnormalizer_processor.safetensors
    OUT/latbot_export.json               what was carried and how (the dimension maps below), what was not
    OUT/tokenizer/                       only for a run on LatBot's local tiny tokenizer (tests, quickstart)

What LeRobot computes then equals what `LatBotPolicy` computes (docs/interop.md; checked by
tools/lerobot_export_check/ and tests/test_export_lerobot.py):

- The network: the student's VLM and the expert map tensor for tensor (`keys.TABLE` read backwards). The
  expert's packed action slots are permuted (rows of `action_out_proj`, columns of `action_in_proj`) so
  that LeRobot's slot j is the j-th exported action dimension. LeRobot's loader is strict, so the two LM
  heads it allocates are written too: PaliGemma's = the token embedding (tied), the expert's = zeros (pi0.5
  never decodes with it).
- The state: LatBot writes the valid unified state dims, normalised with the store's q01/q99, as 256 bins
  into the prompt; LeRobot's pipeline writes its `observation.state`, normalised with the exported q01/q99,
  the same way. `--space native`: `observation.state` is the embodiment's native state, which must convert
  to the unified dims one by one and affinely (u = a·n + b, in the same order); the exported quantiles are
  then (q − b)/a, so the bins are the same (a < 0 gives q01 > q99, which LeRobot's formula takes as it is).
  `--space unified`: `observation.state` is the valid unified dims, the run's quantiles as they are.
- The actions: LatBot unnormalises the unified chunk, thresholds each gripper at the middle of its
  normalised range and converts with `actions_to_native`; LeRobot unnormalises the action slots. Native:
  each native action dim must be an affine function a·u + b of one unified dim (quantiles a·q + b), and a
  gripper a two-valued command (c_open, c_closed) of the unified gripper: it is exported with quantiles
  (c_open, c_closed), so LeRobot's continuous value crosses the middle (c_open + c_closed)/2 exactly where
  LatBot switches; LeRobot does not threshold it (a client that wants LatBot's command thresholds there).
  Unified: the valid unified dims, the gripper in [0, 1] with its threshold at 0.5.

The conversions are found by probing the embodiment (`latbot.data.embodiments`): the native state at
values in [0, 1], the unified actions at values in [−0.5, 0.5] (grippers at 0 and 1), one dimension at a
time and at random points; a conversion that is not per-dimension affine is refused for `--space native`.

Refused (exit 2, one line, nothing written): a run that is not a finished finetuning run; a student or
expert that is not `pi05`; LatBot-only parts that change the actions and that LeRobot's PI05Policy has no
place for — distilled latent query tokens in the student's prefix (the action tokens attend to them), the
expert's continuous state token (`state_proj`), a policy trained without state (LeRobot's pi05 always
writes the state into the prompt) — and a `--space native` whose conversions are not affine. Not carried
because it does not change the actions: the student's latent projection (`latent_proj`, distillation only).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latbot.errors import LatBotError

FORMATS = ("lerobot",)
SPACES = ("native", "unified")
RECORD = "latbot_export.json"
LEROBOT_VERSION = "0.6.1"  # the version whose layout is written and that tools/lerobot_export_check runs
PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"  # LeRobot's pi05 processor hard-codes it
NORMALIZER_FILE = "policy_preprocessor_step_3_normalizer_processor.safetensors"
UNNORMALIZER_FILE = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
# what LeRobot 0.6.1's pi05 builds: Gemma variants as (width, mlp, query rows = 8 × 256, key rows = 1 × 256,
# depth), SigLIP So400m/14 as (width, mlp, depth, patch), PaliGemma's vocabulary
GEMMA_VARIANTS = {"gemma_300m": (1024, 4096, 2048, 256, 18), "gemma_2b": (2048, 16384, 2048, 256, 18)}
PI05_VISION = (1152, 4304, 27, 14)
PI05_VOCAB = 257152
PROBE_STEP = 1e-6  # a probed output that moves less than this did not move
PROBE_TOL = 1e-5  # relative error allowed of an affine fit (the embodiments compute in float32)


class ExportError(LatBotError):
    """A run that cannot be written as a LeRobot policy without changing what it predicts."""


@dataclass(frozen=True)
class Dim:
    """One exported dimension of `observation.state` or `action`: the unified dimension it is, and the map
    in the direction LatBot converts — state: unified = slope · native + offset; action: native = slope ·
    unified + offset, or for a gripper the native (open, closed) commands of unified 0 and 1."""

    unified: int
    name: str
    slope: float = 1.0
    offset: float = 0.0
    gripper: tuple[float, float] | None = None


@dataclass
class Plan:
    """Everything an export writes, decided before anything is written."""

    run: Any
    space: str
    target: dict[str, Any]
    state: list[Dim]
    action: list[Dim]
    slots: list[int]  # LeRobot action slot j = LatBot packed slot slots[j]
    tensors: dict[str, Any]  # LeRobot key → tensor
    config: dict[str, Any]
    stats: dict[str, Any]  # "observation.state.q01" … → float32 tensors
    not_carried: dict[str, str]
    warnings: list[str]
    tokenizer: Any | None  # LatBot's local tokenizer, when the run has no named one


# -- the public entry ------------------------------------------------------------------------------------
def export_lerobot(run_dir: str | Path, out: str | Path, space: str = "native") -> dict[str, Any]:
    """Write the finetuned pi0.5 policy of `run_dir` as a LeRobot pi05 checkpoint into `out` (new or empty)
    → the record written as latbot_export.json. Every refusal is an `ExportError` before `out` is touched."""
    out = Path(out)
    _check_out(out)
    plan = plan_export(run_dir, space)
    return _write(plan, out)


def plan_export(run_dir: str | Path, space: str = "native") -> Plan:
    """Check the run and compute the export (tensors, config, statistics); writes nothing."""
    from latbot import runs

    if space not in SPACES:
        raise ExportError(f"--space {space!r}: expected one of {list(SPACES)}")
    run = runs.open_run(run_dir)
    if run.kind != "finetune":
        raise ExportError(
            f"{run_dir}: a '{run.kind}' run holds no policy; only pi0.5 policies have a LeRobot counterpart "
            "(export a finetuning run whose student and action expert are `pi05`)"
        )
    model = run.recipe.model
    student, expert = model.student, model.action_expert
    if student.type != "pi05" or expert.type != "pi05":
        raise ExportError(
            f"{run_dir}: student '{student.type}' with action expert '{expert.type}': only pi0.5 policies have a "
            "LeRobot counterpart (a finetuning run whose student and action expert are both `pi05`)"
        )
    target = run.extra["target"]
    lossy = _lossy_parts(student, expert, target)
    if lossy:
        raise ExportError(f"{run_dir}: LeRobot's PI05Policy would predict other actions: " + "; ".join(lossy))
    state, action = _dimension_maps(target, space, str(run_dir))
    weights = run.state_dict()
    tensors, slots, not_carried = _tensors(weights, action, np.asarray(target["action_mask"], bool), str(run_dir))
    sizes = _sizes(tensors)
    warns = _size_warnings(sizes, target)
    stats = _stats(target, state, action)
    tokenizer = None
    if student.tokenizer is None:
        tokenizer = _local_tokenizer(student)
    config = _config(run, state, action, sizes, tensors)
    return Plan(run, space, target, state, action, slots, tensors, config, stats, not_carried, warns, tokenizer)


# -- what cannot be carried ------------------------------------------------------------------------------
def _lossy_parts(student, expert, target: dict) -> list[str]:
    problems = []
    queries = student.num_scene_tokens + student.num_motion_tokens
    if queries:
        problems.append(
            f"the student has {queries} distilled latent query tokens (num_scene_tokens {student.num_scene_tokens}, "
            f"num_motion_tokens {student.num_motion_tokens}) in its prefix, which the action tokens attend to, and "
            "LeRobot's pi05 prefix has only images and the prompt (only a student without latent queries, e.g. "
            "recipes/*/baseline_pi05.yaml, can be exported)"
        )
    if expert.state == "continuous":
        problems.append(
            "the action expert reads the state as a continuous token (state: continuous, its `state_proj`), which "
            "LeRobot's pi05 does not have (it writes the state into the prompt: state: discrete)"
        )
    elif expert.state == "none":
        problems.append(
            "the policy was trained without the state (action_expert.state: none), and LeRobot's pi05 always writes "
            "the state into the prompt"
        )
    elif not any(target["state_mask"]):
        problems.append("the training data has no state, and LeRobot's pi05 always writes the state into the prompt")
    return problems


# -- the dimension maps ------------------------------------------------------------------------------------
def _dim_name(d: int, slices: dict[str, slice]) -> str:
    for name, s in slices.items():
        if s.start <= d < s.stop:
            return f"{name}[{d - s.start}]" if s.stop - s.start > 1 else name
    return f"dim {d}"


def _dimension_maps(target: dict, space: str, where: str) -> tuple[list[Dim], list[Dim]]:
    from latbot.data.spaces import ACTION_SLICES, GRIPPER_DIMS, STATE_SLICES

    state_valid = np.flatnonzero(np.asarray(target["state_mask"], bool))
    action_valid = np.flatnonzero(np.asarray(target["action_mask"], bool))
    if space == "unified":
        state = [Dim(int(d), _dim_name(d, STATE_SLICES)) for d in state_valid]
        action = [
            Dim(int(d), _dim_name(d, ACTION_SLICES), gripper=(0.0, 1.0) if d in GRIPPER_DIMS else None)
            for d in action_valid
        ]
        return state, action
    from latbot.policy import embodiments

    emb = embodiments.get(target["embodiment"])
    state, state_problems = _probe_state(emb, state_valid)
    action, action_problems = _probe_actions(emb, action_valid)
    problems = state_problems + action_problems
    if problems:
        raise ExportError(
            f"{where}: embodiment '{emb.name}' does not convert to the unified space one dimension at a time, "
            f"affinely ({'; '.join(problems)}), so LeRobot's per-dimension q01/q99 cannot reproduce it; export "
            "with --space unified (the LeRobot policy then reads and writes the unified dims; docs/interop.md)"
        )
    return state, action


def _probe_state(emb, valid: np.ndarray) -> tuple[list[Dim], list[str]]:
    """Native state dim j → unified dim valid[j] as u = a·n + b, probed on [0, 1]."""
    from latbot.data.spaces import STATE_SLICES

    s = emb.native_state_dim
    if s != len(valid):
        return [], [f"{s} native state dims for {len(valid)} unified ones"]

    def f(x):
        return np.asarray(emb.states_to_unified(np.asarray(x, np.float32)), np.float64)

    base = np.full(s, 0.5)
    dims, problems = [], []
    for j in range(s):
        lo, hi = base.copy(), base.copy()
        lo[j], hi[j] = 0.25, 0.75
        u = f(np.stack([lo, hi, base]))
        moved = [int(d) for d in valid if abs(u[1, d] - u[0, d]) > PROBE_STEP]
        if len(moved) != 1:
            problems.append(f"native state[{j}] moves {len(moved)} unified dims")
            continue
        d = moved[0]
        a = (u[1, d] - u[0, d]) / 0.5
        dims.append(Dim(d, _dim_name(d, STATE_SLICES), a, u[2, d] - a * 0.5))
    if problems:
        return [], problems
    if [x.unified for x in dims] != [int(d) for d in valid]:
        return [], ["the native state lists the unified dims in another order than the prompt does"]
    x = np.random.default_rng(0).uniform(0, 1, (64, s))
    u = f(x)
    for j, dim in enumerate(dims):
        err = np.abs(u[:, dim.unified] - (dim.slope * x[:, j] + dim.offset)).max()
        if err > PROBE_TOL * (1 + np.abs(u[:, dim.unified]).max()):
            problems.append(f"native state[{j}] → {dim.name} is not affine")
    return dims, problems


def _probe_actions(emb, valid: np.ndarray) -> tuple[list[Dim], list[str]]:
    """Native action dim j = a·u + b of one valid unified dim (probed on [−0.5, 0.5]), or a gripper's two
    commands at unified 0 and 1 (what LatBotPolicy hands `actions_to_native` after its threshold)."""
    from latbot.data.spaces import ACTION_DIM, ACTION_SLICES, GRIPPER_DIMS

    n = emb.native_action_dim

    def f(u):
        return np.asarray(emb.actions_to_native(np.asarray(u, np.float32)), np.float64)

    base = np.zeros(ACTION_DIM)
    found: dict[int, list[Dim]] = {}
    problems = []
    for d in (int(d) for d in valid):
        lo, hi = base.copy(), base.copy()
        grip = d in GRIPPER_DIMS
        lo[d], hi[d] = (0.0, 1.0) if grip else (-0.25, 0.25)
        out = f(np.stack([lo, hi, base]))
        moved = np.flatnonzero(np.abs(out[1] - out[0]) > PROBE_STEP)
        name = _dim_name(d, ACTION_SLICES)
        if len(moved) != 1:
            problems.append(f"unified {name} moves {len(moved)} native action dims")
            continue
        j = int(moved[0])
        if grip:
            dim = Dim(d, name, gripper=(float(out[0, j]), float(out[1, j])))
        else:
            dim = Dim(d, name, (out[1, j] - out[0, j]) / 0.5, out[2, j])
        found.setdefault(j, []).append(dim)
    for j in range(n):
        if len(found.get(j, [])) != 1:
            problems.append(f"native action[{j}] comes from {len(found.get(j, []))} unified dims")
    if problems:
        return [], problems
    dims = [found[j][0] for j in range(n)]
    rng = np.random.default_rng(0)
    u = np.zeros((64, ACTION_DIM))
    for dim in dims:
        u[:, dim.unified] = rng.integers(0, 2, 64) if dim.gripper else rng.uniform(-0.5, 0.5, 64)
    out = f(u)
    for j, dim in enumerate(dims):
        x = u[:, dim.unified]
        want = np.where(x > 0.5, dim.gripper[1], dim.gripper[0]) if dim.gripper else dim.slope * x + dim.offset
        if np.abs(out[:, j] - want).max() > PROBE_TOL * (1 + np.abs(want).max()):
            problems.append(f"native action[{j}] is not an affine function of unified {dim.name}")
    return dims, problems


# -- the tensors ---------------------------------------------------------------------------------------
def _lerobot_key(component: str, name: str) -> str | None:
    """LatBot parameter → LeRobot key: the table of latbot/models/pi05/keys.py, read backwards."""
    from latbot.models.pi05 import keys

    for prefix, comp, ours in keys.TABLE:
        if comp == component and name.startswith(ours):
            return "model." + prefix + name.removeprefix(ours)
    return None


def _tensors(weights: dict, action: list[Dim], action_mask: np.ndarray, where: str):
    """The run's weights → (LeRobot tensors, slot permutation, {LatBot-only tensor: why not carried})."""
    import torch

    from latbot.models.pi05 import keys

    out, source, not_carried, unknown = {}, {}, {}, []
    for full, tensor in weights.items():
        component, _, name = full.partition(".")
        component = {"student": "student", "expert": "expert"}.get(component)
        if component is None:
            unknown.append(full)
            continue
        if keys.latbot_only(component, name):
            if tensor.numel():
                not_carried[full] = _why_not_carried(name)
            continue
        key = _lerobot_key(component, name)
        if key is None:
            unknown.append(full)
        else:
            out[key], source[key] = tensor, (component, name)
    if unknown:
        raise ExportError(f"{where}: the run holds tensors with no place in LeRobot's pi05: {sorted(unknown)[:8]}")
    mapped, _, _ = keys.map_keys(out)  # the forward table (what LatBot loads with) must send every key back
    if mapped != source:
        raise RuntimeError(f"keys.TABLE is not invertible: {sorted(set(mapped.items()) ^ set(source.items()))[:4]}")

    # the expert's packed slots: LatBot's slot k holds the k-th valid unified dim; LeRobot's slot j the j-th
    # exported dim, so slot j = LatBot slot slots[j]
    order = [int(d) for d in np.flatnonzero(action_mask)]
    p = out["model.action_in_proj.weight"].shape[1]
    head = [order.index(dim.unified) for dim in action]
    slots = head + [k for k in range(p) if k not in head]
    idx = torch.tensor(slots)
    out["model.action_in_proj.weight"] = out["model.action_in_proj.weight"][:, idx].contiguous()
    for name in ("model.action_out_proj.weight", "model.action_out_proj.bias"):
        out[name] = out[name][idx].contiguous()

    # LeRobot loads strictly: the LM heads its classes allocate (DROPPED in keys.py) are written too
    embed = out["model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"]
    width = out["model.action_in_proj.weight"].shape[0]
    out["model.paligemma_with_expert.paligemma.lm_head.weight"] = embed.clone()
    out["model.paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.zeros(
        embed.shape[0], width, dtype=embed.dtype
    )
    return {k: v.contiguous() for k, v in sorted(out.items())}, slots, not_carried


def _why_not_carried(name: str) -> str:
    if name.startswith("latent_proj."):
        return "the student's projection of its latents to the teacher's width: distillation only, no effect on actions"
    return "LatBot-only, no effect on this policy's actions"


def _sizes(tensors: dict) -> dict[str, Any]:
    """The model's dimensions, read from the tensors: (width, mlp, depth[, query rows, key rows]) per stack."""
    vlm = "model.paligemma_with_expert.paligemma.model."
    vision = vlm + "vision_tower.vision_model."
    text, expert = vlm + "language_model.", "model.paligemma_with_expert.gemma_expert.model."

    def depth(prefix):
        return len({k.removeprefix(prefix).split(".")[0] for k in tensors if k.startswith(prefix)})

    def gemma(prefix):
        layer = prefix + "layers.0."
        width = tensors[layer + "mlp.gate_proj.weight"].shape[1]
        mlp = tensors[layer + "mlp.gate_proj.weight"].shape[0]
        q, k = (tensors[layer + f"self_attn.{x}_proj.weight"].shape[0] for x in "qk")
        return (width, mlp, q, k, depth(prefix + "layers."))

    patches = tensors[vision + "embeddings.position_embedding.weight"].shape[0]
    patch_weight = tensors[vision + "embeddings.patch_embedding.weight"]
    fc1 = tensors[vision + "encoder.layers.0.mlp.fc1.weight"]
    return {
        "image_size": math.isqrt(patches) * patch_weight.shape[-1],
        "vision": (patch_weight.shape[0], fc1.shape[0], depth(vision + "encoder.layers."), patch_weight.shape[-1]),
        "vlm": gemma(text),
        "expert": gemma(expert),
        "vocab": tensors[text + "embed_tokens.weight"].shape[0],
        "action_dim": tensors["model.action_in_proj.weight"].shape[1],
    }


def _variant(dims: tuple) -> str | None:
    return next((name for name, v in GEMMA_VARIANTS.items() if v == dims), None)


def _size_warnings(sizes: dict, target: dict) -> list[str]:
    warns = []
    standard = sizes["vision"] == PI05_VISION and sizes["vocab"] == PI05_VOCAB and _variant(sizes["vlm"]) == "gemma_2b"
    if not standard or _variant(sizes["expert"]) is None:
        warns.append(
            f"the model is not pi0.5's size (VLM (width, mlp, q rows, kv rows, depth) {sizes['vlm']}, expert "
            f"{sizes['expert']}): LeRobot's PI05Policy builds only PaliGemma (SigLIP So400m/14 + gemma_2b) with a "
            "gemma_300m or gemma_2b expert, so it loads these tensors only with its builders patched "
            "(tools/lerobot_export_check does)"
        )
    s = sizes["image_size"]
    if list(target["image_size"]) != [s, s]:
        warns.append(
            f"the run was trained on {target['image_size'][0]}×{target['image_size'][1]} images and its model reads "
            f"{s}×{s}: LatBot resizes (stretch, then bicubic) and LeRobot resizes with padding, so only {s}×{s} inputs "
            "give both the same pixels"
        )
    return warns


# -- normalisation -------------------------------------------------------------------------------------
def _effective_quantiles(stats: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """LatBot's QuantileNormalizer per dim as (q01, q99); a pass-through dim (no statistics, or a degenerate
    range) is the identity, which is the quantile map with (−1, 1)."""
    from latbot.data.normalize import QuantileNormalizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate dims were reported when the policy was trained
        norm = QuantileNormalizer.from_stats(stats, key)
    lo = np.where(norm.passthrough, -1.0, norm.lo)
    return lo, lo + np.where(norm.passthrough, 2.0, norm.span)


def _stats(target: dict, state: list[Dim], action: list[Dim]) -> dict[str, Any]:
    """The q01/q99 LeRobot's (un)normaliser must use to reproduce LatBot's: state (q − b)/a of the unified
    quantiles, actions a·q + b, grippers (c_open, c_closed)."""
    import torch

    s_lo, s_hi = _effective_quantiles(target["stats"], "states")
    a_lo, a_hi = _effective_quantiles(target["stats"], "actions")
    sq = [[(s_lo[d.unified] - d.offset) / d.slope, (s_hi[d.unified] - d.offset) / d.slope] for d in state]
    aq = [
        list(d.gripper) if d.gripper else [d.slope * a_lo[d.unified] + d.offset, d.slope * a_hi[d.unified] + d.offset]
        for d in action
    ]
    out = {}
    for key, q in (("observation.state", sq), ("action", aq)):
        arr = np.asarray(q, np.float64).reshape(-1, 2)
        out[f"{key}.q01"] = torch.tensor(arr[:, 0], dtype=torch.float32)
        out[f"{key}.q99"] = torch.tensor(arr[:, 1], dtype=torch.float32)
    return out


# -- LeRobot's files -------------------------------------------------------------------------------------
def _features(target: dict, state: list[Dim], action: list[Dim], image: int) -> tuple[dict, dict]:
    inputs = {f"observation.images.{c}": {"type": "VISUAL", "shape": [3, image, image]} for c in target["cameras"]}
    inputs["observation.state"] = {"type": "STATE", "shape": [len(state)]}
    return inputs, {"action": {"type": "ACTION", "shape": [len(action)]}}


def _config(run, state: list[Dim], action: list[Dim], sizes: dict, tensors: dict) -> dict[str, Any]:
    """PI05Config as LeRobot 0.6.1's `save_pretrained` writes it (same fields, same order)."""
    import torch

    model = run.recipe.model
    student, expert = model.student, model.action_expert
    inputs, outputs = _features(run.extra["target"], state, action, sizes["image_size"])
    floats = {t.dtype for t in tensors.values() if t.is_floating_point()}
    s = sizes["image_size"]
    return {
        "type": "pi05",
        "n_obs_steps": 1,
        "input_features": inputs,
        "output_features": outputs,
        "device": "cpu",
        "use_amp": False,
        "use_peft": False,
        "push_to_hub": True,
        "repo_id": None,
        "private": None,
        "tags": None,
        "license": None,
        "pretrained_path": None,
        "pretrained_revision": None,
        "paligemma_variant": "gemma_2b",
        "action_expert_variant": _variant(sizes["expert"]) or "gemma_300m",
        "dtype": "bfloat16" if floats == {torch.bfloat16} else "float32",
        "chunk_size": model.action_horizon,
        "n_action_steps": model.action_horizon,
        "max_state_dim": max(32, len(state)),
        "max_action_dim": sizes["action_dim"],
        "num_inference_steps": expert.num_steps,
        "time_sampling_beta_alpha": expert.time_alpha,
        "time_sampling_beta_beta": expert.time_beta,
        "time_sampling_scale": 0.999,
        "time_sampling_offset": 0.001,
        "min_period": expert.min_period,
        "max_period": expert.max_period,
        "use_relative_actions": False,
        "relative_exclude_joints": ["gripper"],
        "action_feature_names": None,
        "rtc_config": None,
        "image_resolution": [s, s],
        "empty_cameras": 0,
        "tokenizer_max_length": student.max_text_tokens,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"},
        "gradient_checkpointing": False,
        "compile_model": False,
        "compile_mode": "max-autotune",
        "freeze_vision_encoder": bool(student.freeze_vision),
        "train_expert_only": False,
        "optimizer_lr": 2.5e-05,
        "optimizer_betas": [0.9, 0.95],
        "optimizer_eps": 1e-08,
        "optimizer_weight_decay": 0.01,
        "optimizer_grad_clip_norm": 1.0,
        "scheduler_warmup_steps": 1000,
        "scheduler_decay_steps": 30000,
        "scheduler_decay_lr": 2.5e-06,
    }


def _processors(config: dict, tokenizer_name: str) -> tuple[dict, dict]:
    """policy_preprocessor.json and policy_postprocessor.json as `make_pi05_pre_post_processors` saves them."""
    norm_map = config["normalization_mapping"]
    features = {**config["input_features"], **config["output_features"]}
    device = {"registry_name": "device_processor", "config": {"device": config["device"], "float_dtype": None}}
    pre = {
        "name": "policy_preprocessor",
        "steps": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            {
                "registry_name": "relative_actions_processor",
                "config": {"enabled": False, "exclude_joints": ["gripper"], "action_names": None},
            },
            {
                "registry_name": "normalizer_processor",
                "config": {"eps": 1e-08, "features": features, "norm_map": norm_map},
                "state_file": NORMALIZER_FILE,
            },
            {"registry_name": "pi05_prepare_state_tokenizer_processor_step", "config": {}},
            {
                "registry_name": "tokenizer_processor",
                "config": {
                    "max_length": config["tokenizer_max_length"],
                    "task_key": "task",
                    "padding_side": "right",
                    "padding": "max_length",
                    "truncation": True,
                    "tokenizer_name": tokenizer_name,
                },
            },
            device,
        ],
    }
    post = {
        "name": "policy_postprocessor",
        "steps": [
            {
                "registry_name": "unnormalizer_processor",
                "config": {"eps": 1e-08, "features": config["output_features"], "norm_map": norm_map},
                "state_file": UNNORMALIZER_FILE,
            },
            {"registry_name": "absolute_actions_processor", "config": {"enabled": False}},
            device,
        ],
    }
    return pre, post


def _local_tokenizer(student_config):
    """LatBot's local tokenizer (tiny / mini presets), made to add <bos> itself as PaliGemma's does: LeRobot
    tokenises the prompt with special tokens, LatBot prepends <bos> to it."""
    from tokenizers import processors

    from latbot import registry

    tok = registry.build("students", student_config).tokenizer
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)]
    )
    return tok


# -- writing -----------------------------------------------------------------------------------------------
def _check_out(out: Path) -> None:
    from latbot.ownership import claim, enclosing_artifact

    try:
        claim(out, ())
    except LatBotError as e:
        raise ExportError(str(e)) from None
    inside = enclosing_artifact(out)
    if inside is not None:
        raise ExportError(
            f"--out {out}: lies inside the '{inside[1]}' artifact {inside[0]}; writing there would change it; "
            "choose a path outside it"
        )


def _record(plan: Plan) -> dict[str, Any]:
    from latbot import __version__

    run = plan.run
    return {
        "format": "lerobot",
        "lerobot_version": LEROBOT_VERSION,
        "latbot_version": __version__,
        "source_run": str(run.path),
        "source_content_hash": run.manifest.content_hash,
        "space": plan.space,
        "embodiment": plan.target["embodiment"],
        "cameras": list(plan.target["cameras"]),
        "state": [_dim_record(d) for d in plan.state],
        "action": [_dim_record(d) for d in plan.action],
        "action_slots": plan.slots,
        "not_carried": plan.not_carried,
        "warnings": plan.warnings,
    }


def _dim_record(d: Dim) -> dict[str, Any]:
    if d.gripper is None:
        return {k: v for k, v in asdict(d).items() if k != "gripper"}
    return {"unified": d.unified, "name": d.name, "gripper": list(d.gripper), "threshold": sum(d.gripper) / 2}


def _write(plan: Plan, out: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    final = out.resolve()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".export-tmp", dir=out.parent))
    try:
        tokenizer_name = plan.run.recipe.model.student.tokenizer or PALIGEMMA_TOKENIZER
        if plan.tokenizer is not None:
            plan.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            tokenizer_name = str(final / "tokenizer")
        save_file(plan.tensors, str(tmp / "model.safetensors"))
        save_file(plan.stats, str(tmp / NORMALIZER_FILE))
        save_file(plan.stats, str(tmp / UNNORMALIZER_FILE))
        pre, post = _processors(plan.config, tokenizer_name)
        record = _record(plan)
        for name, data in (
            ("config.json", plan.config),
            ("policy_preprocessor.json", pre),
            ("policy_postprocessor.json", post),
            (RECORD, record),
        ):
            (tmp / name).write_text(json.dumps(data, indent=4) + "\n")
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)  # mkdtemp made it private
        if out.exists():
            out.rmdir()  # empty (claimed above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record
