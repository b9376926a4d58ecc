"""Latent diagnostics: collapse detection (per-token variance, effective rank), reconstruction PSNR,
action error per unified slice, and linear probes of true actions from latents."""

from __future__ import annotations

import numpy as np
import torch

from latbot.data.spaces import ACTION_SLICES


def effective_rank(z: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of latents (N, ..., D) flattened to (N, ·D); 1 means
    every sample gives the same direction (collapse), up to min(N, dims) when they spread evenly."""
    x = z.reshape(z.shape[0], -1).double()
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def token_variance(z: torch.Tensor) -> torch.Tensor:
    """Variance across samples of each token (N, T, D) → (T,), averaged over channels; ~0 = collapsed."""
    return z.double().var(0).mean(-1).float()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = torch.mean((pred.double() - target.double()) ** 2)
    return float(10 * torch.log10(1.0 / mse.clamp_min(1e-12)))


def action_mse_per_slice(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """MSE per named unified slice (left_pos, right_rot, …) over the valid dims only; slices no sample
    fills are omitted. pred/target (B, K, 44), mask (B, 44)."""
    out = {}
    err = (pred - target) ** 2 * mask[:, None, :]
    for name, sl in ACTION_SLICES.items():
        count = mask[:, sl].sum() * pred.shape[1]
        if count > 0:
            out[name] = float(err[..., sl].sum() / count)
    return out


def linear_probe(
    features: np.ndarray, targets: np.ndarray, train_fraction: float = 0.7, ridge: float = 1e-2, seed: int = 0
) -> float:
    """Held-out R² of a ridge regression from features (N, F) to targets (N, Y); ≤ 0 means no information."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(features))
    cut = max(2, int(train_fraction * len(features)))
    tr, te = order[:cut], order[cut:]
    x = (features - features[tr].mean(0)) / (features[tr].std(0) + 1e-8)
    y_mean = targets[tr].mean(0)
    a = x[tr]
    w = np.linalg.solve(a.T @ a + ridge * len(tr) * np.eye(a.shape[1]), a.T @ (targets[tr] - y_mean))
    pred = x[te] @ w + y_mean
    ss_res = ((targets[te] - pred) ** 2).sum()
    ss_tot = ((targets[te] - targets[te].mean(0)) ** 2).sum()
    return float(1 - ss_res / max(ss_tot, 1e-12))
