"""What the toolkit trains is the paper's method: normalised LAM action targets weighed per sample, the
Table 5 variants with the gradient routing the paper describes, the student's own attention pattern, a
learned projection head, and an explicit subtask fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latbot import registry
from latbot.data.clips import ClipDataset, interval_action_stats
from latbot.data.convert import finalize
from latbot.data.spaces import ACTION_GRIPPER, ACTION_POS, UnifiedTrajectory, fill_arm
from latbot.data.store import Episode, EpisodeStore
from latbot.models.flow import masked_mse
from latbot.testing.samples import synthetic_frames

torch.set_num_threads(1)


# -- 1. LAM action targets: per-source quantile normalisation, samples weigh the same -------------------------
def _store(path, scale: float, seed: int = 0):
    """Four episodes of one arm moving 1 cm-ish per step, positions multiplied by `scale` (1: metres,
    1000: a source converted in millimetres)."""
    rng = np.random.default_rng(seed)
    with EpisodeStore.create(path, cameras=["cam"], image_size=(16, 16)) as s:
        for i in range(4):
            steps = 20
            traj = UnifiedTrajectory.empty(steps)
            position = np.cumsum(rng.normal(scale=0.01, size=(steps, 3)), 0) * scale
            fill_arm(traj, "right", position=position, gripper=(np.arange(steps) > 10).astype(float))
            s.append(Episode(f"e{i}", {"cam": synthetic_frames(steps, 16, 16, i)}, traj, "reach", task="reach"))
        finalize(s)
    return path


def test_two_sources_in_metres_and_millimetres_get_the_same_action_loss_scale(tmp_path):
    metres, millimetres = _store(tmp_path / "m", 1.0), _store(tmp_path / "mm", 1000.0)
    stride = 2
    clips = {
        name: ClipDataset(store, 4, stride, action_stats=interval_action_stats(store, stride))
        for name, store in (("m", metres), ("mm", millimetres))
    }
    raw = {name: ClipDataset(store, 4, stride) for name, store in (("m", metres), ("mm", millimetres))}
    pos = ACTION_POS["right"]
    a_m = torch.stack([clips["m"][i]["actions"] for i in range(len(clips["m"]))])
    a_mm = torch.stack([clips["mm"][i]["actions"] for i in range(len(clips["mm"]))])
    np.testing.assert_allclose(a_m[..., pos], a_mm[..., pos], atol=1e-4)  # same normalised targets
    assert a_m[..., pos].abs().max() > 0.5  # ~[−1, 1], not ~0.01
    r_m = torch.stack([raw["m"][i]["actions"] for i in range(len(raw["m"]))])
    r_mm = torch.stack([raw["mm"][i]["actions"] for i in range(len(raw["mm"]))])
    mask = clips["m"][0]["action_mask"][None].expand(len(a_m), -1)
    # a zero prediction: the loss is the targets' second moment — equal per source once normalised
    zero = torch.zeros_like(a_m)
    normalised = [float(masked_mse(zero, a, mask)) for a in (a_m, a_mm)]
    unnormalised = [float(masked_mse(zero, a, mask)) for a in (r_m, r_mm)]
    assert normalised[1] == pytest.approx(normalised[0], rel=1e-3)
    assert unnormalised[1] / unnormalised[0] > 100  # raw targets: the mm source dominates the loss ~1000×


def test_the_stats_are_those_of_the_aggregated_deltas_at_the_stride(tmp_path):
    store = _store(tmp_path / "m", 1.0)
    one, four = interval_action_stats(store, 1), interval_action_stats(store, 4)
    x = ACTION_POS["right"].start
    assert four["q99"][x] > 1.5 * one["q99"][x]  # four steps of motion span more than one
    assert four["stride"] == 4 and four["intervals"] > 0 and one["q01"][0] is None  # left arm: no data
    g = ACTION_GRIPPER["right"]
    assert 0.0 <= four["q01"][g] <= four["q99"][g] <= 1.0  # the gripper is a value, not summed


def test_the_action_loss_weighs_samples_not_valid_dimensions():
    pred = torch.zeros(2, 3, 44)
    target = torch.zeros(2, 3, 44)
    target[0] = 1.0  # the 44-dim sample is wrong by 1 everywhere, the 7-dim sample is exact
    mask = torch.zeros(2, 44, dtype=torch.bool)
    mask[0] = True
    mask[1, 7:14] = True
    assert float(masked_mse(pred, target, mask)) == pytest.approx(0.5)  # each sample counts once
    target[0], target[1] = 0.0, 1.0  # now the 7-dim sample is the wrong one: the same loss
    assert float(masked_mse(pred, target, mask)) == pytest.approx(0.5)


# -- 2. Table 5 variants: which losses each latent group learns from ---------------------------------------------
def _lam(decoupled: bool, unified: bool):
    from latbot.models.lam import LatentActionModel
    from latbot.recipes import load_recipe
    from tests.conftest import REPO

    sets = [f"model.decoupled={str(decoupled).lower()}", f"model.unified_decoder={str(unified).lower()}"]
    recipe = load_recipe(REPO / "recipes/tiny/lam.yaml", sets)
    torch.manual_seed(0)
    return LatentActionModel(recipe.model, recipe.data.num_frames)


def _gradients(model) -> dict[str, dict[str, bool]]:
    """{loss: {latent group: receives a non-zero gradient}} with Z_sce, Z_mot as leaves."""
    b = 2
    z_sce = torch.randn(b, 8, model.encoder.width, requires_grad=True)
    z_mot = torch.randn(b, 8, model.encoder.width, requires_grad=True)
    model.encode = lambda frames, instructions: (z_sce, z_mot)
    batch = {
        "frames": torch.randint(0, 255, (b, 4, 3, 64, 64), dtype=torch.uint8),
        "instruction": ["reach"] * b,
        "actions": torch.randn(b, 3, 44),
        "action_mask": torch.ones(b, 44, dtype=torch.bool),
    }
    torch.manual_seed(1)
    out = model(batch)
    routes = {}
    for loss in ("image", "action"):
        if not out[loss].requires_grad:
            routes[loss] = {"z_sce": False, "z_mot": False}
            continue
        g_sce, g_mot = torch.autograd.grad(out[loss], [z_sce, z_mot], retain_graph=True, allow_unused=True)
        routes[loss] = {"z_sce": g_sce is not None and bool(g_sce.abs().sum() > 0),
                        "z_mot": g_mot is not None and bool(g_mot.abs().sum() > 0)}  # fmt: skip
    return routes


def _train_decoder_outputs(model):
    """Make the decoder's zero-initialised output layers non-zero, so gradients reach the latents."""
    for m in model.decoder.modules():
        if isinstance(m, torch.nn.Linear) and m.weight.abs().sum() == 0:
            torch.nn.init.normal_(m.weight, std=0.1)
    for blk in model.decoder.repeated_blocks():
        for m in blk.modules():
            if isinstance(m, torch.nn.Linear) and m.weight.abs().sum() == 0:
                torch.nn.init.normal_(m.weight, std=0.1)


@pytest.mark.parametrize(
    ("decoupled", "unified", "expected"),
    [
        # full: both streams, joint attention at every layer, so both groups feel both losses
        (True, True, {"image": {"z_sce": True, "z_mot": True}, "action": {"z_sce": True, "z_mot": True}}),
        # decoupled only ("Ours-v1"): no action tokens; Z_mot's own stream reaches the image by joint attention
        (True, False, {"image": {"z_sce": True, "z_mot": True}, "action": {"z_sce": False, "z_mot": False}}),
        # unified decoder only: one group feeds both streams
        (False, True, {"image": {"z_sce": True, "z_mot": True}, "action": {"z_sce": True, "z_mot": True}}),
        # UniVLA-style: one group, image reconstruction only
        (False, False, {"image": {"z_sce": True, "z_mot": True}, "action": {"z_sce": False, "z_mot": False}}),
    ],
)
def test_each_table5_variant_routes_gradients_as_the_paper_describes(decoupled, unified, expected):
    model = _lam(decoupled, unified)
    _train_decoder_outputs(model)
    assert _gradients(model) == expected
    assert model.config.encoder.latent_groups == (2 if decoupled else 1)


def test_the_full_model_conditions_each_stream_on_its_own_group():
    """Z_sce enters only the image stream's tokens and Z_mot only the action stream's (the streams then
    exchange information through joint attention)."""
    model = _lam(True, True)
    z_sce, z_mot = torch.randn(1, 8, 64), torch.randn(1, 8, 64)
    model.encode = lambda frames, instructions: (z_sce, z_mot)
    img, act = model.latents(None, ["x"])
    assert img is z_sce and act is z_mot
    model = _lam(True, False)  # DLA only: the same two pathways, without action tokens (Z_mot's own stream)
    model.encode = lambda frames, instructions: (z_sce, z_mot)
    img, act = model.latents(None, ["x"])
    assert img is z_sce and act is z_mot
    model = _lam(False, False)  # UniVLA-style: one group, image stream only
    model.encode = lambda frames, instructions: (z_sce, z_mot)
    img, act = model.latents(None, ["x"])
    assert torch.equal(img, torch.cat([z_sce, z_mot], 1)) and act is None


def test_without_decoupling_the_template_has_one_group_of_latent_tokens():
    from latbot.models.encoders.vlm import MOTION_SLOT, SCENE_SLOT
    from latbot.models.template import ANSWER_MOTION

    single = _lam(False, True).encoder
    decoupled = _lam(True, True).encoder
    one = single.sequence("reach the goal", 1)
    two = decoupled.sequence("reach the goal", 1)
    slots = [i for i, t in enumerate(one) if t in (SCENE_SLOT, MOTION_SLOT)]
    assert slots == list(range(slots[0], slots[0] + 16))  # one contiguous group of Ns + Nm positions
    motion_text = decoupled._text(ANSWER_MOTION)
    first_motion = two.index(MOTION_SLOT)
    assert two[first_motion - len(motion_text) : first_motion] == motion_text  # the decoupled layout's split
    assert not any(one[i : i + len(motion_text)] == motion_text for i in range(len(one)))


# -- 3. the student: its backbone's attention, Ẑ blind to the subtask, a projection head ----------------------
def _student(kind: str, latent_width: int | None = 48, **update):
    cls = registry.get("students", kind)
    config = cls.tiny_config().model_copy(update={"num_scene_tokens": 4, "num_motion_tokens": 4, **update})
    torch.manual_seed(0)
    return registry.build("students", config, latent_width=latent_width).eval()


def _sequence_with_tail(student, instruction="open the drawer", subtask="grasp the handle"):
    ids = student.sequence(instruction, 1)
    tail, _ = student.subtask_tokens(subtask)
    return ids, ids + tail


def test_paligemma_student_attends_prefix_lm_and_the_mask_matrix_is_the_intended_one():
    from latbot.models.encoders.vlm import MOTION_SLOT, SCENE_SLOT

    student = _student("paligemma")
    instruction = "open the drawer"
    answer_only, ids = _sequence_with_tail(student, instruction)
    frames = torch.randint(0, 255, (1, 1, 3, 32, 32), dtype=torch.uint8)
    inputs = student.embed(frames, [instruction], [ids])
    mask = inputs["attention_mask"][0, 0] == 0  # (N, N) True = query row sees key column
    n, p = len(ids), len(student.prompt_tokens(instruction, 1))
    intended = torch.zeros(n, n, dtype=torch.bool)
    intended[:p, :p] = True  # the prompt (image + <bos> + question): bidirectional
    intended |= torch.tril(torch.ones(n, n, dtype=torch.bool))  # causal everywhere
    assert torch.equal(mask, intended)
    latents = [i for i, t in enumerate(ids) if t in (SCENE_SLOT, MOTION_SLOT)]
    tail = range(len(answer_only), n)
    assert not mask[latents][:, list(tail)].any()  # Ẑ never sees the subtask text
    assert not mask[:p, p:].any()  # the prompt never sees the answer


@pytest.mark.parametrize("kind", ["paligemma", "internvl"])
def test_latents_do_not_depend_on_the_subtask_text(kind):
    student = _student(kind)
    frames = torch.randint(0, 255, (1, 1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = student(frames, ["open the drawer"], subtasks=["grasp the handle"])["latents"]
        b = student(frames, ["open the drawer"], subtasks=["push the red button then lift the cup"])["latents"]
        c = student(frames, ["open the drawer"])["latents"]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_the_prefix_really_is_bidirectional_for_paligemma_and_causal_for_internvl():
    """Changing the last prompt token changes the first image token's state only under prefix-LM."""
    frames = torch.randint(0, 255, (1, 1, 3, 32, 32), dtype=torch.uint8)
    for kind, bidirectional in (("paligemma", True), ("internvl", False)):
        student = _student(kind)
        states = []
        for text in ("open the drawer", "open the window"):
            inputs = student.embed(frames, [text])
            with torch.no_grad():
                hidden = student.vlm.language_model(
                    inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"]
                ).last_hidden_state
            first_image = int(inputs["image_mask"][0].nonzero()[0])
            states.append(hidden[0, first_image])
        assert (not torch.allclose(states[0], states[1])) == bidirectional, kind


@pytest.mark.parametrize("kind", ["paligemma", "internvl"])
def test_a_learned_projection_head_even_at_equal_widths(kind):
    width = _student(kind, latent_width=None).width
    assert isinstance(_student(kind, latent_width=width).latent_proj, torch.nn.Linear)
    assert isinstance(_student(kind, latent_width=width, latent_projection=False).latent_proj, torch.nn.Identity)
    assert isinstance(_student(kind, latent_width=width + 8, latent_projection=False).latent_proj, torch.nn.Linear)
    assert isinstance(_student(kind, latent_width=None).latent_proj, torch.nn.Identity)  # no teacher: baseline


# -- 4. the subtask fallback is a choice, counted --------------------------------------------------------------
def _distill(fallback: str, reduction: str = "mean", kind: str = "paligemma"):
    from latbot.models.distill import DistillationModel

    return DistillationModel(_student(kind), None, None, 0.5, fallback, reduction)


def _batch(subtasks):
    b = len(subtasks)
    return {
        "frames": torch.randint(0, 255, (b, 1, 3, 32, 32), dtype=torch.uint8),
        "instruction": ["open the drawer"] * b,
        "subtask": subtasks,
        "teacher_latents": torch.randn(b, 8, 48),
    }


def test_samples_without_subtasks_get_no_reasoning_loss_by_default_and_the_rate_is_logged():
    with torch.no_grad():
        none = _distill("skip")(_batch(["", ""]))
        some = _distill("skip")(_batch(["grasp the handle", ""]))
        fallback = _distill("instruction")(_batch(["", ""]))
    assert float(none["lm"]) == 0.0 and float(none["subtask_rate"]) == 0.0
    assert float(some["lm"]) > 0 and float(some["subtask_rate"]) == 0.5
    assert float(fallback["lm"]) > 0 and float(fallback["subtask_rate"]) == 0.0  # the copy task, if asked for


def test_the_paper_reduction_sums_over_tokens_and_channels():
    batch = _batch(["grasp the handle"])
    with torch.no_grad():
        mean, total = _distill("skip", "mean")(batch), _distill("skip", "sum")(batch)
    n, d = batch["teacher_latents"].shape[1:]
    assert float(total["mse"]) == pytest.approx(float(mean["mse"]) * n * d, rel=1e-4)
    assert float(total["kl"]) == pytest.approx(float(mean["kl"]) * n, rel=1e-4)


@pytest.mark.parametrize("kind", ["paligemma", "internvl", "pi05", "tiny_cnn"])
def test_the_paper_reduction_sums_the_reasoning_loss_over_tokens_too(kind):
    """With `loss_reduction: sum`, L_r is the summed next-token loss per sample (averaged over the batch, as
    L_a is): a sample's sum is its mean times a whole number of target tokens that grows with the subtask,
    and a batch's value is the mean of its samples' sums, for every registered student."""
    mean_model, sum_model = _distill("skip", "mean", kind), _distill("skip", "sum", kind)
    words = ["grasp", "grasp the handle of the top drawer firmly"]
    pair = _batch(words)
    singles = [{k: v[i : i + 1] for k, v in pair.items()} for i in range(2)]  # tensors and lists alike
    with torch.no_grad():
        alone = [(float(mean_model(b)["lm"]), float(sum_model(b)["lm"])) for b in singles]
        both = float(sum_model(pair)["lm"])
    tokens = [total / per_token for per_token, total in alone]
    assert all(abs(t - round(t)) < 1e-3 and t >= 1 for t in tokens) and tokens[1] > tokens[0]
    assert both == pytest.approx((alone[0][1] + alone[1][1]) / 2, rel=1e-3)


def test_subtask_coverage_of_a_source(tmp_path):
    from latbot.recipes.schema import DataSource
    from latbot.stages.distill import subtask_coverage
    from tests.test_store import episode

    path = tmp_path / "s"
    with EpisodeStore.create(path, cameras=["cam"], image_size=(16, 16)) as s:
        s.append(episode("a", steps=12))  # one subtask over steps 0..5 of 12
        finalize(s)
    assert subtask_coverage(DataSource(store=path)) == pytest.approx(6 / 12)


# -- EgoDex: deltas in a moving camera frame are composed in one frame over a stride ----------------------------
def test_deltas_in_moving_camera_frames_compose_in_the_first_frame_of_the_interval():
    from scipy.spatial.transform import Rotation

    from latbot.data import rotations as rot
    from latbot.data.clips import aggregate_actions
    from latbot.data.spaces import ACTION_ROT, ACTION_TIPS

    rng = np.random.default_rng(0)
    t, stride = 9, 4
    cam = Rotation.random(t, random_state=1).as_matrix()  # world → camera rotation of each step (the head turns)
    wrist = np.cumsum(rng.normal(scale=0.02, size=(t, 3)), 0)  # world positions
    tip = np.cumsum(rng.normal(scale=0.02, size=(t, 3)), 0)
    world_rot = Rotation.random(t, random_state=2).as_matrix()
    steps = np.zeros((t - 1, 44))
    for k in range(t - 1):  # what the EgoDex adapter writes: each step's motion in that step's camera
        steps[k, ACTION_POS["right"]] = cam[k] @ (wrist[k + 1] - wrist[k])
        steps[k, ACTION_TIPS["right"].start : ACTION_TIPS["right"].start + 3] = cam[k] @ (tip[k + 1] - tip[k])
        rel = cam[k] @ world_rot[k + 1] @ world_rot[k].T @ cam[k].T
        steps[k, ACTION_ROT["right"]] = rot.matrix_to_euler(rel[None])[0]
    motion = cam[:-1] @ np.swapaxes(cam[1:], -1, -2)  # step k+1's camera → step k's
    out = aggregate_actions(steps, stride, motion)[0]
    np.testing.assert_allclose(out[ACTION_POS["right"]], cam[0] @ (wrist[stride] - wrist[0]), atol=1e-9)
    tips = ACTION_TIPS["right"].start
    np.testing.assert_allclose(out[tips : tips + 3], cam[0] @ (tip[stride] - tip[0]), atol=1e-9)
    expected = rot.matrix_to_euler((cam[0] @ world_rot[stride] @ world_rot[0].T @ cam[0].T)[None])[0]
    np.testing.assert_allclose(out[ACTION_ROT["right"]], expected, atol=1e-9)
    naive = aggregate_actions(steps, stride)[0]  # summing deltas of different frames: wrong
    assert not np.allclose(naive[ACTION_POS["right"]], cam[0] @ (wrist[stride] - wrist[0]), atol=1e-3)


def test_egodex_stores_carry_the_camera_motion_and_clips_use_it(tmp_path):
    from latbot.data.convert import convert
    from latbot.testing.samples import make_egodex

    src = make_egodex(tmp_path / "src")
    convert(registry.get("datasets", "egodex").Config(), src, tmp_path / "store", image_size=16, progress=False)
    with EpisodeStore.open(tmp_path / "store") as s:
        motion = s.read_rows("frame_motion", 0, s.num_frames).reshape(-1, 3, 3)
    np.testing.assert_allclose(
        motion @ np.swapaxes(motion, -1, -2), np.broadcast_to(np.eye(3), motion.shape), atol=1e-5
    )
    clips = ClipDataset(tmp_path / "store", 3, 2)
    assert clips.has_frame_motion and torch.isfinite(clips[0]["actions"]).all()
