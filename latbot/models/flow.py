"""Flow matching as in pi0 / pi0.5 (openpi): t = 1 is noise, t = 0 is data.

Training: t ~ Beta(1.5, 1) · 0.999 + 0.001, x_t = t·ε + (1 − t)·x, the network predicts u = ε − x.
Sampling (in the decoders): Euler from t = 1 to 0 in `steps` steps, x ← x − v(x, t) / steps.
"""

from __future__ import annotations

import torch


def sample_time(batch: int, device: torch.device) -> torch.Tensor:
    """t ~ Beta(1.5, 1) by inverse CDF (F(t) = t^1.5), squeezed into [0.001, 1]; follows torch's RNG."""
    return (torch.rand(batch, device=device) ** (2.0 / 3.0)) * 0.999 + 0.001


def noisy(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity) for data x, noise ε and per-sample time t (B,)."""
    tt = t.view(-1, *([1] * (x.dim() - 1)))
    return tt * noise + (1 - tt) * x, noise - x


@torch.no_grad()
def integrate(velocity, x_img: torch.Tensor, x_act: torch.Tensor | None, steps: int):
    """Euler from t = 1 (noise) to 0 (data) for both streams of a unified decoder at once.
    `velocity(x_img, x_act, t)` returns (v_img, v_act); `x_act` may be None (image stream only)."""
    dt = 1.0 / steps
    for k in range(steps):
        t = torch.full((x_img.shape[0],), 1.0 - k * dt, device=x_img.device)
        v_img, v_act = velocity(x_img, x_act, t)
        x_img = x_img - dt * v_img
        x_act = x_act - dt * v_act if x_act is not None else None
    return x_img, x_act


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of (B, K, A) over the dims the (B, A) validity mask marks: the action loss of every decoder."""
    m = mask[:, None, :].to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[1]).clamp_min(1)
