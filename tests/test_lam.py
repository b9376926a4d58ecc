"""The latent action model end to end on CPU: recipes build it, ablations switch streams, a tiny LAM
fits a handful of clips, Z_mot carries action information, and real weights load via from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from latbot.analysis.diagnostics import action_mse_per_slice, effective_rank, linear_probe, psnr, token_variance
from latbot.data.clips import ClipDataset
from latbot.data.convert import finalize
from latbot.data.store import EpisodeStore
from latbot.errors import LatBotError
from latbot.models.lam import LatentActionModel
from latbot.models.loading import ModelBuildError
from latbot.recipes import load_recipe
from tests.conftest import REPO
from tests.test_store import episode

TINY = REPO / "recipes/tiny/lam.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("lam") / "store"
    with EpisodeStore.create(path, cameras=["cam"], image_size=(32, 32)) as s:
        for i in range(8):
            s.append(episode(f"e{i}", steps=20, size=32, seed=i))
        finalize(s)
    return path


def build(overrides=()):
    recipe = load_recipe(TINY, list(overrides))
    torch.manual_seed(0)
    return LatentActionModel(recipe.model, recipe.data.num_frames)


def build_with_decoder(recipe_path, overrides, decoder: str):
    """The LAM of a tiny recipe with its own DiT decoder ("dit") or the tiny SANA one ("sana")."""
    from latbot import registry

    r = load_recipe(recipe_path, list(overrides))
    config = r.model
    if decoder == "sana":
        sana = registry.get("decoders", "sana").tiny_config().model_copy(update={"horizon": r.data.num_frames - 1})
        config = config.model_copy(update={"decoder": sana})
    torch.manual_seed(0)
    return LatentActionModel(config, r.data.num_frames)


@pytest.mark.parametrize(
    ("recipe", "streams"),
    [
        ("lam.yaml", {"image", "action"}),
        ("lam_no_decoupled.yaml", {"image", "action"}),
        ("lam_image_only.yaml", {"image"}),
        ("lam_univla_style.yaml", {"image"}),
        ("lam_paligemma.yaml", {"image", "action"}),
    ],
)
def test_tiny_recipes_and_ablations_build_and_step(store, recipe, streams):
    r = load_recipe(REPO / "recipes/tiny" / recipe)
    torch.manual_seed(0)
    model = LatentActionModel(r.model, r.data.num_frames)
    batch = next(iter(DataLoader(ClipDataset(store, num_frames=4), batch_size=2)))
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert (out["action"].item() != 0) == ("action" in streams)
    z_sce, z_mot = model.latents(batch["frames"], list(batch["instruction"]))
    if r.model.decoupled:  # full and DLA only: the two groups, each into its own pathway
        assert z_sce.shape == z_mot.shape == (2, 8, model.encoder.width) and not torch.equal(z_sce, z_mot)
    elif r.model.unified_decoder:  # UAD only: one group of 16 feeds both streams alike
        assert z_sce.shape == (2, 16, model.encoder.width) and torch.equal(z_sce, z_mot)
    else:  # UniVLA-style: one group, image stream only
        assert z_sce.shape == (2, 16, model.encoder.width) and z_mot is None


def test_mismatched_horizon_and_frames_are_build_time_errors():
    with pytest.raises(LatBotError, match=r"model.decoder.horizon is 5.*set model.decoder.horizon"):
        build(["model.decoder.horizon=5"])
    with pytest.raises(LatBotError, match=r"model\.encoder\.num_frames is 4, data\.num_frames is 6"):
        build(["data.num_frames=6", "model.decoder.horizon=5"])


def sampled_action_error(model, batch) -> float:
    torch.manual_seed(123)
    with torch.no_grad():
        z_sce, z_mot = model.latents(batch["frames"], list(batch["instruction"]))
        _, actions = model.decoder.sample(z_sce, z_mot, batch["frames"][:, 0])
    mask = batch["action_mask"][:, None, :].float()
    return float(((actions - batch["actions"]) ** 2 * mask).sum() / (mask.sum() * actions.shape[1]))


def test_tiny_lam_fits_a_handful_of_clips_and_z_mot_probes_actions(store):
    dataset = ClipDataset(store, num_frames=4)
    batch = next(iter(DataLoader(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))))
    model = build()
    untrained_error = sampled_action_error(model, batch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for step in range(1500):
        for group in opt.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 50)
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(out["loss"].item())
    assert np.mean(losses[-50:]) < np.mean(losses[:20]) / 10  # overfits: the loss drops by ≥ 10×
    assert sampled_action_error(model, batch) < untrained_error / 4  # generated actions approach the truth

    # Z_mot linear probe of the true actions, held out, vs the same probe on random features
    loader = DataLoader(dataset, batch_size=32)
    feats, targets = [], []
    with torch.no_grad():
        for b in loader:
            _, z_mot = model.latents(b["frames"], list(b["instruction"]))
            feats.append(z_mot.mean(1).numpy())
            targets.append(b["actions"][:, :, 7:10].flatten(1).numpy())  # right-arm xyz deltas
    feats, targets = np.concatenate(feats), np.concatenate(targets)
    random = np.random.default_rng(0).normal(size=feats.shape)
    assert linear_probe(feats, targets) > linear_probe(random, targets) + 0.1


def test_diagnostics_on_known_inputs():
    z = torch.randn(50, 4, 8)
    assert effective_rank(torch.ones(50, 4, 8) * torch.randn(50, 1, 1)) == pytest.approx(1.0, abs=1e-6)  # collapse
    assert effective_rank(z) > 20
    assert torch.all(token_variance(torch.ones(10, 3, 4)) == 0)
    img = torch.rand(2, 3, 8, 8)
    assert psnr(img, img + 0.1) == pytest.approx(20.0, abs=1e-3)
    mask = torch.zeros(2, 44)
    mask[:, 7:14] = 1
    err = action_mse_per_slice(torch.ones(2, 3, 44), torch.zeros(2, 3, 44), mask)
    assert set(err) == {"right_pos", "right_rot", "right_gripper"} and all(v == 1.0 for v in err.values())


def test_pretrained_directory_loads_through_a_recipe_with_identical_outputs(tmp_path, store):
    from latbot import registry

    cls = registry.get("encoders", "internvl")
    torch.manual_seed(0)
    original = cls(cls.Config(preset="tiny", num_frames=4, num_scene_tokens=8, num_motion_tokens=8))
    original.vlm.save_pretrained(tmp_path / "tiny_internvl")
    original.tokenizer.save_pretrained(tmp_path / "tiny_internvl")
    model = build([f"model.encoder.pretrained={tmp_path / 'tiny_internvl'}"])
    model.encoder.scene_queries.data.copy_(original.scene_queries)
    model.encoder.motion_queries.data.copy_(original.motion_queries)
    batch = next(iter(DataLoader(ClipDataset(store, num_frames=4), batch_size=2)))
    original.eval(), model.eval()
    for a, b in zip(
        original(batch["frames"], list(batch["instruction"])),
        model.encode(batch["frames"], list(batch["instruction"])),
        strict=True,
    ):
        torch.testing.assert_close(a, b)
    with pytest.raises(ModelBuildError, match="does not exist"):
        build([f"model.encoder.pretrained={tmp_path / 'nope'}"])
    pali = registry.get("encoders", "paligemma")
    pali(pali.Config(preset="tiny")).vlm.save_pretrained(tmp_path / "pali")
    with pytest.raises(ModelBuildError, match="holds a 'paligemma' model, but this encoder needs 'internvl'"):
        build([f"model.encoder.pretrained={tmp_path / 'pali'}"])


def test_real_size_recipes_count_parameters_on_the_meta_device():
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "latbot",
            "recipe",
            "show",
            str(REPO / "recipes/lam_internvl.yaml"),
            "--params",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    parts = json.loads(proc.stdout)["components"]
    encoder = sum(parts[k]["total"] for k in ("encoder.vision_tower", "encoder.projector", "encoder.language_model"))
    lm_head = 151936 * 2048  # untied in the published checkpoint; the encoder does not need it
    assert abs((encoder + lm_head) / 1e9 - 2.35) < 0.02  # InternVL3.5-2B ≈ 2.3B
    assert abs(parts["decoder.transformer"]["total"] / 1e9 - 1.60) < 0.01  # SANA-1.6B
    assert parts["encoder.vision_tower"]["trainable"] == 0 and parts["decoder.vae"]["trainable"] == 0


def test_reconstruction_is_judged_on_the_moving_region_against_copying_the_first_frame():
    from latbot.analysis.diagnostics import reconstruction_quality, ssim_map

    torch.manual_seed(0)
    background = torch.rand(1, 3, 1, 1).expand(2, 3, 32, 32).clone()
    first, truth = background.clone(), background.clone()
    first[:, :, 2:8, 2:8] = 1.0  # the object moves from top-left ...
    truth[:, :, 20:26, 20:26] = 1.0  # ... to bottom-right
    assert float(ssim_map(truth, truth).mean()) == pytest.approx(1.0)
    exact = reconstruction_quality(truth, truth, first)
    copy = reconstruction_quality(first, truth, first)
    assert exact["psnr_moving_db"] > 100 and exact["ssim_moving"] == pytest.approx(1.0)
    # copying V_t scores well on the whole (mostly static) frame but not where things move
    assert copy["psnr_db"] > 10 + copy["psnr_moving_db"] and copy["ssim_moving"] < 0.5
    assert copy["copy_psnr_moving_db"] == pytest.approx(copy["psnr_moving_db"])
    assert 0.05 < exact["moving_fraction"] < 0.2


# -- Table 5's variants differ exactly in what the paper names: which tokens take which pathway, which losses --
VARIANTS = {  # recipe → (decoupled latents, unified action decoder)
    "lam.yaml": (True, True),
    "lam_image_only.yaml": (True, False),  # "DLA only" (Ours-v1)
    "lam_no_decoupled.yaml": (False, True),  # "UAD only" (Ours-v2)
    "lam_univla_style.yaml": (False, False),
}


def _pathways(model) -> dict[str, str]:
    """The decoder's entry points for each pathway: the image stream's latent projection, the motion
    stream's, and the noisy actions' (the names differ between the DiT and SANA decoders)."""
    scene = "scene_proj" if hasattr(model.decoder, "scene_proj") else "scene_adapter"
    return {"scene": scene, "motion": "motion_proj", "actions": "action_in"}


@pytest.mark.parametrize("decoder", ["dit", "sana"])
@pytest.mark.parametrize("recipe", list(VARIANTS))
def test_table5_variants_differ_in_information_flow(store, recipe, decoder):
    decoupled, unified = VARIANTS[recipe]
    model = build_with_decoder(REPO / "recipes/tiny" / recipe, [], decoder)
    batch = next(iter(DataLoader(ClipDataset(store, num_frames=4), batch_size=2)))
    seen: dict[str, torch.Tensor] = {}

    def record(key):
        def hook(module, inputs, output) -> None:  # (returns None: the output stays the module's)
            seen.setdefault(key, inputs[0].detach())

        return hook

    hooks = [getattr(model.decoder, attr).register_forward_hook(record(key)) for key, attr in _pathways(model).items()]
    out = model(batch)
    for h in hooks:
        h.remove()
    z_sce, z_mot = model.encode(batch["frames"], list(batch["instruction"]))
    group = torch.cat([z_sce, z_mot], 1)
    # which tokens enter which pathway
    if decoupled:
        assert torch.allclose(seen["scene"], z_sce) and torch.allclose(seen["motion"], z_mot)  # kept apart
    else:
        assert torch.allclose(seen["scene"], group)  # one group of Ns + Nm tokens
        assert ("motion" in seen) == unified and (not unified or torch.allclose(seen["motion"], group))
    assert ("actions" in seen) == unified  # noisy actions only with the unified action decoder
    # which losses apply
    assert (float(out["action"].detach()) != 0.0) == unified and float(out["image"].detach()) > 0
    # the motion pathway is trained by the image loss alone in DLA only, and does not exist in UniVLA-style
    with torch.no_grad():  # off the zero-initialised output layers, which block every gradient at step 0
        for p in model.decoder.parameters():
            if p.dim() > 1 and not p.abs().sum():
                p.normal_(0, 0.02)
    model.zero_grad()
    model(batch)["image"].backward()
    motion = model.decoder.motion_proj.weight.grad
    assert (motion is not None and float(motion.abs().sum()) > 0) == (decoupled or unified)
    # the encoder's answer: two descriptions and groups when decoupled, one otherwise
    from latbot.models.template import ANSWER_MOTION, ANSWER_SINGLE

    ids = model.encoder.sequence("open the drawer", 4)

    def holds(part: str) -> bool:
        sub = model.encoder._text(part)
        return any(ids[i : i + len(sub)] == sub for i in range(len(ids)))

    assert holds(ANSWER_MOTION) == decoupled and holds(ANSWER_SINGLE) == (not decoupled)


def test_action_stream_r2_separates_a_draw_from_the_point_prediction():
    """A generative model's single draw carries the conditional spread (R² ≈ 1 − 2·Var(a|z)/Var(a)), the mean of
    its draws estimates E[a | z]: with the latents explaining 60% of the variance, one draw scores ≈ 0.2 and the
    mean of 8 draws ≈ 0.55, while a constant (zeros) scores ≤ 0."""
    from latbot.analysis.diagnostics import action_stream_r2

    rng = np.random.default_rng(0)
    n, k, a = 4000, 3, 4
    explained = rng.normal(0, np.sqrt(0.6), (n, k, a))  # E[a | z]
    truth = explained + rng.normal(0, np.sqrt(0.4), (n, k, a))
    draws = explained[None] + rng.normal(0, np.sqrt(0.4), (8, n, k, a))  # a perfect conditional model
    valid = np.array([True, True, True, False])
    r = action_stream_r2(draws, truth, valid)
    assert r["one_sample"] == pytest.approx(1 - 2 * 0.4, abs=0.03)
    assert r["mean_of_samples"] == pytest.approx(1 - 0.4 - 0.4 / 8, abs=0.03)
    assert r["constant"] <= 0 and r["draws"] == 8


def test_action_stream_r2_per_slice_shows_what_the_pooled_value_hides():
    """A stream that reads the arm's position deltas and gets the gripper wrong: the pooled R² (each slice weighed
    by its variance, the gripper's the largest) is below 0, the position slice's is near 1, the gripper's far
    below 0; counterfactuals are split the same way; only the valid dims of each slice count."""
    from latbot.analysis.diagnostics import action_stream_r2
    from latbot.data.spaces import ACTION_GRIPPER, ACTION_POS

    rng = np.random.default_rng(2)
    n, pos, grip = 600, ACTION_POS["right"], ACTION_GRIPPER["right"]
    truth = np.zeros((n, 3, 44))
    truth[..., pos] = rng.normal(0, 0.5, (n, 3, 3))
    truth[..., grip] = rng.normal(0, 2.0, (n, 3))
    draws = np.repeat(truth[None], 4, 0)
    draws[..., grip] = -truth[..., grip]  # the gripper's schedule, wrong
    valid = np.zeros(44, bool)
    valid[pos], valid[grip] = True, True
    r = action_stream_r2(draws, truth, valid, {"frames_frozen": np.zeros_like(draws)})
    assert set(r["per_slice"]) == {"right_pos", "right_gripper"}
    assert r["mean_of_samples"] < 0 < 0.99 < r["per_slice"]["right_pos"]["mean_of_samples"]
    assert r["per_slice"]["right_gripper"]["mean_of_samples"] < -3
    assert r["per_slice"]["right_pos"]["frames_frozen"] == pytest.approx(r["per_slice"]["right_pos"]["constant"])
    truth[:, 1:, grip] = truth[:, :1, grip]  # a gripper held for the chunk: persistence reads it exactly
    r = action_stream_r2(draws, truth, valid)
    assert r["per_slice"]["right_gripper"]["copy_first"] == pytest.approx(1.0)  # persistence, per slice too
    assert r["per_slice"]["right_pos"]["copy_first"] < 0.5 < r["per_slice"]["right_pos"]["mean_of_samples"]


@pytest.mark.parametrize("decoder", ["dit", "sana"])
def test_flow_draws_decode_each_clip_several_times_from_one_encoding(store, monkeypatch, decoder):
    """`model.flow_draws: k` (training only): the encoder runs once per clip and the decoder's flow losses see
    each clip's latents, frames, actions and mask k times in a row (k (time, noise) draws, averaged); in eval
    the decoder sees each clip once. For every decoder plugin."""
    model = build_with_decoder(TINY, ["model.flow_draws=3"], decoder)
    encoded, decoded = [], []
    encode, decode = model.encoder.forward, model.decoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda f, w: encoded.append(len(f)) or encode(f, w))
    monkeypatch.setattr(model.decoder, "forward", lambda *a: decoded.append(a) or decode(*a))
    batch = next(iter(DataLoader(ClipDataset(store, num_frames=4), batch_size=4)))
    out = model.train()(batch)
    assert encoded == [4] and torch.isfinite(out["loss"])
    z_sce, _, first, _, actions, mask = decoded[0]
    assert len(z_sce) == len(actions) == len(mask) == len(first) == 12
    assert torch.equal(actions[3:6], batch["actions"][1].expand(3, -1, -1))  # clip 1, three times in a row
    assert torch.equal(first[9:], batch["frames"][3, 0].expand(3, -1, -1, -1))
    assert torch.equal(z_sce[0], z_sce[2]) and not torch.equal(z_sce[2], z_sce[3])
    model.eval()(batch)
    assert len(decoded[1][0]) == 4


def test_a_scene_free_action_stream_does_not_see_the_image():
    """The DiT's `action_attends_image: false`: the action velocities do not change when the image stream's input
    (V_t, the noisy future, Z_sce) does, while they do with the default joint attention; the image velocities
    still depend on the action stream either way."""
    from latbot import registry

    cls = registry.get("decoders", "dit")
    velocities = {}
    for sees in (True, False):
        torch.manual_seed(0)
        dec = cls(cls.tiny_config().model_copy(update={"action_attends_image": sees, "horizon": 3}), latent_width=8)
        for name, w in dec.named_parameters():  # adaLN-zero and the outputs start at 0: give every weight a value
            if name.endswith("weight") and ("modulation" in name or "_out" in name):
                torch.nn.init.normal_(w, std=0.5)
        g = torch.Generator().manual_seed(1)
        img, ctx = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
        act = torch.randn(2, 3, 44, generator=g)
        z_sce, z_mot = torch.randn(2, 4, 8, generator=g), torch.randn(2, 4, 8, generator=g)
        t = torch.full((2,), 0.5)
        base = dec.velocity(img, ctx, act, z_sce, z_mot, t)
        other_image = dec.velocity(img + 1, ctx - 1, act, z_sce + 1, z_mot, t)
        other_action = dec.velocity(img, ctx, act + 1, z_sce, z_mot + 1, t)
        velocities[sees] = (base, other_image, other_action)
    for sees, (base, other_image, other_action) in velocities.items():
        assert torch.allclose(base[1], other_image[1]) != sees  # the action stream sees the image only by default
        assert not torch.allclose(base[0], other_action[0])  # the image stream always sees the action stream


def test_motion_head_reads_the_actions_from_z_mot_only(store):
    """`model.motion_head_weight: w`: the loss gains w × the masked MSE of a linear read-out of the clip's actions
    from Z_mot; its gradient reaches the encoder through Z_mot and the head, never the decoder; off (0) the model
    has no head; variants without Z_mot or without actions refuse it."""
    batch = next(iter(DataLoader(ClipDataset(store, num_frames=4), batch_size=4)))
    model = build(["model.motion_head_weight=2.0"]).train()
    out = model(batch)
    assert torch.allclose(out["loss"], out["action"] + out["image"] + 2.0 * out["motion_head"])
    model.zero_grad()
    out["motion_head"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["motion_head.weight"].abs().sum() > 0
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("encoder."))
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n.startswith("decoder."))
    assert build().motion_head is None and "motion_head" not in build()(batch)
    for variant in ("lam_no_decoupled.yaml", "lam_image_only.yaml"):
        r = load_recipe(REPO / "recipes/tiny" / variant, ["model.motion_head_weight=1.0"])
        with pytest.raises(LatBotError, match="motion_head_weight"):
            LatentActionModel(r.model, r.data.num_frames)


def test_shift_augment_moves_a_whole_clip_by_one_offset():
    """`shift_clips`: every frame of a clip is moved by the same offset (in [−pad, pad]), so the differences between
    its frames are kept; clips get different offsets; uint8 stays uint8 and exact; pad 0 changes nothing."""
    from latbot.models.lam import shift_clips

    y, x = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    ramp = (x + 16 * y).to(torch.uint8)  # every pixel a distinct value: its position can be read back
    frames = torch.stack([ramp + t for t in range(3)])[None, :, None].repeat(6, 1, 3, 1, 1)  # (6, 3, 3, 16, 16)
    out = shift_clips(frames, 2, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == frames.shape
    offsets = set()
    for clip in out:
        assert torch.equal(clip - clip[:1], frames[0] - frames[0, :1])  # the motion between frames is kept
        centre = int(clip[0, 0, 8, 8])
        dy, dx = centre // 16 - 8, centre % 16 - 8
        assert abs(dy) <= 2 and abs(dx) <= 2
        assert torch.equal(clip[0, 0, 4:12, 4:12], ramp[4 + dy : 12 + dy, 4 + dx : 12 + dx])
        offsets.add((dy, dx))
    assert len(offsets) > 1
    assert torch.equal(shift_clips(frames, 0), frames)


def test_instruction_dropout_blanks_instructions_only_in_training(store, monkeypatch):
    """`model.instruction_dropout: p` hands the encoder "" instead of a clip's instruction with probability p
    while training (so the latents must come from the frames), never in eval, and not at all at p = 0."""
    seen: list[list[str]] = []
    model = build(["model.instruction_dropout=0.5"])
    real = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda frames, words: seen.append(list(words)) or real(frames, words))
    batch = next(iter(DataLoader(ClipDataset(store, num_frames=4), batch_size=8)))
    batch["instruction"] = ["open the drawer"] * 8
    torch.manual_seed(0)
    model.train()
    for _ in range(8):
        model(batch)
    blanked = [w == "" for words in seen for w in words]
    assert 0.3 < np.mean(blanked) < 0.7 and set(w for words in seen for w in words) == {"", "open the drawer"}
    seen.clear()
    model.eval()
    model(batch)
    assert seen == [["open the drawer"] * 8]
    plain = build()
    plain.encoder.forward = lambda frames, words: seen.append(list(words)) or real(frames, words)
    seen.clear()
    plain.train()
    plain(batch)
    assert seen == [["open the drawer"] * 8]
    with pytest.raises(LatBotError, match="instruction_dropout"):
        load_recipe(TINY, ["model.instruction_dropout=1.0"])


def test_action_stream_counterfactuals_tell_a_policy_from_an_inverse_dynamics_model():
    """The counterfactual R²s (`frames_frozen`, …) score the mean of draws made from altered inputs: a stream that
    ignores the motion scores the same with the frames frozen, one that reads it drops to ≤ 0."""
    from latbot.analysis.diagnostics import action_stream_r2, swapped_instructions

    rng = np.random.default_rng(1)
    truth = rng.normal(size=(500, 3, 2))
    valid = np.ones(2, bool)
    reads_motion = truth[None] + rng.normal(0, 0.1, (4, 500, 3, 2))
    frozen = rng.normal(0, 0.1, (4, 500, 3, 2))  # with no motion visible it predicts ~the mean
    r = action_stream_r2(reads_motion, truth, valid, {"frames_frozen": frozen, "policy_like": reads_motion})
    assert r["mean_of_samples"] > 0.9 and r["frames_frozen"] <= 0.0 and r["policy_like"] == r["mean_of_samples"]
    assert swapped_instructions(["a", "a", "b"]) == ["b", "b", "a"] and swapped_instructions(["a", "a"]) == ["a", "a"]


def _dot_clips(n: int, tasks: int, seed: int):
    """Clips (n, 2, 3, 16, 16) of a dot that moves by its action (2,) over a background of its task's colour."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, 2, 3, 16, 16), np.float32)
    task = rng.integers(0, tasks, n)
    frames += (task / tasks)[:, None, None, None, None] * 0.5  # the scene: one colour per task
    start = rng.integers(4, 12, (n, 2))
    move = rng.integers(-3, 4, (n, 2))
    for i in range(n):
        frames[i, 0, :, start[i, 0], start[i, 1]] += 0.5
        frames[i, 1, :, start[i, 0] + move[i, 0], start[i, 1] + move[i, 1]] += 0.5
    return torch.from_numpy(frames), move.astype(np.float64), [f"task {t}" for t in task]


def test_pixel_ridge_reads_motion_across_tasks_and_chooses_its_ridge_without_the_test_clips():
    """`transfer_ridge` on `pixel_features`: a dot's displacement is linear in the frame difference (its
    centroid moves by the action), so the motion features predict other tasks’ actions (R² > 0.7 from 1500
    clips), while actions unrelated to the motion score ≤ 0; λ is chosen on held-out training tasks (clips,
    given one task), never by the test clips."""
    from latbot.analysis.diagnostics import RIDGE_GRID, pixel_features, transfer_ridge

    frames, move, tasks = _dot_clips(1500, 8, 0)
    test_frames, test_move, _ = _dot_clips(200, 8, 1)
    motion, scene = pixel_features(frames, pool=16)
    test_motion, _ = pixel_features(test_frames, pool=16)
    assert motion.shape == (1500, 3 * 256) and scene.shape == (1500, 3 * 256)
    reads = transfer_ridge(motion, move, tasks, test_motion, test_move)
    assert reads["r2"] > 0.7 and reads["ridge"] in RIDGE_GRID
    unrelated = np.random.default_rng(2).normal(size=move.shape)
    blind = transfer_ridge(motion, unrelated, tasks, test_motion, np.random.default_rng(3).normal(size=test_move.shape))
    assert blind["r2"] < 0.05
    other = transfer_ridge(motion, move, tasks, test_motion, -test_move)  # a different test set: same choice of λ
    assert (other["ridge"], other["validation_r2"]) == (reads["ridge"], reads["validation_r2"]) and other["r2"] < 0
    assert reads["validation"] == "tasks"
    one = transfer_ridge(motion, move, ["one task"] * 1500, test_motion, test_move)  # λ from a quarter of its clips
    assert one["validation"] == "clips" and one["r2"] > 0.7
    mixed = np.stack([move[:, 0], unrelated[:, 0]], 1)  # column 0 readable, column 1 not
    test_mixed = np.stack([test_move[:, 0], np.random.default_rng(4).normal(size=len(test_move))], 1)
    split = transfer_ridge(motion, mixed, tasks, test_motion, test_mixed, groups={"dot": [0], "noise": [1]})
    assert split["per_group"]["dot"] > 0.7 > 0.05 > split["per_group"]["noise"]


def test_tiny64_internvl_sees_64_pixel_frames_as_four_by_four_tokens(store):
    """The `tiny64` preset: the tiny InternVL with a 64² vision tower (16 tokens a frame instead of 4), so a
    CPU-scale LAM can see the arm move; it trains through the same recipe and its grounding maps are 4 × 4."""
    model = build(["model.encoder.preset=tiny64", "model.encoder.freeze_vision=false"])
    assert model.encoder.tokens_per_frame == 16 and model.encoder.image_size == 64
    batch = next(iter(DataLoader(ClipDataset(store, num_frames=4), batch_size=2)))
    out = model(batch)
    out["loss"].backward()
    patches = model.encoder.vlm.vision_tower.embeddings.patch_embeddings.projection
    assert torch.isfinite(out["loss"]) and patches.weight.grad is not None  # the vision tower trains
    att = model.encoder.image_attention(batch["frames"][:, 0], list(batch["instruction"]))
    assert att.shape[-1] == 16


def test_encoder_idm_tool_trains_the_recipes_encoder_and_scores_both_stores(store, tmp_path):
    """tools/encoder_idm.py: the LAM recipe's encoder + a linear head on Z_mot, trained by MSE for the recipe's
    steps, scored on the pretraining clips and the held-out store (normal and frames frozen, next to the
    constant); a recipe with no data source is refused with a message saying how to give one."""
    import json
    import subprocess
    import sys

    out = tmp_path / "idm.json"
    cmd = [sys.executable, str(REPO / "tools/encoder_idm.py"), str(TINY), "--heldout", str(store), "--samples", "8"]
    sets = ["--set", f"data.sources=[{{store: {store}, frame_stride: 2}}]", "--set", "train.steps=3"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*cmd, *sets, "--json", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["stride"] == 2 and result["pretrain"] == str(store)
    for part in ("pretrain_clips", "heldout"):
        scores = {k: v for k, v in result[part].items() if k != "per_slice"}
        assert set(scores) == {"normal", "frames_frozen", "instruction_dropped", "constant"}
        assert np.isfinite(list(scores.values())).all() and scores["constant"] <= 1e-9
        assert "right_pos" in result[part]["per_slice"]  # and per unified slice
        assert set(result[part]["per_slice"]["right_pos"]) == set(scores)
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "data.sources" in refused.stderr


def _gripper_store(path, seeds, with_gripper: bool = True):
    """Episodes whose gripper command is the finger opening itself (a readout of degree 1 is exact)."""
    from latbot.data.spaces import UnifiedTrajectory, fill_arm
    from latbot.data.store import Episode
    from latbot.testing.samples import synthetic_frames

    with EpisodeStore.create(path, cameras=["cam"], image_size=(32, 32)) as s:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            traj = UnifiedTrajectory.empty(16)
            fingers = np.clip(np.cumsum(rng.normal(0, 0.2, 16)) % 1.0, 0, 1)
            grip = {"gripper": fingers, "action_gripper": fingers} if with_gripper else {}
            fill_arm(traj, "right", position=np.cumsum(rng.normal(size=(16, 3)), 0), **grip)
            frames = {"cam": synthetic_frames(16, 32, 32, seed)}
            s.append(Episode(key=f"e{seed}", frames=frames, trajectory=traj, instruction=f"task {seed % 3}"))
        finalize(s)
    return path


def test_gripper_readout_tool_scores_the_finger_opening_and_the_pixels(tmp_path):
    """tools/gripper_readout.py: the finger-opening polynomial, fit on one store and scored on another, reads
    a command that equals the opening exactly; with --lam, the V_t pixel ridge per pool size in the LAM's clip
    layout; a store without the gripper is refused with exit code 2."""
    import json
    import os
    import subprocess
    import sys

    pretrain = _gripper_store(tmp_path / "pretrain", range(6))
    heldout = _gripper_store(tmp_path / "heldout", range(10, 13))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    train = [sys.executable, "-m", "latbot", "train", str(TINY), "--set", f"data.sources=[{{store: {pretrain}}}]"]
    train += ["--set", "train.steps=2", "--set", f"log.out_dir={tmp_path}", "--set", "log.run_name=lam"]
    train += ["--set", "data.num_workers=0"]
    done = subprocess.run(train, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tool = [sys.executable, str(REPO / "tools/gripper_readout.py"), "--pretrain", str(pretrain)]
    out = tmp_path / "readout.json"
    cmd = [*tool, "--heldout", str(heldout), "--lam", str(tmp_path / "lam"), "--pools", "4", "8", "--clips", "24"]
    done = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    fingers = result["finger_opening"][str(heldout)]
    assert fingers["degree_1"] > 0.99 and fingers["degree_3"] > 0.99 and fingers["constant"] < 0.5
    pixels = result["pixels"][str(heldout)]
    assert set(pixels) == {"pool_4", "pool_8", "constant"} and np.isfinite(list(pixels.values())).all()
    assert "V_t pixels at 8²" in done.stdout
    bare = _gripper_store(tmp_path / "bare", range(2), with_gripper=False)
    refused = subprocess.run([*tool, "--heldout", str(bare)], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "has no right gripper action and state" in refused.stderr
