"""Contract tests over every registered encoder, decoder, student and action expert (built-in and
third-party), through `latbot.testing.contracts` (the checks `latbot plugins check` runs), plus what only
LatBot's own models promise: learnable latent queries, a frozen vision tower, real-size parameter counts,
loading SANA weights."""

from __future__ import annotations

import pytest
import torch

from latbot import registry
from latbot.testing.contracts import check, tiny_config


def tiny(kind: str, name: str):
    return tiny_config(registry.get(kind, name))


MODEL_KINDS = ("encoders", "decoders", "students", "action_experts")
ENCODERS = registry.names("encoders")
DECODERS = registry.names("decoders")


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k in MODEL_KINDS for n in registry.names(k)])
def test_every_model_plugin_passes_its_contract(kind, name):
    """latbot.testing.contracts (what `latbot plugins check` runs): forward shapes on the documented dummy
    inputs, returned keys, required fields and properties, backward, repeated_blocks(), state_dict round trip
    and Config round trip."""
    report = check(kind, name)
    assert report.ok, "\n".join(map(str, report.failures))
    assert {"build", "backward", "state_dict", "repeated_blocks", "config"} <= set(report.passed), report.passed
    if kind in ("decoders", "action_experts"):  # `sample` is what viz, the diagnostics and the policy call
        assert "sample" in report.passed, report.passed


def frames(b=2, t=2, size=24):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g)


BUILTIN_VLMS = [(k, n) for k in ("encoders", "students") for n in registry.names(k) if registry.entry(k, n).is_builtin]


@pytest.mark.parametrize(("kind", "name"), BUILTIN_VLMS)
def test_builtin_vlms_train_their_latent_queries_and_freeze_the_vision_tower(kind, name):
    """LatBot's own VLM encoders and students (not part of the plugin contract): the gradient reaches the
    learnable [CP_SCE]/[CP_MOT] query embeddings and not the frozen vision tower."""
    torch.manual_seed(0)
    cfg = tiny(kind, name)
    if kind == "encoders":
        model = registry.build(kind, cfg)
        loss = sum(z.square().mean() for z in model(frames(t=cfg.num_frames), ["pick up the puck", "open it"]))
    else:
        model = registry.build(kind, cfg, latent_width=40)
        out = model(frames(t=1), ["pick up the puck", "open the drawer"], subtasks=["reach the puck", "grasp"])
        loss = out["latents"].square().mean() + out["lm_loss"]
    loss.backward()
    learnable = [p for n, p in model.named_parameters() if "queries" in n]
    assert learnable and all(p.grad is not None and p.grad.abs().sum() > 0 for p in learnable)
    vision = getattr(getattr(model, "vlm", None), "vision_tower", None)
    if vision is not None and kind == "encoders":  # VLM encoders freeze their vision tower by default
        assert all(not p.requires_grad and p.grad is None for p in vision.parameters())


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
