"""pi0.5 for real: the `pi05` student and expert against LeRobot's own pi0.5 (tests/fixtures/pi05_tiny, made
by tools/pi05_crosscheck/make_fixture.py), the block mask as a matrix, cached vs uncached inference, the
shared attention against a literal one-pass implementation, the checkpoint loader's errors, and the
real-size parameter split."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from latbot import registry
from latbot.models import gemma
from latbot.models.pi05 import checkpoint
from latbot.models.pi05.student import MOTION, SCENE, SUBTASK, Pi05Student, pi05_prompt
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "pi05_tiny"  # LeRobot's checkpoint layout
CROSSCHECK = REPO / "tests" / "fixtures" / "pi05_crosscheck.safetensors"  # inputs and LeRobot's outputs


def tiny_pair(action_dim=32, horizon=4, state="none"):
    student = Pi05Student(Pi05Student.tiny_config())
    cls = registry.get("action_experts", "pi05")
    cfg = cls.tiny_config().model_copy(update={"action_dim": action_dim, "state": state})
    expert = cls(cfg, vlm_width=student.width, vlm_layers=student.num_layers, horizon=horizon)
    return student, expert


def lerobot_prefix(student, x):
    """LeRobot's prefix layout: each camera's image tokens, then the (right-padded) prompt; all ar = 0."""
    feats = [student.vlm.image_features(img) for img in x["images"]]  # C × (B, P², D)
    text = student.vlm.language_model.embed(x["tokens"])
    emb = torch.cat([*feats, text], 1)
    valid = torch.cat([*(m[:, None].expand(-1, f.shape[1]) for m, f in zip(x["img_masks"], feats, strict=True)),
                       x["token_mask"]], 1)  # fmt: skip
    return student.run(emb, valid, torch.zeros_like(valid, dtype=torch.long))["cache"], valid


def flow_diffs(expert, cache, valid, x: dict) -> dict[str, float]:
    """Max abs differences from a reference implementation's recorded outputs: the velocity at the recorded
    x_t = t·noise + (1 − t)·actions (against its one-pass and its cached forward) and the chunk sampled from
    the recorded noise; with the recorded per-element loss when the reference gives one."""
    t = x["time"]
    v = expert.velocity(t[:, None, None] * x["noise"] + (1 - t[:, None, None]) * x["actions"], t, cache, valid)
    sampled = expert.denoise(x["sample_noise"], cache, valid)
    diffs = {
        "velocity": float((v - x["velocity"]).abs().max()),
        "velocity_vs_cached": float((v - x["velocity_cached"]).abs().max()),
        "sampled": float((sampled - x["sampled"]).abs().max()),
    }
    if "loss" in x:
        diffs["loss"] = float(((x["noise"] - x["actions"] - v) ** 2 - x["loss"]).abs().max())
    return diffs


@pytest.fixture(scope="module")
def loaded():
    student, expert = tiny_pair()
    report = checkpoint.load_pi05(FIXTURE, student=student, expert=expert)
    return student.eval(), expert.eval(), report, load_file(str(CROSSCHECK))


def test_lerobot_pi05_velocity_and_sampled_actions_match(loaded):
    student, expert, report, x = loaded
    with torch.no_grad():
        diffs = flow_diffs(expert, *lerobot_prefix(student, x), x)
    print("pi05 vs LeRobot 0.6.1, max abs diff:", json.dumps(diffs))
    assert all(d < 1e-4 for d in diffs.values()), diffs
    assert float(x["velocity"].abs().max()) > 0.1  # a real signal, not zeros
    assert set(report["student"]["components"]) == {"siglip", "projector", "gemma_2b"}
    assert set(report["expert"]["components"]) >= {"expert_layers", "action_in_proj", "action_out_proj", "time_mlp"}
    assert report["student"]["dtypes"] == ["float32"] and len(report["dropped"]) == 2


def test_prompt_matches_lerobots_state_tokenizer():
    meta = json.loads((CROSSCHECK.with_suffix(".json")).read_text())
    state = load_file(str(CROSSCHECK))["state"].numpy()
    assert [pi05_prompt(t, s) for t, s in zip(meta["tasks"], state, strict=True)] == meta["prompts"]


def test_loader_lists_unknown_missing_and_mismatched_tensors(tmp_path):
    from safetensors.torch import save_file

    tensors = load_file(str(FIXTURE / "model.safetensors"))
    bad = dict(tensors)
    bad["model.something_new.weight"] = torch.zeros(2)
    save_file(bad, str(tmp_path / "weights.safetensors"))
    student, expert = tiny_pair()
    with pytest.raises(checkpoint.PretrainedError, match="something_new"):
        checkpoint.load_pi05(tmp_path, student=student)
    (tmp_path / "weights.safetensors").unlink()
    short = {k: v for k, v in tensors.items() if "layers.1.mlp" not in k}
    save_file(short, str(tmp_path / "weights.safetensors"))
    with pytest.raises(checkpoint.PretrainedError, match=r"missing \[.*layers\.1\.mlp"):
        checkpoint.load_pi05(tmp_path, expert=expert)
    _, wide = tiny_pair(action_dim=44)
    with pytest.raises(checkpoint.PretrainedError, match=r"action_in_proj\.weight: checkpoint"):
        checkpoint.load_pi05(FIXTURE, expert=wide)
    openpi = {k.removeprefix("model."): v for k, v in tensors.items()}  # openpi's conversion: no `model.`
    (tmp_path / "weights.safetensors").unlink()
    save_file(openpi, str(tmp_path / "weights.safetensors"))
    assert checkpoint.load_pi05(tmp_path, student=student, expert=expert)["expert"]["tensors"] > 0


def test_block_mask_is_the_intended_prefix_lm_pattern():
    """Student sequence: 2 image + 2 prompt tokens | 2 queries | 2 subtask tokens; then pi0.5's action block."""
    ar = torch.tensor([[0, 0, 0, 0, 1, 0, 1, 1]])
    got = gemma.block_mask(torch.ones(1, 8, dtype=torch.bool), ar)[0].int()
    expected = torch.tensor(
        [  # rows attend to columns: img img txt txt  q  q  sub sub
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],  # the prefix is bidirectional and sees nothing after it
            [1, 1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1, 0, 0],  # latent queries: the prefix and each other, never the subtask
            [1, 1, 1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1, 1, 1],  # the subtask text is causal
        ]
    )
    assert torch.equal(got, expected)
    # pi0.5's suffix: 3 prefix tokens (the last one padding) then 3 action tokens, ar = [0 0 0 | 1 0 0]
    valid = torch.tensor([[True, True, False, True, True, True]])
    full = gemma.block_mask(valid, torch.tensor([[0, 0, 0, 1, 0, 0]]))[0].int()
    assert full[3:].tolist() == [[1, 1, 0, 1, 1, 1]] * 3  # actions: the valid prefix and every action
    assert full[:2, 3:].sum() == 0  # the prefix never sees the actions


def test_student_sequence_uses_that_mask_and_queries_ignore_the_subtask():
    student = Pi05Student(Pi05Student.tiny_config())
    seq = student.batch(torch.zeros(1, 1, 3, 32, 32), ["pick up the puck"], subtasks=["reach the puck"])
    slots, ar = seq["slots"][0], seq["ar"][0]
    allowed = gemma.block_mask(seq["valid"], seq["ar"])[0]
    queries, sub = (slots == SCENE) | (slots == MOTION), slots == SUBTASK
    assert not allowed[queries][:, sub].any() and allowed[sub][:, queries].all()
    assert ar[queries].tolist() == [1] + [0] * (int(queries.sum()) - 1)
    # and the latents do not move when the subtask text changes
    frames = torch.randint(0, 256, (1, 1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = student(frames, ["pick up the puck"], subtasks=["reach the puck"])["latents"]
        b = student(frames, ["pick up the puck"], subtasks=["grasp the black drawer handle now"])["latents"]
    torch.testing.assert_close(a, b)


def test_shared_attention_equals_one_pass_over_prefix_and_actions(loaded):
    """The split path (prefix first, then actions over its K, V) against the literal pi0.5 layer: both
    parameter sets project their own tokens, Q/K/V concatenated along the sequence, one softmax."""
    student, expert, _, x = loaded
    with torch.no_grad():
        cache, valid = lerobot_prefix(student, x)
        t = x["time"]
        x_t = t[:, None, None] * x["noise"] + (1 - t[:, None, None]) * x["actions"]
        split = expert.velocity(x_t, t, cache, valid)
        joint = one_pass_velocity(student, expert, x, x_t, t)
    torch.testing.assert_close(split, joint, atol=1e-5, rtol=1e-5)


def one_pass_velocity(student, expert, x, x_t, t):
    feats = [student.vlm.image_features(img) for img in x["images"]]
    pre = torch.cat([*feats, student.vlm.language_model.embed(x["tokens"])], 1)
    valid_pre = torch.cat([*(m[:, None].expand(-1, f.shape[1]) for m, f in zip(x["img_masks"], feats, strict=True)),
                           x["token_mask"]], 1)  # fmt: skip
    cond = torch.nn.functional.silu(expert.time_mlp_in(gemma.sincos(t, expert.config.width).float()))
    cond = torch.nn.functional.silu(expert.time_mlp_out(cond))
    suf = expert.action_in_proj(x_t)
    b, m, s = pre.shape[0], pre.shape[1], suf.shape[1]
    valid = torch.cat([valid_pre, torch.ones(b, s, dtype=torch.bool)], 1)
    ar = torch.cat([torch.zeros(b, m, dtype=torch.long), torch.tensor([[1] + [0] * (s - 1)] * b)], 1)
    mask = gemma.additive(gemma.block_mask(valid, ar))
    cos, sin = gemma.rope_tables(valid.long().cumsum(1) - 1, 8)
    streams = [pre, suf]
    for vlm_layer, exp_layer in zip(student.vlm.language_model.layers, expert.layers, strict=True):
        qs, ks, vs, gates = [], [], [], []
        for i, (layer, h) in enumerate(((vlm_layer, streams[0]), (exp_layer, streams[1]))):
            c = None if i == 0 else cond
            hn, gate = layer.input_layernorm(h, c)
            sl = slice(0, m) if i == 0 else slice(m, m + s)
            q, k, v = layer.self_attn.qkv(hn, cos[:, sl], sin[:, sl])
            qs.append(q), ks.append(k), vs.append(v), gates.append(gate)
        y = gemma.attend(torch.cat(qs, 2), torch.cat(ks, 2), torch.cat(vs, 2), mask)
        out = []
        for i, (layer, h) in enumerate(((vlm_layer, streams[0]), (exp_layer, streams[1]))):
            c = None if i == 0 else cond
            part = y[:, :m] if i == 0 else y[:, m:]
            h = gemma.residual(h, layer.self_attn.o_proj(part), gates[i])
            hn, gate = layer.post_attention_layernorm(h, c)
            out.append(gemma.residual(h, layer.mlp(hn), gate))
        streams = out
    h, _ = expert.norm(streams[1], cond)
    return expert.action_out_proj(h)


def test_cached_and_uncached_inference_give_the_same_actions():
    from latbot.models.vla import VisionLanguageAction

    torch.manual_seed(0)
    student = Pi05Student.tiny_config()
    expert = registry.get("action_experts", "pi05").tiny_config().model_copy(update={"action_dim": 32})
    vla = VisionLanguageAction(student, expert, horizon=4).eval()
    with torch.no_grad():  # off the zero-initialised adaRMS so the expert's layers matter
        for p in vla.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    frames = torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8)
    state, smask = torch.rand(2, 46) * 2 - 1, torch.zeros(2, 46)
    smask[:, 8:16] = 1
    amask = torch.zeros(2, 44, dtype=torch.bool)
    amask[:, 7:14] = True
    args = (frames, ["open the drawer", "push the puck"], state, smask, amask)
    cached, grip = vla.sample(*args, torch.Generator().manual_seed(3), cache=True)
    uncached, _ = vla.sample(*args, torch.Generator().manual_seed(3), cache=False)
    assert grip.shape == (2, 4, 2) and cached.abs().sum() > 0 and cached[:, :, ~amask[0]].abs().sum() == 0
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)


def test_pack_and_unpack_put_the_valid_dims_first():
    _, expert = tiny_pair()
    amask = torch.zeros(1, 44, dtype=torch.bool)
    amask[0, [7, 9, 13]] = True
    x = torch.arange(44.0).view(1, 1, 44)
    packed = expert.pack(x, amask)
    assert packed[0, 0, :4].tolist() == [7.0, 9.0, 13.0, 0.0] and packed.shape[-1] == 32
    assert torch.equal(expert.unpack(packed, amask), x * amask[:, None])


def test_real_size_pi05_student_and_expert_on_the_meta_device():
    """pi0.5 = PaliGemma 2.92B (SigLIP So400m 0.41B + Gemma-2B 2.51B) + the gemma_300m-shaped expert 0.31B
    (openpi's 311M) + its adaRMS modulations 0.12B (Dense cond → 3·width per norm, 37 norms) ≈ 3.35B."""
    from latbot.models.pi05.student import PaliGemma

    cls = registry.get("action_experts", "pi05")
    with torch.device("meta"):  # the VLM the student wraps (its tokenizer is not needed to count)
        vlm = PaliGemma("pi05")
        expert = cls(cls.Config(), vlm_width=2048, vlm_layers=18, horizon=10)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    vision = count(vlm.vision_tower) + count(vlm.multi_modal_projector)
    gemma_2b, exp = count(vlm.language_model), count(expert)
    total = vision + gemma_2b + exp
    print(f"pi05 real size: SigLIP+proj {vision / 1e9:.3f}B, Gemma-2B {gemma_2b / 1e9:.3f}B, "
          f"PaliGemma {(vision + gemma_2b) / 1e9:.3f}B, expert {exp / 1e9:.3f}B, total {total / 1e9:.3f}B")  # fmt: skip
    assert abs((vision + gemma_2b) / 1e9 - 2.92) < 0.01
    adarms = sum(p.numel() for n, p in expert.named_parameters() if ".dense." in n or n.startswith("norm."))
    gemma_300m = sum(p.numel() for p in expert.layers.parameters()) - adarms + 1024 * 3 * 1024 + 3 * 1024
    print(
        f"expert: gemma_300m-shaped layers {gemma_300m / 1e9:.3f}B + adaRMS {adarms / 1e9:.3f}B + projections "
        f"{(exp - gemma_300m - adarms) / 1e9:.4f}B"
    )
    assert abs(gemma_300m / 1e9 - 0.311) < 0.005  # openpi's gemma_300m
    assert abs((vision + gemma_2b + exp) / 1e9 - 3.35) < 0.03
