"""`tiny_mlp`: a small regression decoder, as an example of a `decoders` plugin.

It predicts the future frame as the current frame plus a coarse residual decoded from the pooled
scene tokens, and the action sequence from the pooled motion tokens. It follows the decoder contract
(`latbot.models.decoders.base.Decoder`): built with the encoder's width, it returns the image and action
losses (the action loss is masked by the embodiment's validity mask over the 44 unified action
dimensions), and `sample` returns its prediction the way `latbot viz` and the diagnostics ask for it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from latbot.config import PluginConfig


class TinyMlpDecoder(nn.Module):
    class Config(PluginConfig):
        type: Literal["tiny_mlp"] = "tiny_mlp"
        hidden: int = Field(128, ge=8)
        action_dim: int = Field(44, ge=1, description="A, the unified action width (paper supp. 6.1: 44).")
        horizon: int = Field(15, ge=1, description="Actions predicted per clip (k for a clip of k+1 frames).")
        residual_grid: int = Field(8, ge=1, description="The predicted frame residual is a grid×grid image.")

    def __init__(self, config: Config, latent_width: int):
        super().__init__()
        self.config = config
        c, g = config.hidden, config.residual_grid
        self.image_head = nn.Sequential(nn.Linear(latent_width, c), nn.GELU(), nn.Linear(c, 3 * g * g))
        self.action_head = nn.Sequential(
            nn.Linear(latent_width, c), nn.GELU(), nn.Linear(c, config.horizon * config.action_dim)
        )

    def repeated_blocks(self) -> list[nn.Module]:
        """No repeated transformer blocks: FSDP shards the model as one unit (docs/plugins.md)."""
        return []

    def predict(self, z_sce: torch.Tensor, z_mot: torch.Tensor, frame_t: torch.Tensor):
        """z (B, N, D) (z_mot None: no motion pathway), frame_t (B, 3, H, W) → future frame (B, 3, H, W),
        actions (B, K, A) or None."""
        g = self.config.residual_grid
        frame_t = _unit(frame_t)
        residual = self.image_head(z_sce.mean(1)).view(-1, 3, g, g)
        frame = frame_t + F.interpolate(residual, size=frame_t.shape[-2:], mode="bilinear", align_corners=False)
        if z_mot is None:  # UniVLA-style: one latent group, no motion pathway
            return frame, None
        actions = self.action_head(z_mot.mean(1)).view(-1, self.config.horizon, self.config.action_dim)
        return frame, actions

    def forward(self, z_sce, z_mot, frame_t, frame_future, actions=None, action_mask=None) -> dict[str, torch.Tensor]:
        """actions (B, K, A) and action_mask (B, A) → {"image": scalar, "action": scalar}; without actions
        (the image-only ablation) only "image"."""
        frame, pred = self.predict(z_sce, z_mot, frame_t)
        losses = {"image": F.mse_loss(frame, _unit(frame_future))}
        if actions is not None:
            mask = action_mask[:, None, :].to(pred.dtype)  # (B, 1, A)
            losses["action"] = ((pred - actions) ** 2 * mask).sum() / (mask.sum() * pred.shape[1]).clamp_min(1)
        return losses

    @torch.no_grad()
    def sample(self, z_sce, z_mot, frame_t, with_actions: bool = True, generator: torch.Generator | None = None):
        """→ future frame (B, 3, H, W) in [0, 1], actions (B, K, A) or None without `with_actions`. A regression
        model draws no noise, so `generator` is unused; it is part of the contract all the same."""
        frame, actions = self.predict(z_sce, z_mot, frame_t)
        return frame.clamp(0, 1), actions if with_actions else None


def _unit(frame: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] frames → float in [0, 1]."""
    return frame.float() / 255 if frame.dtype == torch.uint8 else frame.float()
