"""`tiny_conv`: a small convolutional latent-action encoder, as an example of an `encoders` plugin.

Each frame goes through a strided conv stem into a grid of patch features; learnable query tokens
(scene, then motion) cross-attend to the patch features of all frames plus a bag-of-words embedding
of the instruction. It follows the encoder contract: frames (B, T, 3, H, W) in [0, 1] and B
instructions in, (Z_sce (B, Ns, D), Z_mot (B, Nm, D)) out.
"""

from __future__ import annotations

import zlib
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from latbot.config import PluginConfig


class TinyConvEncoder(nn.Module):
    class Config(PluginConfig):
        type: Literal["tiny_conv"] = "tiny_conv"
        width: int = Field(64, ge=8, description="D, the width of the latent tokens.")
        num_scene_tokens: int = Field(8, ge=1)
        num_motion_tokens: int = Field(8, ge=1)
        heads: int = Field(4, ge=1)
        vocab_buckets: int = Field(4096, ge=16, description="Hashed word buckets for the instruction.")

    def __init__(self, config: Config):
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"width ({config.width}) must be divisible by heads ({config.heads})")
        self.config = config
        d = config.width
        self.stem = nn.Sequential(
            nn.Conv2d(3, d // 2, kernel_size=4, stride=4), nn.GELU(), nn.Conv2d(d // 2, d, kernel_size=2, stride=2)
        )
        self.frame_embed = nn.Embedding(64, d)  # temporal position of each frame
        self.words = nn.EmbeddingBag(config.vocab_buckets, d, mode="mean")
        self.queries = nn.Parameter(torch.randn(config.num_scene_tokens + config.num_motion_tokens, d) * 0.02)
        self.attn = nn.MultiheadAttention(d, config.heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def repeated_blocks(self) -> list[nn.Module]:
        """No repeated transformer blocks: FSDP shards the model as one unit (docs/plugins.md)."""
        return []

    @property
    def width(self) -> int:
        return self.config.width

    def _instruction_tokens(self, instructions: list[str], device: torch.device) -> torch.Tensor:
        ids, offsets = [], []
        for text in instructions:
            offsets.append(len(ids))
            words = text.lower().split() or [""]
            ids.extend(zlib.crc32(w.encode()) % self.config.vocab_buckets for w in words)
        return self.words(torch.tensor(ids, device=device), torch.tensor(offsets, device=device))  # (B, D)

    def forward(self, frames: torch.Tensor, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, H, W) uint8 or in [0, 1], instructions: B strings → (Z_sce (B, Ns, D), Z_mot (B, Nm, D))."""
        b, t = frames.shape[:2]
        x = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
        feats = self.stem(x.flatten(0, 1) * 2 - 1)  # (B·T, D, h, w)
        feats = feats.flatten(2).transpose(1, 2).unflatten(0, (b, t))  # (B, T, h·w, D)
        feats = feats + self.frame_embed(torch.arange(t, device=frames.device))[None, :, None]
        memory = torch.cat([feats.flatten(1, 2), self._instruction_tokens(instructions, frames.device)[:, None]], 1)
        q = self.queries.expand(b, -1, -1)  # (B, Ns+Nm, D)
        z = q + self.attn(self.norm(q), memory, memory, need_weights=False)[0]
        z = z + self.mlp(self.norm(z))
        return z[:, : self.config.num_scene_tokens], z[:, self.config.num_scene_tokens :]
