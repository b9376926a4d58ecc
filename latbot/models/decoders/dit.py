"""`dit`: the unified decoder with small in-house DiT blocks on pixel patches (CPU scale).

Two streams with separate weights, joint attention at every layer (MM-DiT style):

    image stream:  patches of [noisy V_{t+k} ‖ V_t] (6 channels) + Z_sce projected      → velocity of V_{t+k}
    action stream: noisy A_{t:t+k} (K, 44) + a position embedding + Z_mot projected     → velocity of A

Each block: per-stream adaLN-zero modulated by the flow time, per-stream q/k/v, one attention over the
concatenation of both streams, per-stream output projection and MLP. With `actions=None` the action
stream is absent (the "unified decoder off" ablation: image reconstruction only).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import nn

from latbot.config import PluginConfig
from latbot.models import flow


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t ∈ [0, 1] (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    args = t[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class StreamBlock(nn.Module):
    """The per-stream half of a joint block: modulation, q/k/v, output and MLP weights."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def pre(self, x: torch.Tensor, cond: torch.Tensor):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(cond))[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = rearrange(self.qkv(h), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        return (q, k, v), (gate1, shift2, scale2, gate2)

    def post(self, x: torch.Tensor, attn: torch.Tensor, mods) -> torch.Tensor:
        gate1, shift2, scale2, gate2 = mods
        x = x + gate1 * self.out(rearrange(attn, "b h n d -> b n (h d)"))
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


class JointBlock(nn.Module):
    def __init__(self, width: int, heads: int, action_attends_image: bool = True):
        super().__init__()
        self.image = StreamBlock(width, heads)
        self.action = StreamBlock(width, heads)
        self.action_attends_image = action_attends_image

    def forward(self, img: torch.Tensor, act: torch.Tensor | None, cond: torch.Tensor):
        (qi, ki, vi), mi = self.image.pre(img, cond)
        if act is None:
            return self.image.post(img, F.scaled_dot_product_attention(qi, ki, vi), mi), None
        (qa, ka, va), ma = self.action.pre(act, cond)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((qi, qa), (ki, ka), (vi, va)))  # (B, H, Ni+Na, d)
        n = img.shape[1]
        mask = None
        if not self.action_attends_image:  # the action stream's queries see only its own tokens
            mask = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool, device=q.device)
            mask[n:, :n] = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.image.post(img, out[:, :, :n], mi), self.action.post(act, out[:, :, n:], ma)


def motion_stream(dec: nn.Module, x_act: torch.Tensor | None, z_mot: torch.Tensor | None) -> torch.Tensor | None:
    """The tokens of the motion / action stream: the noisy actions (when there are actions to predict) then
    Z_mot through `motion_proj` (when the latents are decoupled). Without actions but with Z_mot — the
    decoupled, image-only variant (Table 5's "DLA only") — the stream holds Z_mot alone: it reaches the image
    only through the joint attention, by its own weights, never mixed into the image stream's conditioning.
    Neither (UniVLA-style): no stream."""
    parts = []
    if x_act is not None:
        parts.append(dec.action_in(x_act) + dec.action_pos[:, : x_act.shape[1]])
    if z_mot is not None:
        parts.append(dec.motion_proj(z_mot))
    return torch.cat(parts, 1) if parts else None


class DiTDecoder(nn.Module):
    class Config(PluginConfig):
        type: Literal["dit"] = "dit"
        width: int = Field(256, ge=16, description="Width of both streams.")
        depth: int = Field(4, ge=1, description="Joint blocks.")
        heads: int = Field(4, ge=1)
        image_size: int = Field(64, ge=8, description="Frames are resized to this square resolution.")
        patch_size: int = Field(8, ge=1)
        action_dim: int = Field(44, ge=1, description="A, the unified action width (supp. 6.1).")
        horizon: int = Field(15, ge=1, description="K actions per clip (frames − 1).")
        sample_steps: int = Field(10, ge=1, description="Euler steps when generating.")
        action_attends_image: bool = Field(
            True,
            description="False: the action stream attends only to its own tokens (noisy actions, Z_mot), never to "
            "the image stream (V_t, the noisy future, Z_sce), which still attends to it; a scene-free action head, "
            "not the paper's bidirectional fusion (docs/models.md).",
        )

    @classmethod
    def tiny_config(cls) -> Config:
        return cls.Config(width=32, depth=1, heads=2, image_size=16, patch_size=8, horizon=1)

    def __init__(self, config: Config, latent_width: int):
        super().__init__()
        c = self.config = config
        if c.image_size % c.patch_size:
            raise ValueError(f"image_size ({c.image_size}) must be a multiple of patch_size ({c.patch_size})")
        if c.width % c.heads:
            raise ValueError(f"width ({c.width}) must be divisible by heads ({c.heads})")
        self.grid = c.image_size // c.patch_size
        self.patch_in = nn.Linear(6 * c.patch_size**2, c.width)
        self.patch_out = nn.Linear(c.width, 3 * c.patch_size**2)
        self.image_pos = nn.Parameter(torch.randn(1, self.grid**2, c.width) * 0.02)
        self.action_in = nn.Linear(c.action_dim, c.width)
        self.action_out = nn.Linear(c.width, c.action_dim)
        self.action_pos = nn.Parameter(torch.randn(1, c.horizon, c.width) * 0.02)
        self.scene_proj = nn.Linear(latent_width, c.width)  # adapter: encoder width → decoder width
        self.motion_proj = nn.Linear(latent_width, c.width)
        self.time = nn.Sequential(nn.Linear(c.width, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.blocks = nn.ModuleList(JointBlock(c.width, c.heads, c.action_attends_image) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(c.width, eps=1e-6)
        for out in (self.patch_out, self.action_out):
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
        self.latent_width = latent_width

    def repeated_blocks(self) -> list[nn.Module]:
        """The joint blocks (both streams of one layer form one unit)."""
        return list(self.blocks)

    def to_pixels(self, frame: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 or [0, 1] → (B, 3, S, S) in [−1, 1] at the decoder's resolution."""
        x = frame.float() / 255.0 if frame.dtype == torch.uint8 else frame.float()
        s = self.config.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x * 2 - 1

    def velocity(self, x_img, context, x_act, z_sce, z_mot, t):
        """Predicted velocities of the noisy future frame (B, 3, S, S) and noisy actions (B, K, A) or None."""
        c, p = self.config, self.config.patch_size
        cond = self.time(timestep_embedding(t, c.width))  # (B, W)
        img = rearrange(torch.cat([x_img, context], 1), "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)
        img = torch.cat([self.patch_in(img) + self.image_pos, self.scene_proj(z_sce)], 1)  # (B, P²+Ns, W)
        act = motion_stream(self, x_act, z_mot)
        for block in self.blocks:
            img, act = block(img, act, cond)
        n = self.grid**2
        v_img = rearrange(
            self.patch_out(self.norm_out(img[:, :n])), "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid, p=p, q=p
        )
        v_act = self.action_out(self.norm_out(act[:, : x_act.shape[1]])) if x_act is not None else None
        return v_img, v_act

    def forward(self, z_sce, z_mot, frame_t, frame_future, actions=None, action_mask=None) -> dict[str, torch.Tensor]:
        """Flow-matching losses. z (B, N, D); frames (B, 3, H, W); actions (B, K, A); action_mask (B, A)."""
        target, context = self.to_pixels(frame_future), self.to_pixels(frame_t)
        return flow.two_stream_losses(
            lambda x, a, t: self.velocity(x, context, a, z_sce, z_mot, t), target, actions, action_mask
        )

    @torch.no_grad()
    def sample(self, z_sce, z_mot, frame_t, with_actions: bool = True, generator: torch.Generator | None = None):
        """Generate the future frame (B, 3, S, S) in [0, 1] and actions (B, K, A) (None without `with_actions`)
        from noise drawn from `generator` (the contract: `latbot.models.decoders.base.Decoder.sample`)."""
        c = self.config
        context = self.to_pixels(frame_t)
        shape = (context.shape[0], c.horizon, c.action_dim) if with_actions else None
        img, act = flow.two_stream_sample(
            lambda x, a, t: self.velocity(x, context, a, z_sce, z_mot, t), context, shape, c.sample_steps, generator
        )
        return ((img + 1) / 2).clamp(0, 1), act
