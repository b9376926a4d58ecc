"""The contracts of the model kinds: encoders, decoders, students, action experts (docs/plugins.md).

Each kind's Protocol (latbot.models.<kind>.base) lists every member LatBot uses; `MEMBERS` below says how
LatBot uses each one (the positional arguments and keywords of its calls, who calls it). The first rules
after `build` check that every member exists and takes those arguments (one failure per broken member,
under the member's name), the later ones call the members on dummy inputs and check what comes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latbot.models.decoders.base import SAMPLE_SIGNATURE
from latbot.models.encoders.base import SIGNATURES as ENCODER
from latbot.models.experts.base import SIGNATURES as EXPERT
from latbot.models.students.base import SIGNATURES as STUDENT
from latbot.testing.contracts.core import (
    CONTEXT,
    HORIZON,
    INSTRUCTIONS,
    LATENT_WIDTH,
    SUBTASKS,
    VLM_LAYERS,
    VLM_WIDTH,
    B,
    Checker,
    Member,
    _backward,
    _config_rules,
    _fields,
    _finite_scalar,
    _repeated_blocks,
    _shape,
    _shape_dtype,
    _state_dict_round_trip,
    action_mask,
    check_members,
    constructor_problem,
    expect,
    frames,
)

_BLOCKS = "FSDP wrapping and activation checkpointing"
_GROUNDING = "`latbot analyze grounding`"
_VLA_CACHE = "the VLA (finetuning with an expert that reads the prefix cache)"

# How LatBot uses every member of each kind's Protocol (the Protocols: latbot.models.<kind>.base).
MEMBERS: dict[str, tuple[Member, ...]] = {
    "encoders": (
        Member("width", ENCODER["width"], "the LAM stage and distillation"),
        Member("forward", ENCODER["forward"], "the LAM stage and distillation's teacher", ("frames", "instructions")),
        Member("repeated_blocks", ENCODER["repeated_blocks"], _BLOCKS, ()),
        Member("image_attention", ENCODER["image_attention"], _GROUNDING, ("frames", "instructions"), optional=True),
    ),
    "decoders": (
        Member("config", "an attribute `config` (its Config)", "the LAM stage"),
        Member(
            "forward",
            "forward(z_sce, z_mot, frame_t, frame_future, actions=None, action_mask=None) -> "
            '{"image", "action"} scalars',
            "the LAM stage",
            ("z_sce", "z_mot", "frame_t", "frame_future", "actions", "action_mask"),
            plural=False,
        ),
        Member(
            "sample",
            SAMPLE_SIGNATURE,
            "`latbot viz` and the diagnostics",
            ("z_sce", "z_mot", "frame_t"),
            ("with_actions", "generator"),
        ),
        Member("repeated_blocks", "repeated_blocks() -> list[nn.Module]", _BLOCKS, ()),
    ),
    "students": (
        Member("config", STUDENT["config"], "`latbot plan` and distillation"),
        Member("width", STUDENT["width"], "the finetuning stage", plural=False),
        Member("num_layers", STUDENT["num_layers"], "the finetuning stage", plural=False),
        Member("latent_width", STUDENT["latent_width"], "distillation", plural=False),
        Member(
            "forward",
            STUDENT["forward"],
            "distillation and finetuning",
            ("frames", "instructions"),
            ("subtasks", "hidden_states"),
        ),
        Member("repeated_blocks", STUDENT["repeated_blocks"], _BLOCKS, ()),
        Member("image_attention", STUDENT["image_attention"], _GROUNDING, ("frames", "instructions"), optional=True),
        Member("attention_shape", STUDENT["attention_shape"], _VLA_CACHE, when="reads_prefix_cache", plural=False),
        Member(
            "prefix_cache",
            STUDENT["prefix_cache"],
            _VLA_CACHE,
            ("frames", "instructions", "states"),
            when="reads_prefix_cache",
            plural=False,
        ),
    ),
    "action_experts": (
        Member(
            "loss",
            EXPERT["loss"],
            "finetuning",
            ("actions", "gripper", "action_mask", "pad", "state", "layers", "ctx_mask"),
            plural=False,
        ),
        Member(
            "sample",
            EXPERT["sample"],
            "the policy (`latbot eval`, `latbot serve`)",
            ("state", "layers", "ctx_mask", "action_mask", "generator"),
            plural=False,
        ),
        Member("repeated_blocks", EXPERT["repeated_blocks"], _BLOCKS, ()),
        Member("config", EXPERT["config"], _VLA_CACHE, when="reads_prefix_cache", plural=False),
        Member("check_vlm", EXPERT["check_vlm"], _VLA_CACHE, ("student",), when="reads_prefix_cache", plural=False),
        Member(
            "velocity",
            EXPERT["velocity"],
            _VLA_CACHE,
            ("x_t", "t", "cache", "ctx_mask", "state"),
            when="reads_prefix_cache",
            plural=False,
        ),
        Member(
            "sample",
            EXPERT["sample(velocity=)"],
            "the VLA's uncached check (pi05 only)",
            ("state", "layers", "ctx_mask", "action_mask", "generator"),
            ("velocity",),
            when="reads_prefix_cache",
        ),
    ),
}

# cls(config, ...) as LatBot builds each kind: (the documented spelling, who builds it, args, kwargs)
CONSTRUCTORS: dict[str, tuple[str, str, tuple, dict]] = {
    "encoders": (ENCODER["__init__"], "the LAM stage and `latbot plan`", (), {}),
    "decoders": ("cls(config, latent_width: int)", "the LAM stage and `latbot plan`", (), {"latent_width": 24}),
    "students": (STUDENT["__init__"], "distillation and finetuning", (), {"latent_width": LATENT_WIDTH}),
    "action_experts": (
        EXPERT["__init__"],
        "finetuning and `latbot plan`",
        (),
        {"vlm_width": VLM_WIDTH, "vlm_layers": VLM_LAYERS, "horizon": HORIZON},
    ),
}


def _build(c: Checker, kind: str, cls: type, cfg: Any, make: Any) -> Any:
    """The `build` rule: the constructor takes LatBot's arguments (else one failure naming the signature),
    then `make()` builds the plugin; then every member of the kind's Protocol is checked (`members`)."""
    signature, callers, args, kwargs = CONSTRUCTORS[kind]

    def build():
        problem = constructor_problem(cls, signature, callers, cfg, *args, **kwargs)
        expect(problem is None, problem)
        return make()

    model = c.rule("build", build)
    check_members(c, model, MEMBERS[kind])
    return model


# -- encoders ---------------------------------------------------------------------------------------------------
def _encoders(c: Checker, cls: type, tmp: Path) -> None:
    import torch

    cfg = _config_rules(c, cls)
    _fields(
        c,
        cfg,
        ("num_scene_tokens", "num_motion_tokens"),
        "Ns and Nm, read by the distillation stage to match the student's",
    )
    ns, nm = cfg.num_scene_tokens, cfg.num_motion_tokens
    t = getattr(cfg, "num_frames", None) or 2  # an encoder with num_frames reads clips of data.num_frames
    torch.manual_seed(0)
    enc = _build(c, "encoders", cls, cfg, lambda: cls(cfg))

    def width():
        d = getattr(enc, "width", None)
        expect(
            isinstance(d, int) and not isinstance(d, bool) and d > 0,
            f"needs an int property `width` (D, the latents' width), got {d!r}",
        )
        return d

    d = c.rule("width", width)
    x = frames(t=t)

    def forward():
        for clip in (x, x.float() / 255):
            out = enc(clip, INSTRUCTIONS)
            expect(
                isinstance(out, tuple | list) and len(out) == 2,
                f"forward must return (Z_sce, Z_mot), got a {type(out).__name__}"
                + (f" of {len(out)} items" if isinstance(out, tuple | list) else ""),
            )
            z_sce, z_mot = out
            expect(
                tuple(getattr(z_sce, "shape", ())) == (B, ns, d) and tuple(getattr(z_mot, "shape", ())) == (B, nm, d),
                f"forward(frames (B, T, 3, H, W) {str(clip.dtype).removeprefix('torch.')}) returned Z_sce "
                f"{_shape(z_sce)} and Z_mot {_shape(z_mot)}; expected (B, Ns, D) = {(B, ns, d)} and (B, Nm, D) = "
                f"{(B, nm, d)}",
            )
            expect(
                z_sce.is_floating_point() and z_mot.is_floating_point(),
                f"forward returned Z_sce of dtype {z_sce.dtype} and Z_mot of dtype {z_mot.dtype}; expected a "
                "floating dtype (float32/bfloat16/float16)",
            )
            expect(torch.isfinite(z_sce).all() and torch.isfinite(z_mot).all(), "forward returned non-finite latents")

    c.rule("forward", forward)
    _backward(c, enc, lambda: sum(z.square().mean() for z in enc(x, INSTRUCTIONS)))
    _repeated_blocks(c, enc)
    _state_dict_round_trip(c, lambda: cls(cfg), enc, lambda m: m(x, INSTRUCTIONS))


# -- decoders ---------------------------------------------------------------------------------------------------
def _decoders(c: Checker, cls: type, tmp: Path) -> None:
    import torch

    cfg = _config_rules(c, cls)
    k = getattr(cfg, "horizon", None) or 3  # K = data.num_frames − 1 actions per clip
    d = 24
    torch.manual_seed(0)
    dec = _build(c, "decoders", cls, cfg, lambda: cls(cfg, latent_width=d))
    with torch.no_grad():  # zero-initialised outputs (adaLN-zero) pass no gradient at step 0: move off zero
        for p in dec.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    f = frames(t=2)
    z_sce = torch.randn(B, 3, d, requires_grad=True)
    z_mot = torch.randn(B, 5, d, requires_grad=True)
    actions, mask = torch.randn(B, k, 44), action_mask()

    def forward():
        losses = dec(z_sce, z_mot, f[:, 0], f[:, 1], actions, mask)
        expect(isinstance(losses, dict), f"forward must return a dict of losses, got {type(losses).__name__}")
        expect(
            set(losses) == {"image", "action"},
            f'forward(..., actions, action_mask) must return the keys {{"image", "action"}}, got {sorted(losses)}',
        )
        for key in losses:
            _finite_scalar(losses, key)
        return losses

    losses = c.rule("forward", forward)

    def image_only():
        out = dec(z_sce, z_mot, f[:, 0], f[:, 1], None, None)
        expect(
            isinstance(out, dict) and set(out) == {"image"},
            f'forward(..., None, None) (the image-only ablation) must return only "image", got {sorted(out)}',
        )
        _finite_scalar(out, "image")

    c.rule("image_only", image_only, required=False)

    def univla_style():
        out = dec(z_sce, None, f[:, 0], f[:, 1], None, None)
        expect(
            isinstance(out, dict) and set(out) == {"image"},
            "forward(z_sce, None, ..., None, None) (UniVLA-style: one latent group, no motion pathway) must return "
            f'only "image", got {sorted(out)}',
        )
        _finite_scalar(out, "image")

    c.rule("univla_style", univla_style, required=False)

    def backward():
        (losses["image"] + losses["action"]).backward()
        for name, z in (("z_sce", z_sce), ("z_mot", z_mot)):
            expect(z.grad is not None and z.grad.abs().sum() > 0, f"no gradient reaches {name} from the losses")

    c.rule("backward", backward, required=False)

    def masked():
        none = dec(z_sce, z_mot, f[:, 0], f[:, 1], actions, torch.zeros_like(mask))["action"]
        expect(
            float(none.detach().abs()) < 1e-6,
            f"with an all-zero action_mask the action loss must be 0 (got {float(none.detach()):.3g}); average "
            "the action loss over the valid dimensions only (dims the embodiment lacks hold no data)",
        )

    c.rule("action_mask", masked, required=False)
    c.rule("sample", lambda: _decoder_sample(dec, z_sce.detach(), z_mot.detach(), f[:, 0], cfg), required=False)
    _repeated_blocks(c, dec)
    _state_dict_round_trip(
        c,
        lambda: cls(cfg, latent_width=d),
        dec,
        lambda m: tuple(m(z_sce.detach(), z_mot.detach(), f[:, 0], f[:, 1], actions, mask).values()),
    )


def _decoder_sample(dec: Any, z_sce: Any, z_mot: Any, frame_t: Any, cfg: Any) -> None:
    """`sample` called exactly as `latbot viz episode` and latbot.analysis.diagnostics call it (keywords
    `with_actions` and `generator`, under no_grad, in eval mode), with and without actions, twice with the
    same seed. The contract: `latbot.models.decoders.base.Decoder.sample`; that it exists and takes these
    arguments is the `members` check (`MEMBERS["decoders"]`), which runs first."""
    import torch

    method = dec.sample
    dec.eval()
    for with_actions in (True, False):
        call = f"sample(z_sce, z_mot, frame_t, with_actions={with_actions}, generator=...)"
        outs = []
        for _ in range(2):
            with torch.no_grad():
                seeded = torch.Generator().manual_seed(0)
                outs.append(method(z_sce, z_mot, frame_t, with_actions=with_actions, generator=seeded))
        _sample_output(call, outs[0], with_actions, getattr(cfg, "horizon", None))
        same = all(
            (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
            for x, y in zip(outs[0], outs[1], strict=True)
        )
        expect(same, f"{call} twice with one generator seed gave different results: draw all noise from `generator`")


def _sample_output(call: str, out: Any, with_actions: bool, k: int | None) -> None:
    """(frame (B, 3, h, w) float in [0, 1], actions (B, K, 44) finite, or None without actions); K is the
    Config's `horizon` when it has one, else free."""
    import torch

    from latbot.data.spaces import ACTION_DIM
    from latbot.models.decoders.base import SAMPLE_SIGNATURE

    expect(
        isinstance(out, tuple | list) and len(out) == 2,
        f"{call} must return a pair (frame, actions), got {type(out).__name__}; expected {SAMPLE_SIGNATURE}",
    )
    frame, acts = out
    expect(
        isinstance(frame, torch.Tensor) and frame.is_floating_point() and frame.ndim == 4 and frame.shape[:2] == (B, 3),
        f"{call} must return a float frame (B, 3, h, w) = ({B}, 3, h, w), got {_shape_dtype(frame)}",
    )
    expect(bool(((frame >= 0) & (frame <= 1)).all()), f"{call} must return a frame in [0, 1]")
    if not with_actions:
        expect(acts is None, f"{call} must return None for the actions (no action stream), got {_shape(acts)}")
        return
    expect(
        isinstance(acts, torch.Tensor)
        and acts.ndim == 3
        and (acts.shape[0], acts.shape[2]) == (B, ACTION_DIM)
        and acts.shape[1] == (k or acts.shape[1]),
        f"{call} must return actions (B, K, 44) = ({B}, {k or 'K'}, {ACTION_DIM}), got {_shape(acts)}",
    )
    expect(bool(torch.isfinite(acts).all()), f"{call} returned non-finite actions")


# -- students ---------------------------------------------------------------------------------------------------
def _students(c: Checker, cls: type, tmp: Path) -> None:
    import torch

    cfg = _config_rules(c, cls)
    _fields(
        c,
        cfg,
        ("num_scene_tokens", "num_motion_tokens"),
        "Ns and Nm, which the distillation stage checks against the teacher's",
    )
    n = cfg.num_scene_tokens + cfg.num_motion_tokens
    torch.manual_seed(0)
    student = _build(c, "students", cls, cfg, lambda: cls(cfg, latent_width=LATENT_WIDTH))

    def properties():
        values = {p: getattr(student, p, None) for p in ("width", "num_layers", "latent_width")}
        bad = [p for p, v in values.items() if not (isinstance(v, int) and not isinstance(v, bool) and v > 0)]
        expect(not bad, f"needs positive int properties width, num_layers, latent_width; got {values}")
        expect(
            values["latent_width"] == LATENT_WIDTH,
            f"latent_width must be the latent_width it was built with ({LATENT_WIDTH}), got {values['latent_width']}",
        )
        return values

    props = c.rule("properties", properties, needs=("config", "width", "num_layers", "latent_width"))
    one = frames(t=1)  # (B, C = 1, 3, H, W): distillation shows the first frame only

    def forward():
        out = student(one, INSTRUCTIONS, subtasks=SUBTASKS)
        expect(isinstance(out, dict), f"forward must return a dict, got {type(out).__name__}")
        z = out.get("latents")
        expect(
            z is not None and tuple(getattr(z, "shape", ())) == (B, n, LATENT_WIDTH),
            f'forward(...)["latents"] must be (B, Ns + Nm, D_teacher) = {(B, n, LATENT_WIDTH)}, got {_shape(z)}',
        )
        expect(
            z.is_floating_point(),
            f'forward(...)["latents"] has dtype {z.dtype}; expected a floating dtype (float32/bfloat16/float16)',
        )
        _finite_scalar(out, "lm_loss")
        return out

    out = c.rule("forward", forward)
    _backward(c, student, lambda: out["latents"].square().mean() + out["lm_loss"])

    def hidden():
        two = frames(t=2)  # (B, C = 2 cameras, 3, H, W): finetuning shows every camera of the current step
        ctx = student(two, INSTRUCTIONS, hidden_states=True)
        layers, mask = ctx.get("layers"), ctx.get("attention_mask")
        expect(
            layers is not None and len(layers) == props["num_layers"] + 1,
            f'forward(..., hidden_states=True)["layers"] must hold num_layers + 1 = {props["num_layers"] + 1} '
            f"tensors, got {None if layers is None else len(layers)}",
        )
        expect(
            mask is not None and mask.ndim == 2 and mask.shape[0] == B,
            f'"attention_mask" must be (B, N), got {_shape(mask)}',
        )
        bad = [i for i, h in enumerate(layers) if tuple(h.shape) != (B, mask.shape[1], props["width"])]
        expect(not bad, f'"layers" must each be (B, N, width) = {(B, mask.shape[1], props["width"])}; not: {bad}')

    c.rule("hidden_states", hidden, required=False, needs=("forward",))
    _repeated_blocks(c, student)
    _state_dict_round_trip(
        c, lambda: cls(cfg, latent_width=LATENT_WIDTH), student, lambda m: (m(one, INSTRUCTIONS)["latents"],)
    )


# -- action experts ---------------------------------------------------------------------------------------------
def expert_inputs(b: int = B, horizon: int = HORIZON) -> dict[str, Any]:
    """The dummy arguments of `loss` (docs/plugins.md, "Action experts")."""
    import torch

    g = torch.Generator().manual_seed(0)
    pad = torch.zeros(b, horizon, dtype=torch.bool)
    pad[0, -1] = True  # the first sample's episode ends before the chunk does
    ctx_mask = torch.ones(b, CONTEXT, dtype=torch.bool)
    ctx_mask[1, -2:] = False  # the second sample's context is shorter (padding)
    return {
        "actions": torch.randn(b, horizon, 44, generator=g),
        "gripper": torch.rand(b, horizon, 2, generator=g),
        "action_mask": action_mask(b).bool(),
        "pad": pad,
        "state": torch.randn(b, 46, generator=g),
        "layers": [torch.randn(b, CONTEXT, VLM_WIDTH, generator=g) for _ in range(VLM_LAYERS + 1)],
        "ctx_mask": ctx_mask,
    }


def _action_experts(c: Checker, cls: type, tmp: Path) -> None:
    import torch

    cfg = _config_rules(c, cls)

    def build():
        return cls(cfg, vlm_width=VLM_WIDTH, vlm_layers=VLM_LAYERS, horizon=HORIZON)

    torch.manual_seed(0)
    expert = _build(c, "action_experts", cls, cfg, build)
    x = expert_inputs()

    def loss():  # positionally, as the VLA calls it
        out = expert.loss(
            x["actions"], x["gripper"], x["action_mask"], x["pad"], x["state"], x["layers"], x["ctx_mask"]
        )
        expect(isinstance(out, dict), f"loss must return a dict, got {type(out).__name__}")
        missing = {"loss", "ee", "gripper"} - set(out)
        expect(
            not missing,
            f'loss must return the keys "loss", "ee", "gripper" (the stage logs all three); lacks {sorted(missing)}',
        )
        for key in ("loss", "ee", "gripper"):
            _finite_scalar(out, key)
        return out

    out = c.rule("loss", loss)
    _backward(c, expert, lambda: out["loss"])

    def run(m):
        return m.sample(x["state"], x["layers"], x["ctx_mask"], x["action_mask"], torch.Generator().manual_seed(0))

    def sample():
        out = run(expert)
        expect(
            isinstance(out, tuple | list) and len(out) == 2,
            f"sample must return a pair (actions, gripper), got {type(out).__name__}",
        )
        actions, grip = out
        expect(
            tuple(getattr(actions, "shape", ())) == (B, HORIZON, 44)
            and tuple(getattr(grip, "shape", ())) == (B, HORIZON, 2),
            f"sample must return (actions (B, H, 44), gripper (B, H, 2)) = ({(B, HORIZON, 44)}, {(B, HORIZON, 2)}), "
            f"got {_shape(actions)} and {_shape(grip)}",
        )
        expect(
            actions.is_floating_point() and grip.is_floating_point(),
            f"sample returned actions of dtype {actions.dtype} and gripper of dtype {grip.dtype}; expected a "
            "floating dtype (float32/bfloat16/float16)",
        )
        expect(bool(((grip >= 0) & (grip <= 1)).all()), "sample's gripper must be probabilities in [0, 1]")

    c.rule("sample", sample, required=False)
    _repeated_blocks(c, expert)
    _state_dict_round_trip(c, build, expert, run, needs=("state_dict", "sample"))
