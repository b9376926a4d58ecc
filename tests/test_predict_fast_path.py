"""`predict`'s inference path gives the actions of the reference path, within 1e-6: the flow expert's
`sample` (one matrix product per projection, the norms' modulations and merged weights kept from one call
to the next) against `forward` integrated step by step, and the PaliGemma student without gradients
(transformers' modules without the model-level wrappers, a leaner Gemma layer, tokens and masks memoised
per instruction) against its ordinary forward through transformers. Updated weights are picked up."""

from __future__ import annotations

import pytest
import torch

from latbot.models import flow
from latbot.models.experts.flow import FlowActionExpert
from latbot.models.students.paligemma import PaliGemmaStudent
from latbot.models.vla import VisionLanguageAction

INSTRUCTIONS = ["reach the goal", "push the red puck to the goal and then stop"]  # two lengths: padding


@pytest.fixture(scope="module")
def vla():
    torch.manual_seed(0)
    student = PaliGemmaStudent.Config(preset="tiny", num_scene_tokens=8, num_motion_tokens=8, freeze_vision=False)
    expert = FlowActionExpert.Config(width=64, depth=2, heads=4, mlp_ratio=2.0)
    model = VisionLanguageAction(student, expert, horizon=4).eval()
    with torch.no_grad():  # adaRMS projections start at zero (every gate shut): make them matter
        for m in model.expert.modules():
            if hasattr(m, "mod"):
                torch.nn.init.normal_(m.mod.weight, std=0.2)
                torch.nn.init.normal_(m.mod.bias, std=0.2)
    return model


def inputs(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (b, 1, 3, 64, 64), generator=g, dtype=torch.uint8)
    state = torch.randn(b, 46, generator=g)
    state_mask = (torch.rand(b, 46, generator=g) > 0.5).float()
    action_mask = torch.rand(b, 44, generator=g) > 0.3
    return frames, INSTRUCTIONS[:b], state, state_mask, action_mask


def reference(vla, frames, instructions, state, state_mask, action_mask, seed):
    """The student through transformers with gradients on, the expert's `forward` integrated by `flow`."""
    with torch.enable_grad():
        out = vla.student(frames, instructions, hidden_states=True)
    layers, mask = [h.detach() for h in out["layers"]], out["attention_mask"]
    s = state * state_mask
    x = torch.randn((len(instructions), vla.horizon, 44), generator=torch.Generator().manual_seed(seed))
    last = {}

    def velocity(x, t):
        v, last["logits"] = vla.expert(x, t, s, layers, mask, action_mask)
        return (v,)

    with torch.no_grad():
        (x,) = flow.integrate(velocity, (x,), vla.expert.config.num_steps)
    return x, torch.sigmoid(last["logits"])


def fast(vla, frames, instructions, state, state_mask, action_mask, seed):
    with torch.inference_mode():
        return vla.sample(frames, instructions, state, state_mask, action_mask, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("b", [1, 2])
def test_sample_equals_the_reference_path(vla, b):
    args = inputs(b)
    for seed in (0, 1):
        (a, g), (ra, rg) = fast(vla, *args, seed), reference(vla, *args, seed)
        assert a.shape == (b, 4, 44) and g.shape == (b, 4, 2)
        assert (a - ra).abs().max() < 1e-6 and (g - rg).abs().max() < 1e-6
        assert a.abs().max() > 0.1  # not vacuous: actions far from zero
    again, _ = fast(vla, *args, 0)
    assert torch.equal(again, fast(vla, *args, 0)[0])  # the memoised path is deterministic


def test_the_student_without_gradients_matches_transformers(vla):
    """Vision features bit for bit; every hidden state of the language model within 1e-6 of its scale, padding
    included."""
    student = vla.student
    frames = inputs(2)[0]
    seqs = [student.sequence(text, 1) for text in INSTRUCTIONS]
    with torch.no_grad():
        batch = student.embed(frames, INSTRUCTIONS, seqs)
        pixels = student.prepare_images(frames.flatten(0, 1))
        lean_feats = student.image_features(pixels)
        lean = student.language_model(batch, hidden_states=True)[1]
    assert batch["padded"] and batch["attention_mask"].dim() == 4
    with torch.enable_grad():
        feats = student.image_features(pixels)
        ref = student.language_model(batch, hidden_states=True)[1]
    assert torch.equal(lean_feats, feats)
    assert len(lean) == len(ref) == student.num_layers + 1
    for x, y in zip(lean, ref, strict=True):  # float32 rounding: 1e-6 of the states' scale
        assert (x - y.detach()).abs().max() <= 1e-6 * max(1.0, float(y.detach().abs().max()))


def test_weight_updates_and_new_instructions_are_picked_up(vla):
    """What `sample` keeps between calls follows in-place parameter updates (their version counters)."""
    args = inputs(1, seed=3)
    before, _ = fast(vla, *args, 0)
    with torch.no_grad():
        vla.expert.blocks[0].norm1.mod.bias.add_(0.3)
        vla.expert.blocks[1].self_attn.kv.weight.mul_(1.5)
    try:
        after, _ = fast(vla, *args, 0)
        assert (after - before).abs().max() > 1e-3
        assert (after - reference(vla, *args, 0)[0]).abs().max() < 1e-6
    finally:
        with torch.no_grad():
            vla.expert.blocks[0].norm1.mod.bias.sub_(0.3)
            vla.expert.blocks[1].self_attn.kv.weight.div_(1.5)
    other = (args[0], ["open the drawer"], *args[2:])
    assert (fast(vla, *other, 0)[0] - reference(vla, *other, 0)[0]).abs().max() < 1e-6


def test_a_large_expert_recomputes_its_merged_weights_at_each_call(vla, monkeypatch):
    """Above `MERGED_BYTES_KEPT` the merged q, k, v weights are not kept between calls: same actions."""
    from latbot.models.experts import flow as flow_expert

    monkeypatch.setattr(flow_expert, "MERGED_BYTES_KEPT", 0)
    vla.expert.__dict__.pop("_projection_memo", None)
    args = inputs(2, seed=5)
    try:
        assert (fast(vla, *args, 0)[0] - reference(vla, *args, 0)[0]).abs().max() < 1e-6
        assert vla.expert.__dict__["_projection_memo"][1]["blocks"] is None
    finally:
        vla.expert.__dict__.pop("_projection_memo", None)
