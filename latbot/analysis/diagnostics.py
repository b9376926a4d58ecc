"""Latent diagnostics: collapse detection (per-token variance, effective rank), reconstruction PSNR,
action error per unified slice, and linear probes of true actions from latents."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from latbot.data.clips import K_ACTION_MASK, K_ACTIONS, K_FRAMES, K_INSTRUCTION
from latbot.data.spaces import ACTION_SLICES
from latbot.train.metrics import effective_rank as effective_rank


def token_variance(z: torch.Tensor) -> torch.Tensor:
    """Variance across samples of each token (N, T, D) → (T,), averaged over channels; ~0 = collapsed."""
    return z.double().var(0).mean(-1).float()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = torch.mean((pred.double() - target.double()) ** 2)
    return float(10 * torch.log10(1.0 / mse.clamp_min(1e-12)))


def moving_mask(first: torch.Tensor, future: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """(B, 1, h, w) bool: pixels whose colour changes by more than `threshold` (images in [0, 1]) between V_t
    and V_{t+k} — where the arm and the objects move; reconstruction is judged there, not on the flat
    background."""
    return (future - first).abs().amax(1, keepdim=True) > threshold


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Per-pixel SSIM (B, h, w) of images (B, 3, h, w) in [0, 1] (Gaussian window σ = 1.5, the usual C1, C2),
    averaged over channels."""
    import torch.nn.functional as F

    x = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = (g / g.sum()).to(a.dtype)
    kernel = (g[:, None] * g[None, :]).expand(a.shape[1], 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, [window // 2] * 4, mode="replicate"), kernel, groups=t.shape[1])

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(1)


def reconstruction_quality(pred: torch.Tensor, truth: torch.Tensor, first: torch.Tensor) -> dict[str, float]:
    """PSNR and SSIM of generated future frames over the whole frame and over the moving region, next to the
    trivial baseline "predict V_t again". All (B, 3, h, w) in [0, 1] at the decoder's resolution."""
    pred, truth, first = pred.double(), truth.double(), first.double()
    mask = moving_mask(first, truth)  # (B, 1, h, w)
    moving = mask.expand_as(truth)

    def masked_psnr(x: torch.Tensor) -> float:
        err = ((x - truth) ** 2)[moving]
        return float(10 * torch.log10(1.0 / err.mean().clamp_min(1e-12))) if err.numel() else float("nan")

    def masked_ssim(x: torch.Tensor) -> float:
        m = mask[:, 0]
        return float(ssim_map(x, truth)[m].mean()) if m.any() else float("nan")

    return {
        "psnr_db": psnr(pred, truth),
        "psnr_moving_db": masked_psnr(pred),
        "ssim": float(ssim_map(pred, truth).mean()),
        "ssim_moving": masked_ssim(pred),
        "copy_psnr_db": psnr(first, truth),
        "copy_psnr_moving_db": masked_psnr(first),
        "copy_ssim_moving": masked_ssim(first),
        "moving_fraction": float(mask.double().mean()),
    }


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


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    """R² of predictions (N, Y) against targets (N, Y): 1 − SS_res / SS_tot around the targets' mean per
    column; 0 is the mean predictor, below 0 worse than it."""
    ss_res = ((target - pred) ** 2).sum()
    ss_tot = ((target - target.mean(0)) ** 2).sum()
    return float(1 - ss_res / max(ss_tot, 1e-12))


def action_stream_r2(
    samples: np.ndarray, target: np.ndarray, valid: np.ndarray, counterfactuals: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """How well the LAM's action stream predicts the clips' true actions, in the LAM's normalised units, on
    the dims every sampled clip fills. samples (S, N, K, A): S draws of the generated actions per clip;
    target (N, K, A); valid (A,) bool. Reported next to two baselines:
    - `one_sample`: a single draw, what `sample` returns. A generative model's draw carries the conditional
      spread: even a perfect model scores 1 − 2·Var(a|z)/Var(a), below 0 once the latents leave more than
      half of the variance unexplained — so a draw is not a point prediction;
    - `mean_of_samples`: the mean of the S draws, an estimate of E[a | z] (the point prediction);
    - `constant`: the normalised mean action (zeros), the predictor R² compares against;
    - `copy_first`: every step of the chunk set to the clip's own first true action (persistence: uses
      ground truth the decoder never sees, an easy reference, not a baseline to beat);
    - each of `counterfactuals` (name → draws like `samples`, made from altered encoder inputs): the R² of
      their mean. `frames_frozen` (every frame replaced by V_t, so no motion is visible) near
      `mean_of_samples` says the stream predicts the actions from the scene and the instruction — a policy —
      rather than from the motion between the frames, which cannot carry over to tasks it has not seen;
    - `per_slice`: the same R²s (mean of the draws, constant, copy_first, counterfactuals) within each unified slice
      (right_pos, right_gripper, …). The pooled R² weighs each slice by its variance, so one slice the stream
      cannot predict (a gripper whose schedule is the task's) can hide another it does."""
    y = target[..., valid].reshape(len(target), -1)
    points = {"mean_of_samples": samples.mean(0), "copy_first": np.repeat(target[:, :1], target.shape[1], axis=1)}
    points |= {cf: d.mean(0) for cf, d in (counterfactuals or {}).items()}
    one = samples[0][..., valid].reshape(len(target), -1)
    pooled = {name: r2(p[..., valid].reshape(len(target), -1), y) for name, p in points.items()}
    return (
        {"one_sample": r2(one, y), "constant": r2(np.zeros_like(y), y)}
        | pooled
        | {"draws": int(samples.shape[0]), "per_slice": r2_per_slice(points, target, valid)}
    )


def r2_per_slice(predictions: dict[str, np.ndarray], target: np.ndarray, valid: np.ndarray) -> dict[str, dict]:
    """{unified slice: {name: R² of predictions[name] within the slice's valid dims} | {"constant": the zeros'}}
    for predictions and target (N, K, A) and valid (A,) bool (`slice_dims`)."""
    out = {}
    for sl, dims in slice_dims(valid).items():
        truth = target[..., dims].reshape(len(target), -1)
        out[sl] = {k: r2(p[..., dims].reshape(len(target), -1), truth) for k, p in predictions.items()}
        out[sl]["constant"] = r2(np.zeros_like(truth), truth)
    return out


def slice_dims(valid: np.ndarray) -> dict[str, np.ndarray]:
    """{unified slice name (right_pos, right_gripper, …): its dims that `valid` (A,) marks}, slices with none
    left out."""
    out = {}
    for name, sl in ACTION_SLICES.items():
        dims = np.arange(len(valid))[sl][valid[sl]]
        if dims.size:
            out[name] = dims
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


def future_frames(
    lam,
    batch: dict,
    generator: torch.Generator | None = None,
    with_actions: bool | None = None,
    latents: tuple[torch.Tensor, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The LAM's generated V_{t+k} for a clip batch and the true one at the decoder's resolution:
    (pred (B, 3, h, w) in [0, 1], truth (B, 3, h, w) in [0, 1], actions (B, K, 44) or None). Actions are
    generated too if the LAM decodes them, unless `with_actions` says otherwise. `latents`: the batch's
    `lam.latents(...)` when the caller has them already."""
    if with_actions is None:
        with_actions = lam.config.unified_decoder
    frames = batch[K_FRAMES]
    with torch.no_grad():
        z_sce, z_mot = latents if latents is not None else lam.latents(frames, list(batch[K_INSTRUCTION]))
        pred, actions = lam.decoder.sample(z_sce, z_mot, frames[:, 0], with_actions=with_actions, generator=generator)
    truth = frames[:, -1].float() / 255
    truth = torch.nn.functional.interpolate(truth, size=pred.shape[-2:], mode="bilinear", antialias=True)
    return pred, truth, actions


def lam_action_normalization(lam_run, store) -> tuple[dict | None, int]:
    """(statistics, stride) with which the LAM of `lam_run` sees `store`'s actions. The stride: the one the store
    was read at in training if it was one of the LAM's sources, else the sources' (the smallest, if they
    differ). The statistics: the ones it was trained with for one of its sources, else the store's own at that
    stride (the same per-source method); None for a LAM trained on raw actions."""
    from pathlib import Path

    from latbot import runs
    from latbot.data.clips import interval_action_stats

    def same(a, b) -> bool:
        return Path(a).resolve() == Path(b).resolve()

    run = runs.open_run(lam_run, "lam")
    norm = run.extra.get("action_normalization") or {"method": "none"}
    if norm["method"] != "none":
        for source in norm["sources"]:
            if same(source["store"], store):
                return source, int(source["stride"])
    sources = getattr(run.recipe.data, "sources", None) or []
    strides = [int(getattr(s, "frame_stride", 1) or 1) for s in sources]
    stride = next((k for s, k in zip(sources, strides, strict=True) if same(s.store, store)), min(strides, default=1))
    return (None if norm["method"] == "none" else interval_action_stats(store, stride)), stride


def lam_clip_dataset(lam_run, store):
    """ClipDataset of `store` at the LAM's clip length, stride and action normalisation (its actions are what
    the LAM's action stream generates); reads the run's recipe and statistics, not its weights."""
    from latbot import runs
    from latbot.data.clips import ClipDataset

    num_frames = runs.open_run(lam_run, "lam").recipe.data.num_frames
    stats, stride = lam_action_normalization(lam_run, store)
    return ClipDataset(store, num_frames=num_frames, frame_stride=stride, action_stats=stats)


def lam_clips(lam_run, store):
    """(LAM in eval mode, `lam_clip_dataset` of `store`)."""
    from latbot import runs

    return runs.load_lam(lam_run), lam_clip_dataset(lam_run, store)


def swapped_instructions(words: list[str]) -> list[str]:
    """Each clip's instruction replaced by the next different one in the batch (cyclically); kept where the
    batch has only one instruction."""
    out = []
    for i, w in enumerate(words):
        others = [words[(i + j) % len(words)] for j in range(1, len(words))]
        out.append(next((o for o in others if o != w), w))
    return out


ACTION_DRAWS = 8  # draws of the action stream per clip in diagnose_checkpoint (their mean estimates E[a | z])


def diagnose_checkpoint(run_dir, store, samples: int = 64, seed: int = 0) -> dict:
    """Latent diagnostics of a trained LAM (a `latbot train` run directory) on clips of an episode store:
    effective rank and per-token variance of Z_sce / Z_mot, PSNR of generated future frames, action MSE
    of generated actions per unified slice, and held-out linear probes of the true actions from Z_mot vs
    Z_sce vs random features. Actions (targets, generated, probed) are in the LAM's normalised units."""
    from torch.utils.data import DataLoader, Subset

    model, dataset = lam_clips(run_dir, store)
    picks = np.random.default_rng(seed).permutation(len(dataset))[:samples]
    z_sce, z_mot, targets, psnrs, mses, masks, quality = [], [], [], [], [], [], []
    draws: dict[str, list[np.ndarray]] = {
        "normal": [],
        "frames_frozen": [],
        "instruction_swapped": [],
        "instruction_dropped": [],
    }
    swapped = 0  # clips whose batch had another instruction to give them
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for batch in DataLoader(Subset(dataset, picks.tolist()), batch_size=16):
            s, m = model.encode(batch[K_FRAMES], list(batch[K_INSTRUCTION]))
            z_sce.append(s), z_mot.append(m)
            latents = model.pathways(s, m)  # encoded once: the future frames and the normal draws share them
            frame, truth, actions = future_frames(model, batch, generator, latents=latents)
            psnrs.append(psnr(frame, truth))
            first = batch[K_FRAMES][:, 0].float() / 255
            first = torch.nn.functional.interpolate(first, size=frame.shape[-2:], mode="bilinear", antialias=True)
            quality.append(reconstruction_quality(frame, truth, first))
            if actions is not None:
                mses.append(action_mse_per_slice(actions, batch[K_ACTIONS], batch[K_ACTION_MASK].float()))
            if model.config.unified_decoder:  # the action stream: several draws per clip (action_stream_r2)
                frames, words = batch[K_FRAMES], list(batch[K_INSTRUCTION])
                inputs = {
                    "normal": (frames, words),
                    "frames_frozen": (frames[:, :1].expand_as(frames).contiguous(), words),
                    "instruction_swapped": (frames, swapped_instructions(words)),
                    "instruction_dropped": (frames, [""] * len(words)),  # what instruction dropout trains for
                }
                swapped += sum(a != b for a, b in zip(words, inputs["instruction_swapped"][1], strict=True))
                for name, (clip, text) in inputs.items():
                    zs, zm = latents if name == "normal" else model.latents(clip, text)
                    draws[name].append(
                        np.stack(
                            [
                                model.decoder.sample(zs, zm, frames[:, 0], with_actions=True, generator=generator)[
                                    1
                                ].numpy()
                                for _ in range(ACTION_DRAWS)
                            ]
                        )
                    )
            targets.append(batch[K_ACTIONS].flatten(1).numpy())
            masks.append(batch[K_ACTION_MASK].numpy())
    z_sce, z_mot = torch.cat(z_sce), torch.cat(z_mot)
    y = np.concatenate(targets)
    valid = np.concatenate(masks).all(0)  # dims every sampled embodiment fills
    stream = None
    if draws["normal"]:
        truth = y.reshape(len(y), -1, valid.shape[0])
        made = {name: np.concatenate(d, axis=1) for name, d in draws.items()}
        stream = action_stream_r2(made.pop("normal"), truth, valid, made)
        stream["instruction_swapped_share"] = swapped / len(y)  # below 1: some clips kept their own
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
        "reconstruction": {k: float(np.nanmean([q[k] for q in quality])) for k in quality[0]},
        "action_mse": {k: float(np.mean([m[k] for m in mses])) for k in (mses[0] if mses else {})},
        "action_stream_r2": stream,
        "probe_r2": {
            "z_mot": linear_probe(z_mot.mean(1).numpy(), y),
            "z_sce": linear_probe(z_sce.mean(1).numpy(), y),
            "random": linear_probe(random, y),
        },
    }


RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2)  # λ relative to the mean squared feature norm


def pixel_features(frames: torch.Tensor, pool: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Raw-pixel features of clips (B, T, 3, H, W) (uint8 or [0, 1]), each frame averaged down to pool × pool:
    (motion (B, (T−1)·3·pool²): V_{t+i} − V_t for every later frame, scene (B, 3·pool²): V_t)."""
    f = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
    small = torch.nn.functional.adaptive_avg_pool2d(f.flatten(0, 1), pool).unflatten(0, f.shape[:2])
    return (small[:, 1:] - small[:, :1]).flatten(1).numpy(), small[:, 0].flatten(1).numpy()


def _ridge(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge predictions for x_test, in the dual form (features may outnumber clips). The features are centred
    on the training mean and scaled by one global factor (per-feature scaling would blow up the pixels that
    never change in the training scenes); `ridge` is relative to the mean squared feature norm."""
    mu = x_train.mean(0)
    scale = x_train.std() + 1e-8
    a, b = (x_train - mu) / scale, (x_test - mu) / scale
    gram = a @ a.T
    lam = ridge * float(np.trace(gram)) / len(a)
    alpha = np.linalg.solve(gram + lam * np.eye(len(a)), y_train - y_train.mean(0))
    return b @ (a.T @ alpha) + y_train.mean(0)


def transfer_ridge(
    x_train: np.ndarray,
    y_train: np.ndarray,
    tasks: list[str],
    x_test: np.ndarray,
    y_test: np.ndarray,
    seed: int = 0,
    groups: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """R² on other tasks' clips (x_test, y_test) of a ridge regression fit on (x_train, y_train), whose λ is
    chosen without looking at the test clips: by R² on a quarter of the training tasks held out of a first
    fit (`tasks` names each training clip's task), then refit on all of them. With one training task, on a
    quarter of its clips instead (`validation`: "tasks" or "clips"). Returns {"r2", "ridge",
    "validation_r2", "validation"}, and with `groups` (name → columns of y) "per_group": {name: the test R²
    on those columns}."""
    names = sorted(set(tasks))
    rng = np.random.default_rng(seed)
    if len(names) >= 2:
        held = set(rng.permutation(names)[: max(1, len(names) // 4)].tolist())
        val = np.array([t in held for t in tasks])
    else:
        val = np.zeros(len(tasks), bool)
        val[rng.permutation(len(tasks))[: max(1, len(tasks) // 4)]] = True
    scores = {r: r2(_ridge(x_train[~val], y_train[~val], x_train[val], r), y_train[val]) for r in RIDGE_GRID}
    best = max(scores, key=scores.get)
    pred = _ridge(x_train, y_train, x_test, best)
    out = {
        "r2": r2(pred, y_test),
        "ridge": best,
        "validation_r2": scores[best],
        "validation": "tasks" if len(names) >= 2 else "clips",
    }
    if groups:
        out["per_group"] = {name: r2(pred[:, cols], y_test[:, cols]) for name, cols in groups.items()}
    return out


def pixel_motion_reference(
    lam_run, pretrain_store, heldout_store, train_clips: int = 1024, test_clips: int = 128, seed: int = 0
) -> dict[str, Any]:
    """Can the held-out tasks' actions be read from the pixels at all, by what the LAM was trained on? A ridge
    regression from raw-pixel frame differences (`pixel_features`), fit on `train_clips` of the LAM's
    pretraining clips, scored by R² on `test_clips` of the held-out tasks, in the LAM's clip length, stride
    and normalised action units (λ: `transfer_ridge`). Next to it the same with V_t's pixels added (the
    scene): if the motion alone transfers and the LAM's action stream does not, the information is in the
    frames and the LAM's encoder drops it."""
    from torch.utils.data import DataLoader, Subset

    def gather(store, n: int, draw_seed: int):
        dataset = lam_clip_dataset(lam_run, store)
        picks = np.random.default_rng(draw_seed).permutation(len(dataset))[:n]
        motion, scene, actions, masks, tasks = [], [], [], [], []
        for batch in DataLoader(Subset(dataset, picks.tolist()), batch_size=64):
            m, s = pixel_features(batch[K_FRAMES])
            motion.append(m), scene.append(s), tasks.extend(batch[K_INSTRUCTION])
            actions.append(batch[K_ACTIONS].numpy()), masks.append(batch[K_ACTION_MASK].numpy())
        return np.concatenate(motion), np.concatenate(scene), np.concatenate(actions), np.concatenate(masks), tasks

    m_tr, s_tr, a_tr, k_tr, tasks = gather(pretrain_store, train_clips, seed)
    m_te, s_te, a_te, k_te, _ = gather(heldout_store, test_clips, seed + 1)
    valid = k_tr.all(0) & k_te.all(0)  # dims every clip of both stores fills
    y_tr, y_te = a_tr[..., valid].reshape(len(a_tr), -1), a_te[..., valid].reshape(len(a_te), -1)
    both_tr, both_te = np.concatenate([m_tr, s_tr], 1), np.concatenate([m_te, s_te], 1)
    position = np.cumsum(valid) - 1  # a valid dim's column within one step of y
    groups = {  # each unified slice's columns of y (steps × valid dims, step-major)
        name: (np.arange(a_te.shape[1])[:, None] * int(valid.sum()) + position[dims][None]).ravel()
        for name, dims in slice_dims(valid).items()
    }
    return {
        "train_clips": len(y_tr),
        "test_clips": len(y_te),
        "constant": r2(np.zeros_like(y_te), y_te),
        "motion": transfer_ridge(m_tr, y_tr, tasks, m_te, y_te, seed, groups),
        "scene_and_motion": transfer_ridge(both_tr, y_tr, tasks, both_te, y_te, seed, groups),
    }
