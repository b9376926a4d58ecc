"""Stage 3 (paper §3.3, end): the vision-language-action model = a student VLM + an action expert.

The VLM reads the current camera images and the instruction in the student's template (its latent
query positions included: after distillation they carry the latent actions); the expert attends to its
hidden states and generates a chunk of H unified actions. Actions and states are quantile-normalised
by the stage (the store's statistics); the gripper target stays in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from latbot import registry
from latbot.data.clips import (
    K_ACTION_MASK,
    K_ACTION_PAD,
    K_ACTIONS,
    K_FRAMES,
    K_GRIPPER,
    K_INSTRUCTION,
    K_STATE,
    K_STATE_MASK,
)


class VisionLanguageAction(nn.Module):
    def __init__(self, student_config, expert_config, horizon: int, latent_width: int | None = None):
        super().__init__()
        self.student = registry.build("students", student_config, latent_width=latent_width)
        self.expert = registry.build(
            "action_experts",
            expert_config,
            vlm_width=self.student.width,
            vlm_layers=self.student.num_layers,
            horizon=horizon,
        )
        self.horizon = horizon
        # pi0.5's expert shares each layer's attention with the VLM: it reads the prefix KV cache
        self.prefix_cache = getattr(self.expert, "reads_prefix_cache", False)
        if self.prefix_cache:
            self.expert.check_vlm(self.student)

    def repeated_blocks(self) -> list[nn.Module]:
        return [*self.student.repeated_blocks(), *self.expert.repeated_blocks()]

    def context(self, frames: torch.Tensor, instructions: list[str], state=None, state_mask=None):
        """What the expert reads: the VLM's hidden states and mask, or (pi05) its prefix KV cache and mask."""
        if self.prefix_cache:
            states = None
            if self.expert.config.state == "discrete":  # pi0.5's prompt carries the valid state dims as text
                states = [s[m.bool()].float().cpu().numpy() for s, m in zip(state, state_mask, strict=True)]
            return self.student.prefix_cache(frames, instructions, states)
        out = self.student(frames, instructions, hidden_states=True)
        return out["layers"], out["attention_mask"]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """A chunk batch (latbot.data.clips.ChunkDataset, normalised) → {"loss", "ee", "gripper"}."""
        layers, mask = self.context(batch[K_FRAMES], list(batch[K_INSTRUCTION]), batch[K_STATE], batch[K_STATE_MASK])
        state = batch[K_STATE] * batch[K_STATE_MASK]
        return self.expert.loss(
            batch[K_ACTIONS], batch[K_GRIPPER], batch[K_ACTION_MASK], batch[K_ACTION_PAD], state, layers, mask
        )

    @torch.no_grad()
    def sample(self, frames, instructions, state, state_mask, action_mask, generator=None, cache: bool = True):
        """→ normalised actions (B, H, 44), gripper closed-probabilities (B, H, 2). `cache=False` (pi05 only,
        for checks and the latency benchmark) recomputes the prefix at every denoising step instead of
        reusing its KV cache."""
        layers, mask = self.context(frames, instructions, state, state_mask)
        if not cache and self.prefix_cache:
            s = state * state_mask

            def velocity(x, t):
                fresh, fresh_mask = self.context(frames, instructions, state, state_mask)
                return self.expert.velocity(x, t, fresh, fresh_mask, s)

            return self.expert.sample(s, layers, mask, action_mask, generator, velocity=velocity)
        return self.expert.sample(state * state_mask, layers, mask, action_mask, generator)
