"""Contract tests over every registered encoder and decoder (built-in and third-party), on tiny configs:
forward shapes, gradients reach the learnable tokens and not the frozen vision tower, save/load and
config round trips."""

from __future__ import annotations

import io

import pytest
import torch

from latbot import registry


def tiny(kind: str, name: str):
    cls = registry.get(kind, name)
    return getattr(cls, "tiny_config", cls.Config)()


ENCODERS = registry.names("encoders")
DECODERS = registry.names("decoders")


def frames(b=2, t=2, size=24):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_forward_backward_and_frozen_vision(name):
    torch.manual_seed(0)
    cfg = tiny("encoders", name)
    enc = registry.build("encoders", cfg)
    z_sce, z_mot = enc(frames(t=getattr(cfg, "num_frames", 2)), ["pick up the puck", "open the drawer"])
    assert z_sce.shape == (2, cfg.num_scene_tokens, enc.width) and z_mot.shape == (2, cfg.num_motion_tokens, enc.width)
    (z_sce.square().mean() + z_mot.square().mean()).backward()
    learnable = [p for n, p in enc.named_parameters() if "queries" in n]
    assert learnable and all(p.grad is not None and p.grad.abs().sum() > 0 for p in learnable)
    vision = getattr(getattr(enc, "vlm", None), "vision_tower", None)
    if vision is not None:  # VLM encoders freeze their vision tower by default
        assert all(not p.requires_grad and p.grad is None for p in vision.parameters())


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_state_and_config_round_trip(name):
    torch.manual_seed(0)
    cfg = tiny("encoders", name)
    a = registry.build("encoders", cfg)
    cls = registry.get("encoders", name)
    assert cls.Config.model_validate(cfg.model_dump()) == cfg
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    torch.manual_seed(1)
    b = registry.build("encoders", cls.Config.model_validate(cfg.model_dump()))
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    x, text = frames(t=getattr(cfg, "num_frames", 2)), ["reach the goal", "push the puck"]
    a.eval(), b.eval()
    for za, zb in zip(a(x, text), b(x, text), strict=True):
        torch.testing.assert_close(za, zb)


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_losses_backward_sampling_and_round_trip(name):
    torch.manual_seed(0)
    cfg = tiny("decoders", name)
    dec = registry.build("decoders", cfg, latent_width=24)
    with torch.no_grad():  # adaLN-zero / zero-initialised outputs pass no gradient at step 0: move off zero
        for p in dec.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    k = cfg.horizon
    z = torch.randn(2, 4, 24, requires_grad=True)
    f = frames(t=2)
    mask = torch.zeros(2, 44)
    mask[:, 7:14] = 1
    losses = dec(z, z, f[:, 0], f[:, 1], torch.randn(2, k, 44), mask)
    assert set(losses) == {"image", "action"} and all(torch.isfinite(v) for v in losses.values())
    (losses["image"] + losses["action"]).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    if hasattr(dec, "sample"):
        frame, actions = dec.sample(z.detach(), z.detach(), f[:, 0])
        assert frame.shape[:2] == (2, 3) and actions.shape == (2, k, 44)
        assert 0 <= frame.min() and frame.max() <= 1
    state = {n: t.clone() for n, t in dec.state_dict().items()}
    twin = registry.build(
        "decoders", registry.get("decoders", name).Config.model_validate(cfg.model_dump()), latent_width=24
    )
    twin.load_state_dict(state)
    assert all(torch.equal(state[n], t) for n, t in twin.state_dict().items())


def test_action_loss_ignores_invalid_dims():
    torch.manual_seed(0)
    dec = registry.build("decoders", tiny("decoders", "dit"), latent_width=8)
    z = torch.randn(1, 2, 8)
    f = frames(b=1, t=2)
    mask = torch.zeros(1, 44)
    mask[:, :3] = 1
    actions = torch.zeros(1, 1, 44)
    torch.manual_seed(5)
    a = dec(z, z, f[:, 0], f[:, 1], actions, mask)["action"]
    actions[..., 3:] = 1e6  # garbage in dims the embodiment does not fill
    torch.manual_seed(5)
    b = dec(z, z, f[:, 0], f[:, 1], actions, mask)["action"]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("name", "expected_billions"), [("internvl", 2.04), ("paligemma", 2.94)])
def test_real_size_encoders_build_on_the_meta_device(name, expected_billions):
    cls = registry.get("encoders", name)
    with torch.device("meta"):
        enc = cls(cls.Config())
    total = sum(p.numel() for p in enc.parameters())
    assert abs(total / 1e9 - expected_billions) < 0.02, total
    vision = sum(p.numel() for p in enc.vlm.vision_tower.parameters())
    assert sum(p.numel() for p in enc.parameters() if p.requires_grad) == total - vision  # vision tower frozen


def test_sana_decoder_loads_a_saved_diffusers_checkpoint_with_identical_outputs(tmp_path):
    cls = registry.get("decoders", "sana")
    torch.manual_seed(0)
    original = cls(cls.tiny_config(), latent_width=24)
    original.transformer.save_pretrained(tmp_path / "sana" / "transformer")
    original.vae.save_pretrained(tmp_path / "sana" / "vae")
    loaded = cls(cls.tiny_config().model_copy(update={"pretrained": str(tmp_path / "sana")}), latent_width=24)
    loaded.load_state_dict(
        {k: v for k, v in original.state_dict().items() if not k.startswith(("transformer.", "vae."))}, strict=False
    )
    z = torch.randn(1, 3, 24)
    f = frames(b=1, t=2, size=16)
    a = original.sample(z, z, f[:, 0], generator=torch.Generator().manual_seed(0))
    b = loaded.sample(z, z, f[:, 0], generator=torch.Generator().manual_seed(0))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    from latbot.models.loading import ModelBuildError

    with pytest.raises(ModelBuildError, match="cannot load a SANA checkpoint"):
        cls(cls.tiny_config().model_copy(update={"pretrained": str(tmp_path / "missing")}), latent_width=24)


STUDENTS = registry.names("students")
EXPERTS = registry.names("action_experts")


@pytest.mark.parametrize("name", STUDENTS)
def test_student_latents_reasoning_loss_and_hidden_states(name):
    torch.manual_seed(0)
    cfg = tiny("students", name)
    student = registry.build("students", cfg, latent_width=40)
    out = student(frames(t=1), ["pick up the puck", "open the drawer"], subtasks=["reach the puck", "grasp"])
    assert out["latents"].shape == (2, cfg.num_scene_tokens + cfg.num_motion_tokens, 40)
    assert out["lm_loss"].ndim == 0 and torch.isfinite(out["lm_loss"])
    (out["latents"].square().mean() + out["lm_loss"]).backward()
    queries = [p for n, p in student.named_parameters() if "queries" in n]
    assert queries and all(p.grad is not None and p.grad.abs().sum() > 0 for p in queries)
    ctx = student(frames(t=2), ["reach the goal", "push the puck"], hidden_states=True)  # two cameras
    assert len(ctx["layers"]) == student.num_layers + 1
    assert ctx["layers"][-1].shape[:2] == ctx["attention_mask"].shape and ctx["layers"][-1].shape[-1] == student.width


@pytest.mark.parametrize("name", EXPERTS)
def test_action_expert_loss_and_sampling_shapes(name):
    torch.manual_seed(0)
    expert = registry.build("action_experts", tiny("action_experts", name), vlm_width=24, vlm_layers=3, horizon=5)
    layers = [torch.randn(2, 7, 24) for _ in range(4)]
    ctx_mask = torch.ones(2, 7, dtype=torch.bool)
    mask = torch.ones(2, 44, dtype=torch.bool)
    out = expert.loss(
        torch.randn(2, 5, 44), torch.rand(2, 5, 2), mask, torch.zeros(2, 5, dtype=torch.bool), torch.randn(2, 46),
        layers, ctx_mask,
    )  # fmt: skip
    assert {"loss", "ee", "gripper"} <= set(out) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in expert.parameters())
    actions, grip = expert.sample(torch.randn(2, 46), layers, ctx_mask, mask, torch.Generator().manual_seed(0))
    assert actions.shape == (2, 5, 44) and grip.shape == (2, 5, 2) and ((grip >= 0) & (grip <= 1)).all()
