"""`mlp_head`: a regression action expert, as an example of an `action_experts` plugin.

It pools the student's last hidden layer (masked mean over the context), adds the normalised state, and
an MLP predicts the whole chunk at once: H × 44 unified actions and H × 2 gripper logits (left, right).
No flow matching: `sample` is one forward pass.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from latbot.config import PluginConfig
from latbot.data.spaces import ACTION_DIM, ACTION_GRIPPER, ACTION_POS, ACTION_ROT, ARMS, STATE_DIM

GRIPPER_DIMS = [ACTION_GRIPPER[arm] for arm in ARMS]  # unified gripper dims of the left and right arm (6, 13)


def ee_mask() -> torch.Tensor:
    """(44,) bool: translation and rotation dims of both arms, what "ee" is computed over."""
    mask = torch.zeros(ACTION_DIM, dtype=torch.bool)
    for arm in ARMS:
        mask[ACTION_POS[arm]] = mask[ACTION_ROT[arm]] = True
    return mask


class MlpHeadActionExpert(nn.Module):
    class Config(PluginConfig):
        type: Literal["mlp_head"] = "mlp_head"
        hidden: int = Field(128, ge=8, description="Width of the MLP.")

    def __init__(self, config: Config, *, vlm_width: int, vlm_layers: int, horizon: int):
        super().__init__()
        self.config, self.horizon = config, horizon
        self.mlp = nn.Sequential(
            nn.Linear(vlm_width + STATE_DIM, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, horizon * (ACTION_DIM + len(GRIPPER_DIMS))),
        )
        self.register_buffer("ee", ee_mask(), persistent=False)

    @classmethod
    def tiny_config(cls) -> Config:
        return cls.Config(hidden=32)

    def repeated_blocks(self) -> list[nn.Module]:
        return []

    def predict(self, state, layers, ctx_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """→ actions (B, H, 44), gripper logits (B, H, 2)."""
        keep = ctx_mask.to(layers[-1].dtype)[..., None]  # (B, N, 1)
        pooled = (layers[-1] * keep).sum(1) / keep.sum(1).clamp(min=1)  # (B, D)
        out = self.mlp(torch.cat([pooled, state.to(pooled.dtype)], -1)).view(state.shape[0], self.horizon, -1)
        return out[..., :ACTION_DIM], out[..., ACTION_DIM:]

    def loss(self, actions, gripper, action_mask, pad, state, layers, ctx_mask) -> dict[str, torch.Tensor]:
        """actions (B, H, 44) normalised, gripper (B, H, 2) in [0, 1], action_mask (B, 44), pad (B, H) True
        past the episode's end, state (B, 46), layers (L + 1) × (B, N, D), ctx_mask (B, N)."""
        pred, logits = self.predict(state, layers, ctx_mask)
        steps = (~pad).float()[..., None]  # (B, H, 1)
        ee = (action_mask.bool() & self.ee).float()[:, None] * steps  # (B, H, 44)
        l_ee = ((pred - actions) ** 2 * ee).sum() / ee.sum().clamp(min=1)
        grip = action_mask[:, GRIPPER_DIMS].float()[:, None] * steps  # (B, H, 2)
        bce = F.binary_cross_entropy_with_logits(logits, (gripper > 0.5).float(), reduction="none")
        l_grip = (bce * grip).sum() / grip.sum().clamp(min=1)
        return {"loss": l_ee + l_grip, "ee": l_ee, "gripper": l_grip}

    @torch.no_grad()
    def sample(self, state, layers, ctx_mask, action_mask=None, generator=None):
        """→ actions (B, H, 44) normalised, gripper closed-probabilities (B, H, 2)."""
        pred, logits = self.predict(state, layers, ctx_mask)
        return pred, torch.sigmoid(logits)
