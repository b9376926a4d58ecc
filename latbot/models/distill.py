"""Stage 2 (paper §3.3): distil the LAM's latent actions into a student VLM.

    L = L_a + λ_r · L_r,   L_a = ‖Ẑ − Z‖² + KL(p(Ẑ) ‖ p(Z)),   p(z) = softmax(ẑ / τ) over channels,
    ẑ = z / ‖z‖₂ per token,   L_r = next-token loss on the subtask text (students/base.py).

Choices where the paper is silent or where we differ (docs/choices.md): by default (`reduction: mean`)
‖Ẑ − Z‖² is the mean over tokens and channels (scale-free in the width) and the KL is summed over
channels and averaged over tokens, and L_r is averaged over its target tokens; `reduction: sum` uses the
paper's sums (Eq. 4–5) — the MSE over tokens and channels, the KL over tokens, L_r over the subtask's
target tokens (the student's "lm_tokens"), each averaged over samples. The KL runs in the direction the paper writes
(student distribution first); τ defaults to 1/√D, which gives the softmax logits of unit-norm tokens a
standard deviation of about one whatever the width D. Samples without a subtask annotation get no L_r
(`subtask_fallback: skip`, what the paper implies) or predict the instruction (`instruction`).

The teacher (a frozen LAM encoder, eval mode, `no_grad`) is held outside the module tree: it is not
trained, not checkpointed and not switched to train mode by the loop. Online (no latent cache), its
latents are computed inside the distillation step, under the loop's bf16 autocast when
`train.precision: bf16`, and returned in float32 like cached latents; under FSDP it is sharded on its own
(`shard_teacher`: its encoder's blocks and its root, resharded after each forward, so only one block's
weights are gathered at a time and none stay gathered between steps). What the student returns is checked
at every step against its contract (latbot.models.students.base: shapes and dtypes only, free and fine on
meta tensors); the teacher's latents are checked by the LAM's `encode`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from latbot.data.clips import K_FRAMES, K_INSTRUCTION, K_LATENTS, K_SUBTASK
from latbot.models.encoders.base import OutputCheck
from latbot.models.students.base import check_forward


def latent_mse(z_hat: torch.Tensor, z: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """‖Ẑ − Z‖² of (B, N, D) latents: "mean" over tokens and channels, or "sum" over them (Eq. 4's squared
    norm), averaged over the batch."""
    err = (z_hat.float() - z.float()) ** 2
    return err.mean() if reduction == "mean" else err.sum((1, 2)).mean()


def latent_kl(z_hat: torch.Tensor, z: torch.Tensor, temperature: float, reduction: str = "mean") -> torch.Tensor:
    """KL(p(Ẑ) ‖ p(Z)) per token (sum over channels), then "mean" over tokens or "sum" over them (Eq. 5),
    averaged over the batch."""
    log_p = F.log_softmax(F.normalize(z_hat.float(), dim=-1) / temperature, dim=-1)
    log_q = F.log_softmax(F.normalize(z.float(), dim=-1) / temperature, dim=-1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B, N)
    return per_token.mean() if reduction == "mean" else per_token.sum(1).mean()


def default_temperature(width: int) -> float:
    return 1.0 / math.sqrt(width)


class DistillationModel(nn.Module):
    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        temperature: float | None,
        reasoning_weight: float,
        subtask_fallback: str = "skip",
        reduction: str = "mean",
    ):
        """`subtask_fallback`: what L_r does for a sample whose episode has no subtask annotation there —
        "skip" (no L_r for it) or "instruction" (predict the instruction instead). `reduction`: "mean" over
        tokens and channels, or "sum" (Eq. 4's squared norm and Eq. 5's sum over tokens, per sample)."""
        super().__init__()
        if subtask_fallback not in ("skip", "instruction") or reduction not in ("mean", "sum"):
            raise ValueError(f"subtask_fallback={subtask_fallback!r}, reduction={reduction!r}")
        self.student = student
        object.__setattr__(self, "teacher", teacher)  # not a submodule: see the module docstring
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self._student_check = OutputCheck("students", student)
        self._latent_width = self._student_check.int_property(
            "latent_width", student.latent_width, "the width of Ẑ: the teacher's D"
        )
        config = getattr(student, "config", None)
        counts = [getattr(config, f, None) for f in ("num_scene_tokens", "num_motion_tokens")]
        self._num_latents = sum(counts) if all(isinstance(n, int) for n in counts) else None
        self.temperature = temperature or default_temperature(self._latent_width)
        self.reasoning_weight = reasoning_weight
        self.subtask_fallback = subtask_fallback
        self.reduction = reduction

    def repeated_blocks(self) -> list[nn.Module]:
        """The student's blocks (the teacher is not part of the trained module tree)."""
        return self.student.repeated_blocks()

    def to(self, *args, **kwargs):
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    @torch.no_grad()
    def teacher_latents(self, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """Z = [Z_sce; Z_mot] (B, Ns + Nm, D) in float32, the teacher frozen and in eval mode; the dtype of its
        computation is the caller's autocast (the loop's bf16 autocast when `train.precision: bf16`)."""
        if self.teacher.training:
            self.teacher.eval()  # nothing may switch the teacher's dropout / norms to training behaviour
        z_sce, z_mot = self.teacher.encode(frames, instructions)
        return torch.cat([z_sce, z_mot], dim=1).float()

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
        given = list(batch[K_SUBTASK])  # "" where the episode has no subtask at this step
        if self.subtask_fallback == "instruction":
            subtasks = [s or text for s, text in zip(given, instructions, strict=True)]
        else:
            subtasks = [s or None for s in given]  # None: no reasoning target for this sample
        out = check_forward(
            self._student_check,
            self.student(frames[:, :1], instructions, subtasks=subtasks),
            frames.shape[0],
            num_latents=self._num_latents,
            latent_width=self._latent_width,
            lm_loss=True,
        )
        z_hat = out["latents"]
        if z_hat.shape != z.shape:
            source = "cached teacher latents (model.teacher_cache)" if K_LATENTS in batch else "teacher latents"
            raise ValueError(
                f"the student's latents are {tuple(z_hat.shape)}, the {source} {tuple(z.shape)}: the student's "
                "num_scene_tokens + num_motion_tokens and latent_width must match the teacher's tokens and width"
            )
        mse = latent_mse(z_hat, z, self.reduction)
        kl = latent_kl(z_hat, z, self.temperature, self.reduction)
        lm = out["lm_loss"]
        if self.reduction == "sum":  # Eq. 4–5's sums: L_r summed over the target tokens, averaged over samples
            if "lm_tokens" not in out:
                raise ValueError(
                    f'model.loss_reduction: sum needs the student to return "lm_tokens" (how many target tokens '
                    f"its lm_loss averages); {type(self.student).__name__} does not: return it, or use "
                    "loss_reduction: mean"
                )
            lm = lm * out["lm_tokens"].to(lm.dtype) / frames.shape[0]
        with_subtask = torch.tensor(sum(bool(s) for s in given) / max(len(given), 1), device=mse.device)
        return {
            "loss": mse + kl + self.reasoning_weight * lm,
            "mse": mse,
            "kl": kl,
            "lm": lm,
            "subtask_rate": with_subtask,  # share of samples with an annotated subtask (the rest: fallback)
        }


def teacher_blocks(teacher: nn.Module) -> list[nn.Module]:
    """The teacher's repeated blocks: its encoder's (the decoder of a LAM used as a teacher is dropped)."""
    encoder = getattr(teacher, "encoder", teacher)
    return list(encoder.repeated_blocks())
