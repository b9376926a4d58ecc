"""Every member LatBot uses on a model plugin is in its kind's Protocol (latbot.models.<kind>.base) and checked
by `latbot plugins check`; a plugin that returns the wrong shape or dtype stops at the first call that can
see it (the LAM's `encode`, distillation, the VLA) with one line naming the plugin, the expected and the
actual value — also on the meta device (`latbot plan`). The broken plugins are the example plugin's, changed
in one place each."""

from __future__ import annotations

import typing
from types import SimpleNamespace
from typing import Literal

import pytest
import torch
from latbot_example_plugin.mlp_head import MlpHeadActionExpert
from latbot_example_plugin.tiny_cnn import TinyCnnStudent
from latbot_example_plugin.tiny_conv import TinyConvEncoder
from latbot_example_plugin.tiny_mlp import TinyMlpDecoder

from latbot import registry
from latbot.data import clips
from latbot.errors import PluginCallError
from latbot.models.decoders.base import Decoder
from latbot.models.distill import DistillationModel
from latbot.models.encoders.base import SIGNATURES as ENCODER_SIGNATURES
from latbot.models.encoders.base import AttentionMaps, Encoder
from latbot.models.experts.base import SIGNATURES as EXPERT_SIGNATURES
from latbot.models.experts.base import PrefixCacheExpert
from latbot.models.lam import LatentActionModel
from latbot.models.students.base import SIGNATURES as STUDENT_SIGNATURES
from latbot.models.students.base import PrefixCacheStudent
from latbot.models.vla import VisionLanguageAction
from latbot.testing.contracts import check
from latbot.testing.contracts.models import MEMBERS

B, WIDTH, NS, NM, HORIZON = 2, 16, 4, 4, 3
FLOATING = "expected a floating dtype (float32/bfloat16/float16)"


def _config(base: type, name: str) -> type:
    """`base.Config` with `type: Literal[name]`, as a registered plugin needs."""
    return type("Config", (base.Config,), {"__annotations__": {"type": Literal[name]}, "type": name})


# -- broken encoders ---------------------------------------------------------------------------------------------
class ExtraMotionToken(TinyConvEncoder):
    Config = _config(TinyConvEncoder, "extra_motion_token")

    def forward(self, frames, instructions):
        z_sce, z_mot = super().forward(frames, instructions)
        return z_sce, torch.cat([z_mot, z_mot[:, :1]], 1)  # Nm + 1 tokens


class NarrowScene(TinyConvEncoder):
    Config = _config(TinyConvEncoder, "narrow_scene")

    def forward(self, frames, instructions):
        z_sce, z_mot = super().forward(frames, instructions)
        return z_sce[..., :-1], z_mot  # width D − 1


class IntLatents(TinyConvEncoder):
    Config = _config(TinyConvEncoder, "int_latents")

    def forward(self, frames, instructions):
        return tuple(z.long() for z in super().forward(frames, instructions))


class ThreeOutputs(TinyConvEncoder):
    Config = _config(TinyConvEncoder, "three_outputs")

    def forward(self, frames, instructions):
        z_sce, z_mot = super().forward(frames, instructions)
        return z_sce, z_mot, z_mot


class NoBlocks(TinyConvEncoder):
    Config = _config(TinyConvEncoder, "no_blocks")
    repeated_blocks = None


class FramesOnly(TinyConvEncoder):
    Config = _config(TinyConvEncoder, "frames_only")

    def forward(self, frames):
        return super().forward(frames, [""] * frames.shape[0])


# -- broken students ---------------------------------------------------------------------------------------------
class ShortLatents(TinyCnnStudent):
    Config = _config(TinyCnnStudent, "short_latents")

    def forward(self, frames, instructions, subtasks=None, hidden_states=False):
        out = super().forward(frames, instructions, subtasks, hidden_states)
        return {**out, "latents": out["latents"][:, 1:]}


class IntLatentStudent(TinyCnnStudent):
    Config = _config(TinyCnnStudent, "int_latent_student")

    def forward(self, frames, instructions, subtasks=None, hidden_states=False):
        out = super().forward(frames, instructions, subtasks, hidden_states)
        return {**out, "latents": out["latents"].round().long()}


class MissingLayer(TinyCnnStudent):  # the mlp_head expert reads only the last layer: today this trains silently
    Config = _config(TinyCnnStudent, "missing_layer")

    def forward(self, frames, instructions, subtasks=None, hidden_states=False):
        out = super().forward(frames, instructions, subtasks, hidden_states)
        return {**out, "layers": out["layers"][1:]} if hidden_states else out


class NoNumLayers(TinyCnnStudent):
    Config = _config(TinyCnnStudent, "no_num_layers")

    @property
    def num_layers(self):
        raise AttributeError("num_layers")


class NoHiddenStates(TinyCnnStudent):
    Config = _config(TinyCnnStudent, "no_hidden_states")

    def forward(self, frames, instructions, subtasks=None):
        return super().forward(frames, instructions, subtasks)


# -- broken action experts ---------------------------------------------------------------------------------------
class NoEeLoss(MlpHeadActionExpert):
    Config = _config(MlpHeadActionExpert, "no_ee_loss")

    def loss(self, actions, gripper, action_mask, pad, state, layers, ctx_mask):
        out = super().loss(actions, gripper, action_mask, pad, state, layers, ctx_mask)
        return {"loss": out["loss"], "gripper": out["gripper"]}


class ShortChunk(MlpHeadActionExpert):
    Config = _config(MlpHeadActionExpert, "short_chunk")

    @torch.no_grad()
    def sample(self, state, layers, ctx_mask, action_mask=None, generator=None):
        actions, gripper = super().sample(state, layers, ctx_mask, action_mask, generator)
        return actions[:, :-1], gripper[:, :-1]


class NoSample(MlpHeadActionExpert):
    Config = _config(MlpHeadActionExpert, "no_sample")
    sample = None


class NoGripperArgument(MlpHeadActionExpert):
    Config = _config(MlpHeadActionExpert, "no_gripper_argument")

    def loss(self, actions, action_mask, pad, state, layers, ctx_mask):
        return super().loss(actions, actions[..., :2], action_mask, pad, state, layers, ctx_mask)


PLUGINS = {
    "encoders": (ExtraMotionToken, NarrowScene, IntLatents, ThreeOutputs, NoBlocks, FramesOnly),
    "students": (ShortLatents, IntLatentStudent, MissingLayer, NoNumLayers, NoHiddenStates),
    "action_experts": (NoEeLoss, ShortChunk, NoSample, NoGripperArgument),
}


def name(cls: type) -> str:
    return cls.Config.model_fields["type"].default


def label(kind: str, cls: type) -> str:
    return f"{kind} plugin '{name(cls)}' ({__name__}:{cls.__qualname__})"


@pytest.fixture(autouse=True, scope="module")
def registered():
    for kind, classes in PLUGINS.items():
        for cls in classes:
            registry.register(kind, name(cls), cls)
    yield
    for kind, classes in PLUGINS.items():
        for cls in classes:
            registry.unregister(kind, name(cls))


# -- the Protocols and `latbot plugins check` ----------------------------------------------------------------
def protocol_members(*protocols: type) -> set[str]:
    found = set()
    for proto in protocols:
        for klass in proto.__mro__:
            if getattr(klass, "_is_protocol", False) and klass is not typing.Protocol:
                found |= {n for n in [*vars(klass), *getattr(klass, "__annotations__", {})] if not n.startswith("_")}
    return found


@pytest.mark.parametrize(
    ("kind", "protocols"),
    [
        ("encoders", (Encoder, AttentionMaps)),
        ("decoders", (Decoder,)),
        ("students", (PrefixCacheStudent, AttentionMaps)),
        ("action_experts", (PrefixCacheExpert,)),
    ],
)
def test_the_contract_checks_exactly_the_members_of_each_protocol(kind, protocols):
    checked = {m.name for m in MEMBERS[kind]} | {m.when for m in MEMBERS[kind] if m.when}  # `when`: the switch
    assert checked == protocol_members(*protocols)
    signatures = {"encoders": ENCODER_SIGNATURES, "students": STUDENT_SIGNATURES, "action_experts": EXPERT_SIGNATURES}
    if kind in signatures:  # every member has its one documented spelling
        assert protocol_members(*protocols) <= set(signatures[kind])


def failures(kind: str, cls: type) -> list[tuple[str, str]]:
    report = check(kind, name(cls))
    return [(f.rule, f.message) for f in report.failures]


@pytest.mark.parametrize(
    ("kind", "cls", "rule", "start"),
    [
        ("encoders", ExtraMotionToken, "forward", "forward(frames (B, T, 3, H, W) uint8) returned Z_sce (2, 8, 64) and "
         "Z_mot (2, 9, 64); expected (B, Ns, D) = (2, 8, 64) and (B, Nm, D) = (2, 8, 64)"),
        ("encoders", NarrowScene, "forward", "forward(frames (B, T, 3, H, W) uint8) returned Z_sce (2, 8, 63)"),
        ("encoders", IntLatents, "forward", f"forward returned Z_sce of dtype torch.int64 and Z_mot of dtype "
         f"torch.int64; {FLOATING}"),
        ("encoders", ThreeOutputs, "forward", "forward must return (Z_sce, Z_mot), got a tuple of 3 items"),
        ("encoders", NoBlocks, "repeated_blocks", "needs a method repeated_blocks() -> list[nn.Module]: FSDP wrapping "
         "and activation checkpointing call it"),
        ("encoders", FramesOnly, "forward", "has forward(frames), which cannot take the arguments the LAM stage and "
         "distillation's teacher pass (too many positional arguments); expected " + ENCODER_SIGNATURES["forward"]),
        ("students", ShortLatents, "forward", 'forward(...)["latents"] must be (B, Ns + Nm, D_teacher) = (2, 8, 40), '
         "got (2, 7, 40)"),
        ("students", IntLatentStudent, "forward", f'forward(...)["latents"] has dtype torch.int64; {FLOATING}'),
        ("students", MissingLayer, "hidden_states", 'forward(..., hidden_states=True)["layers"] must hold num_layers '
         "+ 1 = 3 tensors, got 2"),
        ("students", NoNumLayers, "num_layers", "needs " + STUDENT_SIGNATURES["num_layers"] + ": the finetuning "
         "stage reads it"),
        ("students", NoHiddenStates, "forward", "has forward(frames, instructions, subtasks=None), which cannot take "
         "the arguments distillation and finetuning pass (got an unexpected keyword argument 'hidden_states'); "
         "expected " + STUDENT_SIGNATURES["forward"]),
        ("action_experts", NoEeLoss, "loss", 'loss must return the keys "loss", "ee", "gripper" (the stage logs all '
         "three); lacks ['ee']"),
        ("action_experts", ShortChunk, "sample", "sample must return (actions (B, H, 44), gripper (B, H, 2)) = "
         "((2, 5, 44), (2, 5, 2)), got (2, 4, 44) and (2, 4, 2)"),
        ("action_experts", NoSample, "sample", "needs a method " + EXPERT_SIGNATURES["sample"] + ": the policy "
         "(`latbot eval`, `latbot serve`) calls it"),
        ("action_experts", NoGripperArgument, "loss", "has loss(actions, action_mask, pad, state, layers, ctx_mask), "
         "which cannot take the arguments finetuning passes (too many positional arguments); expected "
         + EXPERT_SIGNATURES["loss"]),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)  # fmt: skip
def test_plugins_check_names_the_broken_member_in_one_failure(kind, cls, rule, start):
    found = failures(kind, cls)
    assert len(found) == 1, found
    assert found[0][0] == rule and found[0][1].startswith(start), found


def test_a_member_that_fails_its_signature_check_is_not_run_again():
    report = check("encoders", "frames_only")
    assert "members" not in report.passed and any(s.startswith("forward") for s in report.skipped), report


# -- the first call that can see a wrong output names the plugin -----------------------------------------------
def lam(encoder: type, device: str = "cpu") -> LatentActionModel:
    config = SimpleNamespace(
        encoder=encoder.Config(width=WIDTH, heads=2, num_scene_tokens=NS, num_motion_tokens=NM, vocab_buckets=64),
        decoder=TinyMlpDecoder.Config(hidden=16, horizon=1),
        decoupled=True,
        unified_decoder=True,
        image_loss_weight=1.0,
    )
    torch.manual_seed(0)
    with torch.device(device):
        return LatentActionModel(config, num_frames=2)


def lam_batch(device: str = "cpu") -> dict:
    return {
        clips.K_FRAMES: torch.randint(0, 256, (B, 2, 3, 32, 32), dtype=torch.uint8).to(device),
        clips.K_INSTRUCTION: ["pick up the block", "open the drawer"],
        clips.K_ACTIONS: torch.randn(B, 1, 44).to(device),
        clips.K_ACTION_MASK: torch.ones(B, 44, dtype=torch.bool).to(device),
    }


LAM_ERRORS = {
    ExtraMotionToken: f"forward returned z_mot of shape (2, 5, {WIDTH}); expected (B=2, num_motion_tokens=4, width=16)",
    NarrowScene: f"forward returned z_sce of shape (2, 4, {WIDTH - 1}); expected (B=2, num_scene_tokens=4, width=16)",
    IntLatents: f"forward returned z_sce with dtype torch.int64; {FLOATING}",
    ThreeOutputs: "forward returned a tuple of 3 items; expected a pair (z_sce (B=2, num_scene_tokens=4, width=16), "
    "z_mot (B=2, num_motion_tokens=4, width=16))",
}


@pytest.mark.parametrize("encoder", LAM_ERRORS, ids=lambda c: c.__name__)
def test_the_lam_stops_at_its_first_step_naming_the_encoder(encoder):
    model = lam(encoder)
    with pytest.raises(PluginCallError) as e:
        model(lam_batch())
    assert str(e.value) == f"{label('encoders', encoder)}: {LAM_ERRORS[encoder]}"


@pytest.mark.parametrize("encoder", [ExtraMotionToken, IntLatents], ids=lambda c: c.__name__)
def test_the_check_runs_on_the_meta_device(encoder):
    """`latbot plan` runs the model on meta tensors: the checks read shapes and dtypes only."""
    frames, texts = lam_batch("meta")[clips.K_FRAMES], ["a", "b"]
    z_sce, z_mot = lam(TinyConvEncoder, "meta").encode(frames, texts)
    assert z_sce.is_meta and tuple(z_mot.shape) == (B, NM, WIDTH)
    with pytest.raises(
        PluginCallError, match=LAM_ERRORS[encoder].split(";")[0].replace("(", r"\(").replace(")", r"\)")
    ):
        lam(encoder, "meta").encode(frames, texts)


def distill_batch() -> dict:
    return {
        clips.K_FRAMES: torch.randint(0, 256, (B, 1, 3, 32, 32), dtype=torch.uint8),
        clips.K_INSTRUCTION: ["pick up the block", "open the drawer"],
        clips.K_SUBTASK: ["reach the block", "grasp"],  # tiny_cnn cannot take a None subtask (no annotation)
        clips.K_LATENTS: torch.randn(B, NS + NM, 40),
    }


DISTILL_ERRORS = {
    ShortLatents: 'forward returned "latents" of shape (2, 7, 40); expected (B=2, num_scene_tokens + '
    "num_motion_tokens=8, latent_width=40)",
    IntLatentStudent: f'forward returned "latents" with dtype torch.int64; {FLOATING}',
}


@pytest.mark.parametrize("student", DISTILL_ERRORS, ids=lambda c: c.__name__)
def test_distillation_stops_naming_the_student(student):
    built = registry.build("students", student.tiny_config(), latent_width=40)
    model = DistillationModel(built, None, None, 0.5)
    with pytest.raises(PluginCallError) as e:
        model(distill_batch())
    assert str(e.value) == f"{label('students', student)}: {DISTILL_ERRORS[student]}"


def vla(student: type, expert: type) -> VisionLanguageAction:
    torch.manual_seed(0)
    return VisionLanguageAction(student.tiny_config(), expert.tiny_config(), HORIZON)


def vla_batch() -> dict:
    return {
        clips.K_FRAMES: torch.randint(0, 256, (B, 1, 3, 32, 32), dtype=torch.uint8),
        clips.K_INSTRUCTION: ["pick up the block", "open the drawer"],
        clips.K_STATE: torch.randn(B, 46),
        clips.K_STATE_MASK: torch.ones(B, 46),
        clips.K_ACTIONS: torch.randn(B, HORIZON, 44),
        clips.K_GRIPPER: torch.rand(B, HORIZON, 2),
        clips.K_ACTION_MASK: torch.ones(B, 44, dtype=torch.bool),
        clips.K_ACTION_PAD: torch.zeros(B, HORIZON, dtype=torch.bool),
    }


def test_the_vla_names_a_student_whose_hidden_states_miss_a_layer():
    with pytest.raises(PluginCallError) as e:
        vla(MissingLayer, MlpHeadActionExpert)(vla_batch())
    assert str(e.value) == (
        f'{label("students", MissingLayer)}: forward(..., hidden_states=True) returned "layers" as 2 tensors; '
        "expected num_layers + 1 = 3 tensors (the embeddings, then each layer)"
    )


def test_the_vla_names_an_expert_whose_loss_lacks_a_key():
    with pytest.raises(PluginCallError) as e:
        vla(TinyCnnStudent, NoEeLoss)(vla_batch())
    assert str(e.value) == (
        f"{label('action_experts', NoEeLoss)}: loss returned the keys ['gripper', 'loss']; expected the keys "
        '"loss", "ee", "gripper"'
    )


def test_the_vla_names_an_expert_whose_chunk_is_short():
    x = vla_batch()
    model = vla(TinyCnnStudent, ShortChunk)
    assert set(model(x)) >= {"loss", "ee", "gripper"}  # training is fine; sampling is not
    with pytest.raises(PluginCallError) as e:
        model.sample(x[clips.K_FRAMES], x[clips.K_INSTRUCTION], x[clips.K_STATE], x[clips.K_STATE_MASK], None)
    assert str(e.value) == (
        f"{label('action_experts', ShortChunk)}: sample returned actions of shape (2, 2, 44); expected (B=2, "
        "horizon=3, action_dim=44)"
    )


def test_healthy_example_plugins_pass_every_runtime_check():
    assert set(lam(TinyConvEncoder)(lam_batch())) == {"loss", "image", "action"}
    student = registry.build("students", TinyCnnStudent.tiny_config(), latent_width=40)
    assert "loss" in DistillationModel(student, None, None, 0.5)(distill_batch())
    model, x = vla(TinyCnnStudent, MlpHeadActionExpert), vla_batch()
    assert set(model(x)) >= {"loss", "ee", "gripper"}
    actions, gripper = model.sample(
        x[clips.K_FRAMES], x[clips.K_INSTRUCTION], x[clips.K_STATE], x[clips.K_STATE_MASK], None
    )
    assert tuple(actions.shape) == (B, HORIZON, 44) and tuple(gripper.shape) == (B, HORIZON, 2)
