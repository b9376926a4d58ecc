"""Flow matching, written once for every model that generates (the two streams of both unified decoders
and the action expert). Convention of pi0 / pi0.5 (openpi, reference §6): t = 1 is noise, t = 0 is data.

Training: t ~ Beta(α, β) · 0.999 + 0.001 (pi0.5: α = 1.5, β = 1), x_t = t·ε + (1 − t)·x, and the network
predicts the velocity u = ε − x. Sampling: Euler from t = 1 to 0 in `steps` steps, x ← x − v(x, t) / steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def sample_time(batch: int, device: torch.device) -> torch.Tensor:
    """t ~ Beta(1.5, 1) by inverse CDF (F(t) = t^1.5), squeezed into [0.001, 1]: one `torch.rand` draw
    (the decoders' sampler)."""
    return (torch.rand(batch, device=device) ** (2.0 / 3.0)) * 0.999 + 0.001


def sample_time_beta(batch: int, alpha: float, beta: float, device: torch.device) -> torch.Tensor:
    """t ~ Beta(α, β) for any (α, β), squeezed into [0.001, 1] (the action expert's sampler; its α, β are
    recipe fields). It draws through `torch.distributions.Beta`, so even at (1.5, 1) it consumes the RNG
    differently from `sample_time`: the two stay separate to keep every model's losses as they were."""
    dist = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(beta))
    return (dist.sample((batch,)) * 0.999 + 0.001).to(device)


def noisy(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity) for data x, noise ε and per-sample time t (B,)."""
    tt = t.view(-1, *([1] * (x.dim() - 1)))
    return tt * noise + (1 - tt) * x, noise - x


@torch.no_grad()
def integrate(velocity: Callable, x: tuple, steps: int) -> tuple:
    """Euler from t = 1 (noise) to 0 (data) for several jointly generated tensors at once. `x` is a tuple
    of tensors (None for an absent stream); `velocity(*x, t)` returns one velocity per entry."""
    dt = 1.0 / steps
    first = next(xi for xi in x if xi is not None)
    for k in range(steps):
        t = torch.full((first.shape[0],), 1.0 - k * dt, device=first.device)
        v = velocity(*x, t)
        x = tuple(None if xi is None else xi - dt * vi for xi, vi in zip(x, v, strict=True))
    return x


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of (B, K, A) over each sample's valid dims (the (B, A) validity mask), then the mean over samples:
    every sample weighs the same, whatever its embodiment's number of valid dims (a 44-dim hand sample and
    a 7-dim arm sample count once each). For a batch of one embodiment this is the plain masked mean."""
    m = mask[:, None, :].to(pred.dtype)  # (B, 1, A)
    dims = m.sum((1, 2))  # (B,) valid dims per sample
    per_sample = ((pred - target) ** 2 * m).sum((1, 2)) / (dims * pred.shape[1]).clamp_min(1)
    has = (dims > 0).to(pred.dtype)  # a sample with no valid dim (none should exist) does not count
    return (per_sample * has).sum() / has.sum().clamp_min(1)


# -- the two streams of a unified decoder (paper §3.2): image (or image latent) + actions -----------------
def two_stream_losses(
    velocity: Callable, target: torch.Tensor, actions: torch.Tensor | None, action_mask: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Flow-matching losses of both streams at one shared time t per sample.

    target: the clean image-stream data (B, C, h, w); actions (B, K, A) or None (image stream only);
    action_mask (B, A); `velocity(x_img, x_act, t)` → (v_img, v_act or None) → {"image", "action"}."""
    t = sample_time(target.shape[0], target.device)
    x_img, u_img = noisy(target, torch.randn_like(target), t)
    x_act = u_act = None
    if actions is not None:
        x_act, u_act = noisy(actions, torch.randn_like(actions), t)
    v_img, v_act = velocity(x_img, x_act, t)
    losses = {"image": F.mse_loss(v_img, u_img)}
    if actions is not None:
        losses["action"] = masked_mse(v_act, u_act, action_mask)  # only the embodiment's valid dims
    return losses


@torch.no_grad()
def two_stream_sample(
    velocity: Callable,
    like: torch.Tensor,
    action_shape: tuple[int, ...] | None,
    steps: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generate both streams from noise: an image-stream tensor shaped (and typed) like `like`, and actions
    of `action_shape` (None: image stream only) → (x_img, x_act or None)."""
    img = torch.randn(like.shape, generator=generator).to(like)
    act = torch.randn(action_shape, generator=generator).to(like) if action_shape is not None else None
    return integrate(velocity, (img, act), steps)
