"""`tiny_cnn`: a small convolutional student, as an example of a `students` plugin.

Tokens: the patch features of each camera image (a strided conv stem), one bag-of-words token of the
instruction and Ns + Nm learnable query tokens, through a few transformer layers. The last layer's query
tokens are Ẑ (projected to the teacher's width); the reasoning loss predicts the words of the subtask from
the pooled tokens; with `hidden_states` every layer's tokens are returned for the action expert.
"""

from __future__ import annotations

import zlib
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from latbot.config import PluginConfig


class TinyCnnStudent(nn.Module):
    class Config(PluginConfig):
        type: Literal["tiny_cnn"] = "tiny_cnn"
        width: int = Field(64, ge=8, description="D, the width of every token.")
        depth: int = Field(2, ge=1, description="L, transformer layers.")
        heads: int = Field(4, ge=1)
        num_scene_tokens: int = Field(8, ge=1, description="Ns: must equal the teacher's (checked by distill).")
        num_motion_tokens: int = Field(8, ge=1, description="Nm: must equal the teacher's (checked by distill).")
        vocab_buckets: int = Field(1024, ge=16, description="Hashed word buckets (instruction and subtask).")

    def __init__(self, config: Config, latent_width: int | None = None):
        super().__init__()
        c, d = config, config.width
        self.config = config
        self.stem = nn.Sequential(nn.Conv2d(3, d, kernel_size=8, stride=8), nn.GELU())
        self.words = nn.EmbeddingBag(c.vocab_buckets, d, mode="mean")
        self.queries = nn.Parameter(torch.randn(c.num_scene_tokens + c.num_motion_tokens, d) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, c.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(c.depth)
        )
        self.word_head = nn.Linear(d, c.vocab_buckets)  # the reasoning head: subtask words from the tokens
        self.latent_width = latent_width or d
        self.latent_proj = nn.Linear(d, self.latent_width)  # Ẑ at the teacher's width

    @classmethod
    def tiny_config(cls) -> Config:
        return cls.Config(width=32, depth=2, heads=2, num_scene_tokens=4, num_motion_tokens=4)

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def num_layers(self) -> int:
        return self.config.depth

    def repeated_blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def _hash(self, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        ids, offsets = [], []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(zlib.crc32(w.encode()) % self.config.vocab_buckets for w in text.lower().split() or [""])
        return torch.tensor(ids, device=device), torch.tensor(offsets, device=device)

    def forward(self, frames, instructions, subtasks=None, hidden_states=False) -> dict[str, torch.Tensor]:
        """frames (B, C, 3, H, W) uint8 or in [0, 1] (C cameras; 1 in distillation), B instructions →
        {"latents" (B, Ns + Nm, latent_width), "lm_loss" (with subtasks), "layers" (L + 1) × (B, N, D) and
        "attention_mask" (B, N) (with hidden_states)}."""
        b = frames.shape[0]
        x = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
        patches = self.stem(x.flatten(0, 1) * 2 - 1).flatten(2).transpose(1, 2)  # (B·C, h·w, D)
        patches = patches.reshape(b, -1, self.width)  # (B, C·h·w, D)
        words = self.words(*self._hash(instructions, frames.device))[:, None]  # (B, 1, D)
        h = torch.cat([patches, words, self.queries.expand(b, -1, -1)], 1)  # (B, N, D)
        layers = [h]
        for layer in self.layers:
            h = layer(h)
            layers.append(h)
        n = self.queries.shape[0]
        out = {"latents": self.latent_proj(h[:, -n:])}
        if subtasks is not None:  # reasoning loss: every subtask word from the pooled tokens
            keep = [i for i, s in enumerate(subtasks) if s is not None]  # None: no target for this sample
            ids, offsets = self._hash([subtasks[i] for i in keep], frames.device)
            rows = torch.bucketize(torch.arange(len(ids), device=ids.device), offsets, right=True) - 1
            logits = self.word_head(h.mean(1)[keep])
            out["lm_loss"] = F.cross_entropy(logits[rows], ids) if keep else logits.sum() * 0
            out["lm_tokens"] = torch.tensor(len(ids))  # what the mean was over (loss_reduction: sum)
        if hidden_states:
            out["layers"] = tuple(layers)
            out["attention_mask"] = torch.ones(b, h.shape[1], dtype=torch.bool, device=h.device)
        return out
