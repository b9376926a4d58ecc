"""`flow`: a pi0-style action expert (paper §3.3, end; openpi pi0.5, reference §6).

Tokens: one state token (the normalised unified state, invalid dimensions zeroed) then H noisy action
tokens x_t. Every block: adaptive RMSNorm conditioned on the flow time t (scale, shift and a zero-init
gate, as pi0.5's adaRMS) → self-attention over the expert's tokens (bidirectional within the chunk) →
cross-attention to the VLM's hidden states → MLP. Block i reads the VLM layer at the same relative depth
(layer ⌈(i + 1)·L / depth⌉), so a deep expert follows the VLM layer by layer as pi0's shared attention
does; the VLM runs once per prediction and the 10 denoising steps reuse its states.

Outputs: the flow velocity v(x_t, t) for every unified action dimension, and gripper logits (left,
right) per step. Training (pi0.5 convention, t = 1 noise, t = 0 data): t ~ Beta(1.5, 1)·0.999 + 0.001,
x_t = t·ε + (1 − t)·a, target u = ε − a; L_ee = MSE(v, u) on the valid end-effector translation and
rotation dimensions, L_gripper = BCE(logits, closed) on the valid gripper dimensions. Inference: 10
Euler steps from noise; the gripper comes from the logits of the last step. The flow matching itself
(time sampling, x_t, the Euler loop) is `latbot.models.flow`, shared with the unified decoders.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from latbot.config import PluginConfig
from latbot.data.spaces import ACTION_DIM, ACTION_GRIPPER, ACTION_POS, ACTION_ROT, ARMS, STATE_DIM
from latbot.models import flow


def ee_dims() -> torch.Tensor:
    """(44,) bool: end-effector translation and rotation dimensions of both arms (L_ee's support)."""
    mask = torch.zeros(ACTION_DIM, dtype=torch.bool)
    for arm in ARMS:
        mask[ACTION_POS[arm]] = True
        mask[ACTION_ROT[arm]] = True
    return mask


GRIPPER_DIMS = [ACTION_GRIPPER[arm] for arm in ARMS]


def sincos(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """pi0's sine-cosine embedding of the flow time t (B,) → (B, dim)."""
    frac = torch.linspace(0.0, 1.0, dim // 2, device=t.device)
    period = min_period * (max_period / min_period) ** frac
    x = t[:, None].float() * (2 * math.pi / period)[None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


class AdaRMSNorm(nn.Module):
    """RMSNorm whose scale and shift come from the condition; also returns the residual gate (zero at init)."""

    def __init__(self, width: int, cond: int):
        super().__init__()
        self.norm = nn.RMSNorm(width, elementwise_affine=False, eps=1e-6)
        self.mod = nn.Linear(cond, 3 * width)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift, gate = self.mod(cond)[:, None].chunk(3, dim=-1)
        return self.norm(x) * (1 + scale) + shift, gate


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, kv_width: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(kv_width or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, w = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :].bool()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, w))


class ExpertBlock(nn.Module):
    def __init__(self, width: int, heads: int, vlm_width: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (AdaRMSNorm(width, width) for _ in range(3))
        self.self_attn = Attention(width, heads)
        self.ctx_norm = nn.RMSNorm(vlm_width, eps=1e-6)
        self.cross_attn = Attention(width, heads, kv_width=vlm_width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x, cond, ctx, ctx_mask):
        h, gate = self.norm1(x, cond)
        x = x + gate * self.self_attn(h, h)
        h, gate = self.norm2(x, cond)
        x = x + gate * self.cross_attn(h, self.ctx_norm(ctx), ctx_mask)
        h, gate = self.norm3(x, cond)
        return x + gate * self.mlp(h)


class FlowActionExpert(nn.Module):
    class Config(PluginConfig):
        type: Literal["flow"] = "flow"
        width: int = Field(1024, ge=8, description="Expert width (pi0.5: gemma_300m, 1024).")
        depth: int = Field(18, ge=1, description="Blocks (pi0.5: 18).")
        heads: int = Field(8, ge=1)
        mlp_ratio: float = Field(4.0, gt=0, description="MLP width / width (gemma_300m: 4096 / 1024).")
        num_steps: int = Field(10, ge=1, description="Euler integration steps at inference (paper: 10).")
        time_alpha: float = Field(1.5, gt=0, description="Beta(α, β) of the training flow time (pi0.5: 1.5).")
        time_beta: float = Field(1.0, gt=0, description="Beta(α, β) of the training flow time (pi0.5: 1.0).")
        gripper_weight: float = Field(1.0, ge=0, description="Weight of L_gripper against L_ee.")

    def __init__(self, config: Config, *, vlm_width: int, vlm_layers: int, horizon: int):
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"action_expert.width ({config.width}) must be a multiple of heads ({config.heads})")
        self.config, self.horizon, self.vlm_layers = config, horizon, vlm_layers
        w = config.width
        self.action_in = nn.Linear(ACTION_DIM, w)
        self.state_in = nn.Linear(STATE_DIM, w)
        self.pos = nn.Parameter(torch.randn(horizon + 1, w) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU())
        self.blocks = nn.ModuleList(
            ExpertBlock(w, config.heads, vlm_width, config.mlp_ratio) for _ in range(config.depth)
        )
        self.final_norm = AdaRMSNorm(w, w)
        self.velocity = nn.Linear(w, ACTION_DIM)
        self.gripper = nn.Linear(w, len(GRIPPER_DIMS))
        self.register_buffer("ee_mask", ee_dims(), persistent=False)

    @classmethod
    def tiny_config(cls):
        return cls.Config(width=32, depth=2, heads=2)

    def repeated_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

    def layer_for_block(self, i: int) -> int:
        """Index into the VLM's hidden-state tuple (0 = embeddings, L = last layer) read by block i."""
        return math.ceil((i + 1) * self.vlm_layers / len(self.blocks))

    def forward(self, x_t, t, state, layers, ctx_mask, action_mask=None):
        """x_t (B, H, 44), t (B,), state (B, 46), layers: the VLM's L + 1 hidden states (B, N, D),
        ctx_mask (B, N), action_mask (B, 44): dimensions the embodiment does not have are zeroed in the
        input → velocity (B, H, 44), gripper logits (B, H, 2)."""
        if action_mask is not None:
            x_t = x_t * action_mask[:, None, :].to(x_t.dtype)
        cond = self.time_mlp(sincos(t, self.config.width).to(x_t.dtype))
        tokens = torch.cat([self.state_in(state)[:, None], self.action_in(x_t)], dim=1) + self.pos
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, cond, layers[self.layer_for_block(i)], ctx_mask)
        h, _ = self.final_norm(tokens, cond)
        h = h[:, 1:]
        return self.velocity(h), self.gripper(h)

    def loss(self, actions, gripper, action_mask, pad, state, layers, ctx_mask) -> dict[str, torch.Tensor]:
        """actions (B, H, 44) normalised; gripper (B, H, 2) unnormalised in [0, 1]; action_mask (B, 44);
        pad (B, H) True past the episode's end; state (B, 46) normalised and masked."""
        c = self.config
        t = flow.sample_time_beta(actions.shape[0], c.time_alpha, c.time_beta, actions.device)
        x_t, u = flow.noisy(actions, torch.randn_like(actions), t)
        v, logits = self(x_t, t, state, layers, ctx_mask, action_mask)
        steps = (~pad).float()[:, :, None]  # (B, H, 1)
        ee = (action_mask & self.ee_mask).float()[:, None, :] * steps  # (B, H, 44)
        l_ee = (((v.float() - u.float()) ** 2) * ee).sum() / ee.sum().clamp(min=1)
        gmask = action_mask[:, GRIPPER_DIMS].float()[:, None, :] * steps  # (B, H, 2)
        bce = F.binary_cross_entropy_with_logits(logits.float(), (gripper > 0.5).float(), reduction="none")
        l_grip = (bce * gmask).sum() / gmask.sum().clamp(min=1)
        return {"loss": l_ee + self.config.gripper_weight * l_grip, "ee": l_ee, "gripper": l_grip}

    @torch.no_grad()
    def sample(self, state, layers, ctx_mask, action_mask=None, generator: torch.Generator | None = None):
        """Euler integration from noise (t = 1) to data (t = 0) → actions (B, H, 44) normalised,
        gripper probabilities (B, H, 2) from the last step."""
        b = state.shape[0]
        x = torch.randn((b, self.horizon, ACTION_DIM), generator=generator, device="cpu").to(state.device, state.dtype)
        last = {}

        def velocity(x, t):
            v, last["logits"] = self(x, t, state, layers, ctx_mask, action_mask)
            return (v,)

        (x,) = flow.integrate(velocity, (x,), self.config.num_steps)
        return x, torch.sigmoid(last["logits"].float())
