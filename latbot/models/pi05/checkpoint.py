"""pi0.5 checkpoints in LatBot: the sizes (`preset: checkpoint`) and the weights (`pretrained: <dir>`) of the
`pi05` student and expert — the file side of both.

Model code reads no files (docs/architecture.md): `architecture()` builds the student and expert without
weights, from sizes the recipe states. This module is, with latbot/models/loading.py, one of the two
sanctioned loaders of real weights under latbot/models/ (tests/test_architecture.py exempts both). A
directory is a LeRobot `pi05` checkpoint (`config.json` written by `PI05Policy.save_pretrained` and its
safetensors weights) or openpi's own PyTorch checkpoint (the same tensor paths without `model.`, PaliGemma's
tied embedding stored once as its LM head — openpi_keys.py — and a small config.json whose names are
translated: OPENPI_CONFIG). Only safetensors are read (nothing is unpickled).

Two steps, both called by the stages (distill, finetune):

- `resolve(student=…, expert=…)`, from the stage's `prepare` (before the run directory exists): reads
  config.json and the safetensors *headers* (shapes and dtypes, no tensor). A part with `preset:
  checkpoint` gets every size from the checkpoint (rules below) and comes back as `preset: custom` with
  those sizes, so the recipe the run records is explicit (serving, evaluation, resuming and a finetuning
  child need not the checkpoint to rebuild the model). Every part that loads `pretrained` — whatever its
  preset — is then checked tensor by tensor against the model its sizes build (on the meta device): the
  first mismatching tensor is one line (its checkpoint key, its shape, the expected shape).
- `apply(student=…, expert=…)` (or `load_pi05(dir, student=…, expert=…)`), from the stage's `initialise`:
  loads the tensors through the one table of `latbot.models.pi05.keys`. A key the table does not know,
  a parameter of a requested part the checkpoint lacks, or a shape that differs is one `PretrainedError`;
  tensors keep their dtype (`load_state_dict(assign=True)`).

Where each size comes from (`preset: checkpoint`). LeRobot's config.json names Gemma variants
(`paligemma_variant`, `action_expert_variant`) whose sizes LeRobot's own code fixes, plus a few numbers
(`image_resolution`, `max_action_dim`, `chunk_size`, …). So:

1. a size the recipe states (a field of the student's `dims`, an expert size field that is not null) is
   used as stated — and checked against the tensors like every other;
2. a size the tensors determine comes from them, each voted by every tensor that carries it (widths from
   the embeddings, norms and projections, MLP sizes from gate_proj / fc1, depths from the layer indices,
   the vocabulary from embed_tokens, the patch from the patch embedding, the image side from the position
   table, the action width from action_in_proj) — so one corrupted tensor is outvoted and named;
3. what neither holds is the variant's published value: Gemma's 8 query heads (every pi0.5 variant;
   LeRobot's shared attention reshapes to 8 heads), from which head_dim and the KV heads follow from
   q_proj and k_proj; SigLIP So400m/14's 16 heads when the vision tower has So400m's sizes (a resized
   tower's head count must be stated: `dims.vision_heads`); a part absent from the tensors takes the
   variant's sizes;
4. config.json's numbers are checked against the tensors that carry them (`image_resolution` against the
   position table, `max_action_dim` against action_in_proj); `chunk_size` is reported (the chunk length
   is the recipe's `model.action_horizon`: pi0.5's weights do not depend on it, and finetuning often
   changes it — openpi's pi05_libero uses 10 where pi05_base has 50); the expert's null flow settings
   come from `num_inference_steps`, the Beta time parameters and the time embedding's periods (pi0.5's
   values where config.json has none). A checkpoint whose tensors are not its variants' sizes (one made
   with patched builders, as tests/fixtures/pi05_tiny) loads by its tensors; the report says so.

The expert's heads, KV heads and head width are the VLM's (shared attention); its depth must be the VLM's.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from math import isqrt
from pathlib import Path
from typing import Any

from latbot.errors import LatBotError, RecipeError
from latbot.models.pi05 import keys, openpi_keys

CONFIG_FIELDS = (
    "type", "paligemma_variant", "action_expert_variant", "dtype", "chunk_size", "max_action_dim",
    "max_state_dim", "num_inference_steps", "time_sampling_beta_alpha", "time_sampling_beta_beta",
    "min_period", "max_period", "image_resolution", "tokenizer_max_length",
)  # fmt: skip

# the sizes config.json's variant names stand for (openpi gemma.py `get_config`; LeRobot modeling_pi05.py
# `get_gemma_config` has gemma_2b and gemma_300m): width, depth, mlp_dim, heads, kv_heads, head_dim
GEMMA_VARIANTS: dict[str, tuple[int, int, int, int, int, int]] = {
    "gemma_2b": (2048, 18, 16384, 8, 1, 256),
    "gemma_2b_lora": (2048, 18, 16384, 8, 1, 256),
    "gemma_300m": (1024, 18, 4096, 8, 1, 256),
    "gemma_300m_lora": (1024, 18, 4096, 8, 1, 256),
    "dummy": (64, 4, 128, 8, 1, 16),
}
GEMMA_FIELDS = ("width", "depth", "mlp_dim", "heads", "kv_heads", "head_dim")
# PaliGemma's vision tower in openpi and LeRobot, whatever the variant (LeRobot: transformers' defaults)
SO400M = {"vision_width": 1152, "vision_mlp_dim": 4304, "vision_depth": 27, "vision_heads": 16, "patch_size": 14}
PALIGEMMA_VOCAB = 257152
PI05_HEADS = 8
EXPERT_SIZES = ("width", "mlp_dim", "heads", "kv_heads", "head_dim", "action_dim")
# config.json's flow settings → the expert's fields (taken where the recipe states none)
EXPERT_SETTINGS = (
    ("num_inference_steps", "num_steps"),
    ("time_sampling_beta_alpha", "time_alpha"),
    ("time_sampling_beta_beta", "time_beta"),
    ("min_period", "min_period"),
    ("max_period", "max_period"),
)

# canonical tensor paths (no `model.`)
_V = "paligemma_with_expert.paligemma.model.vision_tower.vision_model."
_LM = "paligemma_with_expert.paligemma.model.language_model."
_PROJ = "paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight"
_EX = "paligemma_with_expert.gemma_expert.model."
_LAYER = r"layers\.\d+\."


class PretrainedError(LatBotError):
    """A pretrained checkpoint cannot be loaded as configured."""


# -- reading ----------------------------------------------------------------------------------------------
def _root(path: str | Path) -> tuple[Path, list[Path]]:
    root = Path(path).expanduser()
    files = sorted(root.glob("*.safetensors")) if root.is_dir() else []
    if not files:
        raise PretrainedError(
            f"pretrained: '{path}' is not a pi0.5 checkpoint directory (expected config.json and *.safetensors, "
            "e.g. a LeRobot pi05 checkpoint such as lerobot/pi05_base downloaded with `hf download`)"
        )
    return root, files


# openpi's conversion writes a small config.json of its own: its names → LeRobot's
OPENPI_CONFIG = {"action_dim": "max_action_dim", "action_horizon": "chunk_size", "precision": "dtype"}


def _config(root: Path) -> dict[str, Any]:
    """config.json with LeRobot's field names (openpi's reference config.json translated); {} without one."""
    f = root / "config.json"
    config = json.loads(f.read_text()) if f.is_file() else {}
    return {OPENPI_CONFIG.get(k, k) if OPENPI_CONFIG.get(k, k) not in config else k: v for k, v in config.items()}


def read_pi05(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json fields, {key: tensor}) of a pi0.5 checkpoint directory."""
    from safetensors import safe_open

    root, files = _root(path)
    config = _config(root)
    tensors = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                tensors[key] = st.get_tensor(key)
    # openpi's files keep PaliGemma's tied input embedding only as its LM head (openpi_keys.py)
    return {k: config[k] for k in CONFIG_FIELDS if k in config}, openpi_keys.to_lerobot_keys(tensors)


@dataclass(frozen=True)
class Header:
    """What a checkpoint directory says without loading a tensor: config.json, and each tensor's shape and
    dtype from the safetensors headers, keyed by canonical path (without `model.`)."""

    path: str
    config: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    prefix: str  # "model." (LeRobot) or "" (openpi)

    def key(self, canonical: str) -> str:
        return self.prefix + canonical


def read_header(path: str | Path) -> Header:
    from safetensors import safe_open

    root, files = _root(path)
    shapes, dtypes, lerobot = {}, {}, False
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                part = st.get_slice(key)
                canonical = keys.canonical(key)
                lerobot |= canonical != key
                shapes[canonical], dtypes[canonical] = tuple(part.get_shape()), str(part.get_dtype())
    shapes, dtypes = openpi_keys.to_lerobot_keys(shapes), openpi_keys.to_lerobot_keys(dtypes)  # openpi's tied embedding
    return Header(str(path), _config(root), shapes, dtypes, "model." if lerobot else "")


# -- sizes from a header (pure) -------------------------------------------------------------------------------
def _values(h: Header, pattern: str, axis: int) -> list[int]:
    rx = re.compile(pattern)
    return [s[axis] for k, s in h.shapes.items() if len(s) > axis and rx.fullmatch(k)]


def _vote(*lists: list[int]) -> int | None:
    """The value most tensors agree on (one corrupted tensor does not move a size)."""
    values = [v for values in lists for v in values]
    return Counter(values).most_common(1)[0][0] if values else None


def _depth(h: Header, prefix: str) -> int | None:
    rx = re.compile(re.escape(prefix) + r"layers\.(\d+)\.")
    found = {int(m.group(1)) for k in h.shapes if (m := rx.match(k))}
    return max(found) + 1 if found else None


def _first(h: Header, pattern: str) -> str:
    rx = re.compile(pattern)
    return h.key(min((k for k in h.shapes if rx.fullmatch(k)), key=_natural, default=pattern))


def _gemma_sizes(h: Header, stated: dict[str, int], notes: list[str]) -> dict[str, int]:
    """The VLM's Gemma: width, mlp_dim, depth, heads, kv_heads, head_dim, vocab."""
    e = re.escape
    found = {
        "width": _vote(
            _values(h, e(_LM + "embed_tokens.weight"), 1),
            _values(h, e(_LM + "norm.weight"), 0),
            _values(h, e(_LM) + _LAYER + r"(input|post_attention)_layernorm\.weight", 0),
            _values(h, e(_PROJ), 0),
        ),
        "mlp_dim": _vote(_values(h, e(_LM) + _LAYER + r"mlp\.(gate|up)_proj\.weight", 0)),
        "depth": _depth(h, _LM),
        "vocab": _vote(_values(h, e(_LM + "embed_tokens.weight"), 0)),
    }
    variant = h.config.get("paligemma_variant")
    published = dict(zip(GEMMA_FIELDS, GEMMA_VARIANTS.get(variant, GEMMA_VARIANTS["gemma_2b"]), strict=True))
    published["vocab"] = PALIGEMMA_VOCAB
    _note_resized(notes, "paligemma_variant", variant, published, found)
    sizes = {k: found[k] if found[k] is not None else published[k] for k in found} | stated
    q_out = _vote(_values(h, e(_LM) + _LAYER + r"self_attn\.q_proj\.weight", 0))
    k_out = _vote(_values(h, e(_LM) + _LAYER + r"self_attn\.(k|v)_proj\.weight", 0))
    sizes.update(_heads(h, stated, q_out, k_out, published, e(_LM) + _LAYER + r"self_attn\.(q|k)_proj\.weight"))
    return sizes


def _heads(h: Header, stated, q_out, k_out, published, where: str) -> dict[str, int]:
    """heads (stated, else pi0.5's 8), head_dim = q_proj's rows / heads, kv_heads = k_proj's rows / head_dim."""
    heads = stated.get("heads", PI05_HEADS)
    head_dim = stated.get("head_dim") or (q_out // heads if q_out and q_out % heads == 0 else None)
    if head_dim is None and q_out:
        raise PretrainedError(
            f"pretrained: '{h.path}': {_first(h, where.replace('(q|k)', 'q'))} has {q_out} rows, not a multiple "
            f"of {heads} heads: state the head count (model.student.dims.heads)"
        )
    head_dim = head_dim or published["head_dim"]
    kv_heads = stated.get("kv_heads") or (k_out // head_dim if k_out and k_out % head_dim == 0 else None)
    if kv_heads is None and k_out:
        raise PretrainedError(
            f"pretrained: '{h.path}': {_first(h, where.replace('(q|k)', 'k'))} has {k_out} rows, not a multiple "
            f"of head_dim {head_dim}: state the sizes (model.student.dims.heads, head_dim, kv_heads)"
        )
    return {"heads": heads, "head_dim": head_dim, "kv_heads": kv_heads or published["kv_heads"]}


def _vision_sizes(h: Header, stated: dict[str, int], notes: list[str]) -> dict[str, int]:
    e = re.escape
    patch = _values(h, e(_V + "embeddings.patch_embedding.weight"), 2)
    found = {
        "vision_width": _vote(
            _values(h, e(_V + "embeddings.patch_embedding.weight"), 0),
            _values(h, e(_V + "embeddings.position_embedding.weight"), 1),
            _values(h, e(_V + "post_layernorm.weight"), 0),
            _values(h, e(_V + "encoder.") + _LAYER + r"layer_norm[12]\.weight", 0),
            _values(h, e(_PROJ), 1),
        ),
        "vision_mlp_dim": _vote(_values(h, e(_V + "encoder.") + _LAYER + r"mlp\.fc1\.weight", 0)),
        "vision_depth": _depth(h, _V + "encoder."),
        "patch_size": _vote(patch),
    }
    positions = _vote(_values(h, e(_V + "embeddings.position_embedding.weight"), 0))
    side = isqrt(positions) if positions else 0
    found["image_size"] = side * found["patch_size"] if side * side == positions and found["patch_size"] else None
    resolution = h.config.get("image_resolution") or [224]
    published = {**SO400M, "image_size": resolution[0]}
    sizes = {k: v if v is not None else published[k] for k, v in found.items()} | stated
    so400m = all(sizes[k] == SO400M[k] for k in ("vision_width", "vision_mlp_dim", "vision_depth", "patch_size"))
    if "vision_heads" not in stated:
        if not so400m:
            patch_key = _V + "embeddings.patch_embedding.weight"
            raise PretrainedError(
                f"pretrained: '{h.path}': the vision tower is not SigLIP So400m/14 ({h.key(patch_key)} "
                f"{h.shapes.get(patch_key)}, {sizes['vision_depth']} layers) and its attention head count is in "
                "neither config.json nor the tensor shapes: state it as model.student.dims.vision_heads"
            )
        sizes["vision_heads"] = SO400M["vision_heads"]
    elif not so400m:
        notes.append("vision tower resized from SigLIP So400m/14: sizes from the tensors, vision_heads as stated")
    return sizes


def _note_resized(notes, field, variant, published, found) -> None:
    differ = {k: v for k, v in found.items() if k in GEMMA_FIELDS and v is not None and v != published.get(k)}
    if variant and differ:
        notes.append(
            f"config.json's {field} {variant} has "
            + ", ".join(f"{k} {published[k]}" for k in differ)
            + "; the tensors have "
            + ", ".join(f"{k} {v}" for k, v in differ.items())
            + ": sizes from the tensors"
        )


def _expert_sizes(h: Header, stated: dict[str, int], vlm: dict[str, int], notes: list[str]) -> dict[str, int]:
    e = re.escape
    found = {
        "width": _vote(
            _values(h, e("action_in_proj.weight"), 0),
            _values(h, e("action_out_proj.weight"), 1),
            _values(h, r"time_mlp_(in|out)\.weight", 0),
            _values(h, e(_EX) + _LAYER + r"mlp\.(gate|up)_proj\.weight", 1),
        ),
        "mlp_dim": _vote(_values(h, e(_EX) + _LAYER + r"mlp\.(gate|up)_proj\.weight", 0)),
        "action_dim": _vote(_values(h, e("action_in_proj.weight"), 1), _values(h, e("action_out_proj.weight"), 0)),
        "depth": _depth(h, _EX),
    }
    variant = h.config.get("action_expert_variant")
    published = dict(zip(GEMMA_FIELDS, GEMMA_VARIANTS.get(variant, GEMMA_VARIANTS["gemma_300m"]), strict=True))
    published["action_dim"] = h.config.get("max_action_dim", 32)
    _note_resized(notes, "action_expert_variant", variant, published, found)
    if found["depth"] is not None and found["depth"] != vlm["depth"]:
        layer = _first(h, re.escape(_EX) + rf"layers\.{min(found['depth'], vlm['depth'])}\..*")
        raise PretrainedError(
            f"pretrained: '{h.path}': the expert has {found['depth']} layers ({layer}), the VLM {vlm['depth']}: "
            "pi0.5's expert has one layer per VLM layer"
        )
    sizes = {k: found[k] if found[k] is not None else published[k] for k in ("width", "mlp_dim", "action_dim")}
    # shared attention: the VLM's heads, KV heads and head width
    return sizes | {k: vlm[k] for k in ("heads", "kv_heads", "head_dim")} | stated


def _check_config(h: Header, component: str, sizes: dict[str, int]) -> None:
    """config.json's numbers against the tensors that carry them."""
    checks = []
    if component == "student" and h.config.get("image_resolution"):
        res = list(h.config["image_resolution"])
        side = res[0] // sizes["patch_size"]
        checks.append(
            (
                _V + "embeddings.position_embedding.weight",
                (side * side, sizes["vision_width"]),
                f"image_resolution {res}",
            )
        )
        if res[0] != res[-1]:
            raise PretrainedError(f"pretrained: '{h.path}': config.json image_resolution {res} is not square")
    if component == "expert" and h.config.get("max_action_dim"):
        mad = h.config["max_action_dim"]
        checks.append(("action_in_proj.weight", (sizes["width"], mad), f"max_action_dim {mad}"))
    for path, expected, what in checks:
        got = h.shapes.get(path)
        if got is not None and got != expected:
            raise PretrainedError(
                f"pretrained: '{h.path}': {h.key(path)}: checkpoint {got} vs expected {expected} (config.json {what})"
            )


# -- the tensor-by-tensor check -------------------------------------------------------------------------------
def _natural(s: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", s)]


def _few(names: list[str]) -> str:
    return f"{names[:5]}" + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def misfit(shapes: dict[str, tuple[int, ...]], component: str, own: dict[str, tuple[int, ...]], prefix="model."):
    """What keeps the checkpoint's tensors (`shapes`: canonical path → shape) from loading into `component`
    (`own`: LatBot name → shape), as one line — the first shape mismatch (checkpoint key, its shape, the
    expected shape), the parameters it lacks, the tensors the model has no place for — or None."""
    mapped, _, _ = keys.map_keys(shapes)
    state = {name: path for path, (comp, name) in mapped.items() if comp == component}
    bad = sorted(
        (path for name, path in state.items() if name in own and tuple(shapes[path]) != tuple(own[name])), key=_natural
    )
    problems = []
    if bad:
        name = mapped[bad[0]][1]
        more = f" (and {len(bad) - 1} more shape mismatches)" if len(bad) > 1 else ""
        problems.append(f"{prefix}{bad[0]}: checkpoint {tuple(shapes[bad[0]])} vs expected {tuple(own[name])}{more}")
    missing = sorted(
        (
            keys.to_checkpoint(component, n, prefix)
            for n in own
            if n not in state and not keys.latbot_only(component, n)
        ),
        key=_natural,
    )
    if missing:
        problems.append(f"missing {_few(missing)}")
    extra = sorted((prefix + path for name, path in state.items() if name not in own), key=_natural)
    if extra:
        problems.append(f"not in the model {_few(extra)}")
    return "; ".join(problems) or None


def _expected(component: str, config, vlm_depth: int | None = None) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the part `config` builds (on the meta device: no memory, no file)."""
    import torch

    with torch.device("meta"):
        if component == "student":
            from latbot.models.pi05.student import Pi05Student

            module = Pi05Student(config.model_copy(update={"pretrained": None}))
        else:
            from latbot.models.pi05.expert import Pi05ActionExpert

            module = Pi05ActionExpert(config, vlm_width=1, vlm_layers=vlm_depth, horizon=1)
    return {n: tuple(t.shape) for n, t in module.state_dict().items()}


# -- sizes of the recipe's parts ----------------------------------------------------------------------------------
def _is(config, kind: str) -> bool:
    if kind == "student":
        from latbot.models.pi05.student import Pi05Student

        return isinstance(config, Pi05Student.Config)
    from latbot.models.pi05.expert import Pi05ActionExpert

    return isinstance(config, Pi05ActionExpert.Config)


def pending(*configs) -> bool:
    """Whether any of these plugin Configs is a pi05 part whose sizes are still to be read from its checkpoint
    (`preset: checkpoint`): its architecture cannot be built before `resolve`."""
    return any((_is(c, "student") or _is(c, "expert")) and c.preset == "checkpoint" for c in configs)


def resolve(student=None, expert=None, *, vlm=None) -> tuple[Any, Any, dict[str, Any]]:
    """The sizes of the `pi05` parts that load `pretrained`, before the model is built → (student, expert,
    report). `student` / `expert`: Configs whose weights will come from their `pretrained` (other configs,
    other plugins' included, come back unchanged); a `preset: checkpoint` part comes back as `preset:
    custom` with every size read (module docstring: where each comes from), and every part that loads
    weights is checked tensor by tensor against the model its sizes build. `vlm`: the pi05 student's
    Config when the expert alone loads from a checkpoint (its sizes are the expert's attention sizes;
    default `student`, else the checkpoint's own VLM).
    Reads config.json and the safetensors headers only; the report ({part: {"sizes", "notes", …}}) goes
    to the run's manifest."""
    from latbot.models.pi05.student import Pi05Dims

    headers: dict[str, Header] = {}

    def header(path) -> Header:
        if str(path) not in headers:
            h = headers[str(path)] = read_header(path)
            unknown = [h.key(k) for k in keys.map_keys(h.shapes)[2]]
            if unknown:
                raise PretrainedError(
                    f"pretrained: '{path}' holds {len(unknown)} tensor(s) pi0.5 does not have: {unknown}"
                )
        return headers[str(path)]

    for part, config in (("student", student), ("action_expert", expert)):
        if pending(config) and not config.pretrained:
            raise RecipeError(f"model.{part}: preset checkpoint reads its sizes from `pretrained`, which is not set")
    report: dict[str, Any] = {}
    vlm_sizes = None
    if _is(student, "student") and student.pretrained:
        h, notes = header(student.pretrained), []
        if student.preset == "checkpoint":
            stated = student.dims.stated() if student.dims is not None else {}
            sizes = _gemma_sizes(h, stated, notes) | _vision_sizes(h, stated, notes)
            student = student.model_copy(update={"preset": "custom", "dims": Pi05Dims(**sizes)})
        sizes = student.sizes().model_dump()
        _check_config(h, "student", sizes)
        _raise_misfit(h, "student", student)
        report["student"] = _report(h, sizes, notes)
        vlm_sizes = sizes
    if _is(expert, "expert") and expert.pretrained:
        h, notes = header(expert.pretrained), []
        if vlm_sizes is None:  # the student's sizes (given without weights), else the checkpoint's VLM
            vlm_sizes = _vlm_attention(h, vlm if vlm is not None else student, notes)
        if expert.preset == "checkpoint":
            from latbot.models.pi05.expert import PI05_FLOW

            stated = {k: getattr(expert, k) for k in EXPERT_SIZES if getattr(expert, k) is not None}
            sizes = _expert_sizes(h, stated, vlm_sizes, notes)
            settings = {
                ours: h.config.get(theirs, PI05_FLOW[ours])
                for theirs, ours in EXPERT_SETTINGS
                if getattr(expert, ours) is None
            }
            expert = expert.model_copy(update={"preset": "custom", **sizes, **settings})
        sizes = {k: getattr(expert, k) for k in EXPERT_SIZES} | {"depth": vlm_sizes["depth"]}
        _check_config(h, "expert", sizes)
        _raise_misfit(h, "expert", expert, vlm_sizes["depth"])
        report["expert"] = _report(h, sizes, notes)
    return student, expert, report


def _vlm_attention(h: Header, vlm, notes: list[str]) -> dict[str, int]:
    """The VLM's depth and attention sizes for an expert loaded alone: the given student's, else the
    checkpoint's own VLM (its sizes as `resolve` reads them)."""
    if _is(vlm, "student") and vlm.preset != "checkpoint":
        return vlm.sizes().model_dump()
    stated = vlm.dims.stated() if _is(vlm, "student") and vlm.dims is not None else {}
    return _gemma_sizes(h, stated, notes)


def _raise_misfit(h: Header, component: str, config, vlm_depth: int | None = None) -> None:
    problem = misfit(h.shapes, component, _expected(component, config, vlm_depth), h.prefix)
    if problem:
        raise PretrainedError(f"pretrained: '{h.path}' does not fit the {component} as sized: {problem}")


def _report(h: Header, sizes: dict[str, int], notes: list[str]) -> dict[str, Any]:
    config = {k: h.config[k] for k in CONFIG_FIELDS if k in h.config}
    return {"checkpoint": h.path, "sizes": sizes, "notes": notes, "config": config}


def sizes_of_parent(student, recorded: dict[str, Any]):
    """A `preset: checkpoint` student finetuned from a distillation run takes that run's sizes (its weights
    come from there, not from `pretrained`): `recorded` is the run's recorded `model.student`. Sizes the
    recipe states must agree (else it comes back unchanged and the stage names the difference)."""
    from latbot.models.pi05.student import Pi05Dims

    if not _is(student, "student") or student.preset != "checkpoint" or recorded.get("preset") == "checkpoint":
        return student
    preset, dims = recorded.get("preset", "pi05"), recorded.get("dims")
    theirs = Pi05Dims(**dims) if preset == "custom" and dims else Pi05Dims.of(preset)
    stated = student.dims.stated() if student.dims is not None else {}
    if any(getattr(theirs, k) != v for k, v in stated.items()):
        return student
    return student.model_copy(update={"preset": preset, "dims": theirs if preset == "custom" else None})


# -- weights ----------------------------------------------------------------------------------------------
def load_pi05(path: str | Path, *, student=None, expert=None) -> dict[str, Any]:
    """Load the checkpoint's VLM into `student` and its expert (layers, final norm, action and time
    projections) into `expert` (either may be None) → a report for the stage manifest."""
    from latbot.models import deferred

    if deferred.active():  # dist.meta_init: each rank reads its own shards of these files later
        return _defer_pi05(path, student=student, expert=expert)
    config, tensors = read_pi05(path)
    mapped, dropped, unknown = keys.map_keys(tensors)
    if unknown:
        raise PretrainedError(f"pretrained: '{path}' holds {len(unknown)} tensor(s) pi0.5 does not have: {unknown}")
    prefix = "model." if any(keys.canonical(k) != k for k in tensors) else ""
    shapes = {keys.canonical(k): tuple(t.shape) for k, t in tensors.items()}
    report: dict[str, Any] = {"checkpoint": str(path), "config": config, "dropped": sorted(dropped)}
    for component, module in (("student", student), ("expert", expert)):
        if module is None:
            continue
        own = _fitting(path, shapes, prefix, component, module)
        state = {name: tensors[key] for key, (comp, name) in mapped.items() if comp == component}
        module.load_state_dict(state, strict=False, assign=True)
        sizes = {n: (t.numel(), str(t.dtype).removeprefix("torch.")) for n, t in state.items()}
        report[component] = _part_report(component, own, sizes)
    return report


def _fitting(path, shapes: dict, prefix: str, component: str, module) -> dict:
    """`module`'s state dict, once the checkpoint's shapes are checked against it (a one-line error else)."""
    own = module.state_dict()
    problem = misfit(shapes, component, {n: tuple(t.shape) for n, t in own.items()}, prefix)
    if problem:
        raise PretrainedError(f"pretrained: '{path}' does not fit the {component} as configured: {problem}")
    return own


def _part_report(component: str, own: dict, sizes: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """The manifest's record of one loaded part: `sizes` = {LatBot name: (elements, dtype name)}."""
    return {
        "components": sorted({keys.component_of(n) for n in sizes}),
        "tensors": len(sizes),
        "parameters": int(sum(n for n, _ in sizes.values())),
        "dtypes": sorted({d for _, d in sizes.values()}),
        "initialised_fresh": sorted(n for n in own if keys.latbot_only(component, n)),
    }


def _defer_pi05(path: str | Path, *, student=None, expert=None) -> dict[str, Any]:
    """`load_pi05` without reading a tensor: the checks and the report come from the files' headers, the
    loaded parameters move to the meta device (freeing their random initialisation) and are recorded at
    their tensors (`latbot.models.deferred`), for every rank to read its own shards."""
    from latbot.models import deferred

    root, files = _root(path)
    config = _config(root)
    located = openpi_keys.to_lerobot_keys(deferred.header_keys(files))  # the tied embedding: the LM head's
    mapped, dropped, unknown = keys.map_keys(located)
    if unknown:
        raise PretrainedError(f"pretrained: '{path}' holds {len(unknown)} tensor(s) pi0.5 does not have: {unknown}")
    prefix = "model." if any(keys.canonical(k) != k for k in located) else ""
    stored = deferred.shapes(located)
    h = read_header(path)
    dtypes = {k: h.dtypes.get(keys.canonical(k), "") for k in located}
    shapes = {keys.canonical(k): v for k, v in stored.items()}
    report: dict[str, Any] = {"checkpoint": str(path), "config": {k: config[k] for k in CONFIG_FIELDS if k in config},
                              "dropped": sorted(dropped)}  # fmt: skip
    for component, module in (("student", student), ("expert", expert)):
        if module is None:
            continue
        own = _fitting(path, shapes, prefix, component, module)
        state = {name: key for key, (comp, name) in mapped.items() if comp == component}
        _to_meta(module, state)
        deferred.record(module, {name: located[key] for name, key in state.items()})
        sizes = {n: (math.prod(stored[k]), _DTYPES.get(dtypes[k], dtypes[k].lower())) for n, k in state.items()}
        report[component] = _part_report(component, own, sizes)
    return report


_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}  # safetensors' names


def _to_meta(module, names) -> None:
    """The named parameters of `module` replaced by meta tensors of the same shape (tied ones stay tied)."""
    import torch

    done: dict[int, torch.nn.Parameter] = {}
    for full in names:
        owner_name, _, leaf = full.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        p = owner._parameters.get(leaf)
        if p is None:
            continue
        if id(p) not in done:
            done[id(p)] = torch.nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad)
        owner._parameters[leaf] = done[id(p)]
    for owner in module.modules():  # tied names not in `names` follow their parameter
        for leaf, p in list(owner._parameters.items()):
            if p is not None and id(p) in done:
                owner._parameters[leaf] = done[id(p)]


def apply(student=None, expert=None) -> dict[str, Any]:
    """Load `pretrained` of the given pi05 parts (their Config names the directory) → {part: report}; {}
    when none asks for weights. The stages call it right after building the model."""
    parts = {}
    for name, module in (("student", student), ("expert", expert)):
        path = getattr(getattr(module, "config", None), "pretrained", None)
        if path and getattr(module, "reads_prefix_cache", False):
            parts[name] = load_pi05(path, **{name: module})[name] | {"checkpoint": str(path)}
    return parts


# -- a pi0.5 policy from a directory alone ------------------------------------------------------------------------
def load_vla(path: str | Path, *, horizon: int | None = None, student: dict | None = None, expert: dict | None = None):
    """A pi0.5 VisionLanguageAction with every size and weight from a checkpoint directory → (model in eval
    mode, report). `student` / `expert`: more Config fields (e.g. {"tokenizer": …}, {"dims": {"vision_heads":
    2}}, {"state": "none"}); the student has no latent queries unless given. `horizon`: the chunk length
    (default: config.json's chunk_size). Run it on token ids with `model.student.prefix_cache_from_tokens`
    and `model.expert.denoise`, or on images and text with `model.sample`."""
    from latbot.models.pi05.expert import Pi05ActionExpert
    from latbot.models.pi05.student import Pi05Student
    from latbot.models.vla import VisionLanguageAction

    s = Pi05Student.Config.model_validate(
        {"preset": "checkpoint", "pretrained": str(path), "num_scene_tokens": 0, "num_motion_tokens": 0}
        | (student or {})
    )
    e = Pi05ActionExpert.Config.model_validate({"preset": "checkpoint", "pretrained": str(path)} | (expert or {}))
    s, e, sizes = resolve(student=s, expert=e)
    chunk = horizon or sizes["expert"]["config"].get("chunk_size", 50)
    model = VisionLanguageAction(s, e, chunk)
    loaded = apply(student=model.student, expert=model.expert)
    return model.eval(), {part: sizes[part] | loaded[part] for part in loaded}


def sizes(path: str | Path, **stated: int) -> dict[str, dict[str, Any]]:
    """The `pi05` student's and expert's sizes of a checkpoint as recipe slots (`preset: custom`): what
    `preset: checkpoint` resolves to, for a recipe that `latbot plan` can build (`stated`: student dims the
    checkpoint does not hold, e.g. vision_heads=2)."""
    from latbot.models.pi05.expert import Pi05ActionExpert
    from latbot.models.pi05.student import Pi05Student

    s = Pi05Student.Config(preset="checkpoint", pretrained=str(path), dims=stated or None)
    e = Pi05ActionExpert.Config(preset="checkpoint", pretrained=str(path))
    s, e, _ = resolve(student=s, expert=e)
    settings = [ours for _, ours in EXPERT_SETTINGS]
    return {
        "student": {"type": "pi05", "preset": "custom", "dims": s.dims.model_dump()},
        "action_expert": {"type": "pi05", "preset": "custom", **{k: getattr(e, k) for k in (*EXPERT_SIZES, *settings)}},
    }


if __name__ == "__main__":  # python -m latbot.models.pi05.checkpoint DIR [vision_heads=N ...]
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m latbot.models.pi05.checkpoint DIR [dim=value ...]  (prints the recipe slots)")
    extra = dict(arg.split("=", 1) for arg in sys.argv[2:])
    for part, slot in sizes(sys.argv[1], **{k: int(v) for k, v in extra.items()}).items():
        print(f"{part}: {json.dumps(slot)}")
