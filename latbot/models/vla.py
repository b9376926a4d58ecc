"""Stage 3 (paper §3.3, end): the vision-language-action model = a student VLM + an action expert.

The VLM reads the current camera images and the instruction in the student's template (its latent
query positions included: after distillation they carry the latent actions); the expert attends to its
hidden states and generates a chunk of H unified actions. Actions and states are quantile-normalised
by the stage (the store's statistics); the gripper target stays in [0, 1]. What the student and the expert
return is checked at every call against their contracts (latbot.models.students.base,
latbot.models.experts.base: shapes and dtypes only, free and fine on meta tensors), so a plugin that breaks
one stops there with one line naming it.
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
from latbot.models.encoders.base import OutputCheck
from latbot.models.experts.base import check_loss, check_sample
from latbot.models.students.base import check_forward


class VisionLanguageAction(nn.Module):
    def __init__(self, student_config, expert_config, horizon: int, latent_width: int | None = None):
        super().__init__()
        self.student = registry.build("students", student_config, latent_width=latent_width)
        self._student_check = OutputCheck("students", self.student, student_config.type)
        self._width = self._student_check.int_property("width", self.student.width, "the action expert's vlm_width")
        self._num_layers = self._student_check.int_property(
            "num_layers", self.student.num_layers, "the action expert's vlm_layers"
        )
        self.expert = registry.build(
            "action_experts", expert_config, vlm_width=self._width, vlm_layers=self._num_layers, horizon=horizon
        )
        self._expert_check = OutputCheck("action_experts", self.expert, expert_config.type)
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
                if state.is_meta:  # `latbot plan`: no values; every dimension is written (the longest prompt)
                    states = [torch.zeros(state.shape[-1]).numpy() for _ in range(state.shape[0])]
                else:
                    states = [s[m.bool()].float().cpu().numpy() for s, m in zip(state, state_mask, strict=True)]
            return self._student_check.pair(
                "prefix_cache", self.student.prefix_cache(frames, instructions, states), "(cache, valid (B, M))"
            )
        out = check_forward(
            self._student_check,
            self.student(frames, instructions, hidden_states=True),
            frames.shape[0],
            num_layers=self._num_layers,
            width=self._width,
        )
        return out["layers"], out["attention_mask"]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """A chunk batch (latbot.data.clips.ChunkDataset, normalised) → {"loss", "ee", "gripper"}."""
        layers, mask = self.context(batch[K_FRAMES], list(batch[K_INSTRUCTION]), batch[K_STATE], batch[K_STATE_MASK])
        state = batch[K_STATE] * batch[K_STATE_MASK]
        return check_loss(
            self._expert_check,
            self.expert.loss(
                batch[K_ACTIONS], batch[K_GRIPPER], batch[K_ACTION_MASK], batch[K_ACTION_PAD], state, layers, mask
            ),
        )

    @torch.no_grad()
    def sample(self, frames, instructions, state, state_mask, action_mask, generator=None, cache: bool = True):
        """→ normalised actions (B, H, 44), gripper closed-probabilities (B, H, 2). `cache=False` (pi05 only,
        for checks and the latency benchmark) recomputes the prefix at every denoising step instead of
        reusing its KV cache."""
        layers, mask = self.context(frames, instructions, state, state_mask)
        if not cache and self.prefix_cache:
            s = state * state_mask

            def velocity(x, t, hidden=False):
                fresh, fresh_mask = self.context(frames, instructions, state, state_mask)
                return self.expert.velocity(x, t, fresh, fresh_mask, s, hidden=hidden)

            out = self.expert.sample(s, layers, mask, action_mask, generator, velocity=velocity)
        else:
            out = self.expert.sample(state * state_mask, layers, mask, action_mask, generator)
        return check_sample(self._expert_check, out, state.shape[0], self.horizon)
