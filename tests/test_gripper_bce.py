"""The paper's action loss (§3.3) in the pi0.5 expert: `gripper_loss: bce` trains the end-effector dimensions
with the flow objective (L_ee) and the grippers with a binary cross-entropy head (L_gripper) on closed =
unified gripper > 0.5; `gripper_loss: flow` is pi0.5's published objective (the gripper a flow dimension).
LatBot's recipes use bce, the pi0.5 baselines flow."""

from __future__ import annotations

import pytest
import torch

from latbot.data.spaces import ACTION_DIM, GRIPPER_DIMS, STATE_DIM
from latbot.models.pi05.expert import Pi05ActionExpert
from latbot.recipes import load_recipe
from tests.conftest import REPO

B, H, VLM_WIDTH, LAYERS = 3, 4, 16, 2


def expert(gripper_loss: str) -> Pi05ActionExpert:
    torch.manual_seed(0)
    cfg = Pi05ActionExpert.tiny_config().model_copy(update={"gripper_loss": gripper_loss})
    return Pi05ActionExpert(cfg, vlm_width=VLM_WIDTH, vlm_layers=LAYERS, horizon=H)


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(B, H, ACTION_DIM, generator=g)
    gripper = torch.rand(B, H, len(GRIPPER_DIMS), generator=g)
    mask = torch.ones(B, ACTION_DIM, dtype=torch.bool)
    pad = torch.zeros(B, H, dtype=torch.bool)
    state = torch.zeros(B, STATE_DIM)
    layers = [torch.randn(B, 5, VLM_WIDTH, generator=g) for _ in range(LAYERS)]
    ctx = torch.ones(B, 5, dtype=torch.bool)
    return actions, gripper, mask, pad, state, layers, ctx


def loss(model, *args, seed: int = 1):
    torch.manual_seed(seed)  # the same flow time and noise for every call
    return model.loss(*args)


def test_bce_trains_the_grippers_with_a_head_and_the_flow_on_everything_else():
    m = expert("bce")
    actions, gripper, mask, pad, state, layers, ctx = inputs()
    out = loss(m, actions, gripper, mask, pad, state, layers, ctx)
    assert set(out) == {"loss", "ee", "gripper"}
    assert torch.allclose(out["loss"], out["ee"] + m.config.gripper_weight * out["gripper"])
    # L_ee ignores the gripper dims of the actions, L_gripper reads only the gripper targets
    moved = actions.clone()
    moved[..., GRIPPER_DIMS] += 5.0
    again = loss(m, moved, gripper, mask, pad, state, layers, ctx)
    assert torch.equal(again["ee"], out["ee"]) and torch.equal(again["gripper"], out["gripper"])
    flipped = loss(m, actions, 1 - gripper, mask, pad, state, layers, ctx)
    assert torch.equal(flipped["ee"], out["ee"]) and not torch.equal(flipped["gripper"], out["gripper"])
    # the BCE's gradient reaches the head and the shared trunk, never the flow's output projection
    m.zero_grad()
    out["gripper"].backward()
    assert m.gripper_head.weight.grad.abs().sum() > 0 and m.action_in_proj.weight.grad.abs().sum() > 0
    assert m.action_out_proj.weight.grad is None or not m.action_out_proj.weight.grad.abs().sum()


def test_the_target_is_closed_above_half_and_only_valid_gripper_dims_count():
    m = expert("bce")
    actions, gripper, mask, pad, state, layers, ctx = inputs()
    near = loss(m, actions, torch.full_like(gripper, 0.51), mask, pad, state, layers, ctx)["gripper"]
    far = loss(m, actions, torch.full_like(gripper, 1.0), mask, pad, state, layers, ctx)["gripper"]
    assert torch.equal(near, far)  # thresholded: 0.51 and 1.0 are both "closed"
    no_grippers = mask.clone()
    no_grippers[:, GRIPPER_DIMS] = False  # an embodiment without grippers
    assert float(loss(m, actions, gripper, no_grippers, pad, state, layers, ctx)["gripper"]) == 0.0


def test_sample_reports_the_heads_closed_probability():
    m = expert("bce").eval()
    _, _, mask, _, state, layers, ctx = inputs()
    with torch.no_grad():
        m.gripper_head.weight.zero_()
        m.gripper_head.bias.copy_(torch.tensor([4.0, -4.0]))
    actions, closed = m.sample(state, layers, ctx, mask, torch.Generator().manual_seed(0))
    assert actions.shape == (B, H, ACTION_DIM)
    assert torch.allclose(closed[..., 0], torch.sigmoid(torch.tensor(4.0))) and (closed[..., 1] < 0.05).all()
    flow = expert("flow").eval()  # pi0.5's: the regressed gripper value, (x + 1) / 2
    actions, closed = flow.sample(state, layers, ctx, mask, torch.Generator().manual_seed(0))
    assert torch.allclose(closed, ((actions[..., GRIPPER_DIMS] + 1) / 2).clamp(0, 1))
    assert flow.gripper_head is None and "gripper" in loss(flow, *inputs())


@pytest.mark.parametrize(
    ("recipe", "objective"),
    [
        ("tiny/finetune_pi05.yaml", "bce"),
        ("tiny/baseline_pi05.yaml", "flow"),
        ("quickstart/finetune.yaml", "bce"),
        ("quickstart/baseline.yaml", "flow"),
        ("finetune_libero.yaml", "bce"),
        ("baseline_pi05_libero.yaml", "flow"),
    ],
)
def test_latbot_recipes_use_the_papers_loss_and_baselines_pi05s(recipe, objective):
    assert load_recipe(REPO / "recipes" / recipe).model.action_expert.gripper_loss == objective
