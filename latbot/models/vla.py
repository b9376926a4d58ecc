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

    def repeated_blocks(self) -> list[nn.Module]:
        return [*self.student.repeated_blocks(), *self.expert.repeated_blocks()]

    def context(self, frames: torch.Tensor, instructions: list[str]):
        out = self.student(frames, instructions, hidden_states=True)
        return out["layers"], out["attention_mask"]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """A chunk batch (latbot.data.clips.ChunkDataset, normalised) → {"loss", "ee", "gripper"}."""
        layers, mask = self.context(batch[K_FRAMES], list(batch[K_INSTRUCTION]))
        state = batch[K_STATE] * batch[K_STATE_MASK]
        return self.expert.loss(
            batch[K_ACTIONS], batch[K_GRIPPER], batch[K_ACTION_MASK], batch[K_ACTION_PAD], state, layers, mask
        )

    @torch.no_grad()
    def sample(self, frames, instructions, state, state_mask, action_mask, generator=None):
        """→ normalised actions (B, H, 44), gripper closed-probabilities (B, H, 2)."""
        layers, mask = self.context(frames, instructions)
        return self.expert.sample(state * state_mask, layers, mask, action_mask, generator)
