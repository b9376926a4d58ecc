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


def diagnose_checkpoint(run_dir, store, samples: int = 64, seed: int = 0) -> dict:
    """Latent diagnostics of a trained LAM (a `latbot train` run directory) on clips of an episode store:
    effective rank and per-token variance of Z_sce / Z_mot, PSNR of generated future frames, action MSE
    of generated actions per unified slice, and held-out linear probes of the true actions from Z_mot vs
    Z_sce vs random features."""
    from torch.utils.data import DataLoader, Subset

    from latbot.data.clips import ClipDataset
    from latbot.models.lam import LatentActionModel

    model = LatentActionModel.from_checkpoint(run_dir)
    frames = model.config.encoder.num_frames if hasattr(model.config.encoder, "num_frames") else None
    dataset = ClipDataset(store, num_frames=frames or model.decoder.config.horizon + 1)
    picks = np.random.default_rng(seed).permutation(len(dataset))[:samples]
    z_sce, z_mot, targets, psnrs, mses, masks = [], [], [], [], [], []
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for batch in DataLoader(Subset(dataset, picks.tolist()), batch_size=16):
            s, m = model.encode(batch["frames"], list(batch["instruction"]))
            z_sce.append(s), z_mot.append(m)
            zs, zm = model.latents(batch["frames"], list(batch["instruction"]))
            frame, actions = model.decoder.sample(
                zs, zm, batch["frames"][:, 0], with_actions=model.config.unified_decoder, generator=generator
            )
            truth = batch["frames"][:, -1].float() / 255
            truth = torch.nn.functional.interpolate(truth, size=frame.shape[-2:], mode="bilinear", antialias=True)
            psnrs.append(psnr(frame, truth))
            if actions is not None:
                mses.append(action_mse_per_slice(actions, batch["actions"], batch["action_mask"].float()))
            targets.append(batch["actions"].flatten(1).numpy())
            masks.append(batch["action_mask"].numpy())
    z_sce, z_mot = torch.cat(z_sce), torch.cat(z_mot)
    y = np.concatenate(targets)
    valid = np.concatenate(masks).all(0)  # dims every sampled embodiment fills
    y = y.reshape(len(y), -1, valid.shape[0])[:, :, valid].reshape(len(y), -1)
    random = np.random.default_rng(seed).normal(size=(len(y), z_mot.shape[-1]))
    return {
        "samples": len(y),
        "effective_rank": {"z_sce": effective_rank(z_sce), "z_mot": effective_rank(z_mot)},
        "token_variance_mean": {
            "z_sce": float(token_variance(z_sce).mean()),
            "z_mot": float(token_variance(z_mot).mean()),
        },
        "psnr_db": float(np.mean(psnrs)),
        "action_mse": {k: float(np.mean([m[k] for m in mses])) for k in (mses[0] if mses else {})},
        "probe_r2": {
            "z_mot": linear_probe(z_mot.mean(1).numpy(), y),
            "z_sce": linear_probe(z_sce.mean(1).numpy(), y),
            "random": linear_probe(random, y),
        },
    }
