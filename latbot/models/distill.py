"""Stage 2 (paper §3.3): distil the LAM's latent actions into a student VLM.

    L = L_a + λ_r · L_r,   L_a = ‖Ẑ − Z‖² + KL(p(Ẑ) ‖ p(Z)),   p(z) = softmax(ẑ / τ) over channels,
    ẑ = z / ‖z‖₂ per token,   L_r = next-token loss on the subtask text (students/base.py).

Choices where the paper is silent (docs/distillation.md): ‖Ẑ − Z‖² is the mean over tokens and
channels (scale-free in the width); the KL is summed over channels and averaged over tokens, in the
direction the paper writes (student distribution first); τ defaults to 1/√D, which gives the softmax
logits of unit-norm tokens a standard deviation of about one whatever the width D.

The teacher (a frozen LAM encoder, eval mode) is held outside the module tree: it is not trained, not
sharded, not checkpointed and not switched to train mode by the loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from latbot.data.clips import K_FRAMES, K_INSTRUCTION, K_LATENTS, K_SUBTASK


def latent_mse(z_hat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """‖Ẑ − Z‖², averaged over tokens and channels."""
    return F.mse_loss(z_hat.float(), z.float())


def latent_kl(z_hat: torch.Tensor, z: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p(Ẑ) ‖ p(Z)) per token (sum over channels), averaged over tokens."""
    log_p = F.log_softmax(F.normalize(z_hat.float(), dim=-1) / temperature, dim=-1)
    log_q = F.log_softmax(F.normalize(z.float(), dim=-1) / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def default_temperature(width: int) -> float:
    return 1.0 / math.sqrt(width)


class DistillationModel(nn.Module):
    def __init__(
        self, student: nn.Module, teacher: nn.Module | None, temperature: float | None, reasoning_weight: float
    ):
        super().__init__()
        self.student = student
        object.__setattr__(self, "teacher", teacher)  # not a submodule: see the module docstring
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.temperature = temperature or default_temperature(student.latent_width)
        self.reasoning_weight = reasoning_weight

    def repeated_blocks(self) -> list[nn.Module]:
        """The student's blocks (the teacher is not part of the trained module tree)."""
        return self.student.repeated_blocks()

    def to(self, *args, **kwargs):
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    @torch.no_grad()
    def teacher_latents(self, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        z_sce, z_mot = self.teacher.encode(frames, instructions)
        return torch.cat([z_sce, z_mot], dim=1)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """A clip batch (the teacher's clip; the student sees frame 0) or a cached batch (frame 0 and
        K_LATENTS) → {"loss", "mse", "kl", "lm"}."""
        frames = batch[K_FRAMES]
        instructions = list(batch[K_INSTRUCTION])
        if K_LATENTS in batch:
            z = batch[K_LATENTS].to(frames.device)
        else:
            if self.teacher is None:
                raise ValueError("no teacher and no cached latents in the batch")
            z = self.teacher_latents(frames, instructions)
        out = self.student(frames[:, :1], instructions, subtasks=list(batch[K_SUBTASK]))
        z_hat = out["latents"]
        if z_hat.shape != z.shape:
            raise ValueError(f"student latents {tuple(z_hat.shape)} vs teacher latents {tuple(z.shape)}")
        mse = latent_mse(z_hat, z)
        kl = latent_kl(z_hat, z, self.temperature)
        lm = out["lm_loss"]
        return {"loss": mse + kl + self.reasoning_weight * lm, "mse": mse, "kl": kl, "lm": lm}
