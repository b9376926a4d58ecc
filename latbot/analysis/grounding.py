"""Attention grounding by spatial entropy (paper supp. 7; Kang et al., CVPR 2025).

For each layer and head: the last text token's attention to the image tokens; the first P² entries as a
P×P map; binarised above its mean; 8-connected components C_i; H = −Σ p_i log p_i with
p_i = |C_i| / Σ_j |C_j| (the paper's definition, by pixel count) or, with `weighted=True`, p_i = attention
mass of C_i / total mass above the mean (the original method). One blob → 0; k equal blobs → log k.
A map with nothing above its mean (uniform, all zero) has no component: H = +inf (never the best head).
Everything is vectorised over samples × layers × heads (one `scipy.ndimage.label` call).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def spatial_entropy(maps: np.ndarray, weighted: bool = False) -> np.ndarray:
    """maps (..., P, P) → entropy (...,) in nats."""
    from scipy import ndimage

    maps = np.asarray(maps, dtype=np.float64)
    lead, (p, q) = maps.shape[:-2], maps.shape[-2:]
    flat = maps.reshape(-1, p, q)
    above = flat - flat.mean(axis=(1, 2), keepdims=True)
    binary = above > 1e-12
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connectivity inside each map, never across maps
    labels, count = ndimage.label(binary, structure=structure)
    out = np.full(len(flat), np.inf)
    if count:
        weights = np.where(binary, above, 0.0).ravel() if weighted else binary.ravel().astype(np.float64)
        size = np.bincount(labels.ravel(), weights=weights, minlength=count + 1)[1:]  # per component
        owner = np.zeros(count, np.int64)  # the map each component belongs to
        owner[labels.ravel()[labels.ravel() > 0] - 1] = np.repeat(np.arange(len(flat)), p * q)[labels.ravel() > 0]
        total = np.bincount(owner, weights=size, minlength=len(flat))
        prob = size / total[owner]
        ent = np.bincount(owner, weights=-prob * np.log(prob), minlength=len(flat))
        has = np.bincount(owner, minlength=len(flat)) > 0
        out[has] = ent[has]
    return out.reshape(lead)


def attention_entropy(maps: np.ndarray) -> np.ndarray:
    """maps (..., P, P) → the Shannon entropy (...,) in nats of each map as a distribution over its P² cells
    (negative weights count as 0): log P² for uniform attention, 0 for one cell. Unlike `spatial_entropy`,
    which on a 4 × 4 grid is 0 for nearly every map (one blob above the mean), it moves with every change in
    how concentrated a head is. A map with no positive weight is +inf (never among the lowest)."""
    flat = np.clip(np.asarray(maps, dtype=np.float64), 0, None).reshape(*np.shape(maps)[:-2], -1)
    total = flat.sum(-1, keepdims=True)
    prob = np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)
    logs = np.log(prob, out=np.zeros_like(prob), where=prob > 0)
    return np.where(total[..., 0] > 0, -(prob * logs).sum(-1), np.inf)


def to_maps(attention: np.ndarray) -> np.ndarray:
    """(..., n_image_tokens) → (..., P, P) from the first P² entries, P = ⌊√n⌋."""
    p = math.isqrt(attention.shape[-1])
    return attention[..., : p * p].reshape(*attention.shape[:-1], p, p)


def analyze_encoder(encoder, frames, instructions: list[str], weighted: bool = False) -> dict[str, np.ndarray]:
    """Entropy (B, L, H) of every head, and for each sample the lowest-entropy map and its (layer, head)."""
    import torch

    if not hasattr(encoder, "image_attention"):
        from latbot.errors import LatBotError

        raise LatBotError(
            f"{type(encoder).__name__} has no image_attention(frames, instructions): its attention to the image "
            "cannot be analysed (the built-in encoders and students have it; see docs/analysis.md)"
        )
    with torch.no_grad():  # every VLM that can be analysed says how its last prompt token attends to the image
        att = encoder.image_attention(frames, instructions).float().numpy()  # (B, L, H, n)
    maps = to_maps(att)
    entropy = spatial_entropy(maps, weighted)
    b, _layers, heads = entropy.shape
    flat = entropy.reshape(b, -1)
    best = np.argmin(np.where(np.isfinite(flat), flat, np.inf), axis=1)
    return {
        "entropy": entropy,
        "attention_entropy": attention_entropy(maps),
        "maps": maps,
        "best": np.stack([best // heads, best % heads], 1),
        "best_map": maps.reshape(b, -1, *maps.shape[-2:])[np.arange(b), best],
    }


def k_lowest(entropy: np.ndarray, fraction: float = 0.1, minimum: int = 4) -> np.ndarray:
    """Per sample, the mean entropy of its k most concentrated heads (k = `fraction` of the finite heads, at
    least `minimum`) → (B,). Unlike the single lowest head, which on a coarse token grid (4 × 4 in the tiny
    models) is a one-blob map at 0 nats for almost any model, this average still moves when a model's
    attention concentrates in more of its heads."""
    flat = entropy.reshape(len(entropy), -1)
    out = np.full(len(flat), np.nan)
    for i, row in enumerate(flat):
        finite = np.sort(row[np.isfinite(row)])
        if finite.size:
            k = min(finite.size, max(minimum, round(fraction * finite.size)))
            out[i] = finite[:k].mean()
    return out


SPATIAL = "mean spatial entropy of the 10% lowest-entropy heads (nats)"
ATTENTION = "mean attention entropy (over the image grid) of the 10% lowest-entropy heads (nats)"


def compare(entropy_a: np.ndarray, entropy_b: np.ndarray, statistic: str = SPATIAL) -> dict[str, Any]:
    """The A/B statistic of two models on the same samples: per sample the mean entropy of the k lowest heads
    (`k_lowest`), each model's mean with a 95% t-interval over samples, and the paired difference B − A with
    its t-interval and exact sign-flip p over samples (samples, not seeds: it says whether these two
    checkpoints differ on these frames, not whether the training method does). `degenerate` is true when
    every per-sample value of both models is the same number (the statistic cannot tell them apart)."""
    from latbot.analysis.stats import sign_flip_p, t_interval

    a, b = k_lowest(entropy_a), k_lowest(entropy_b)
    keep = np.isfinite(a) & np.isfinite(b)
    both = np.concatenate([a[keep], b[keep]])
    out: dict[str, Any] = {
        "statistic": statistic,
        "samples": int(keep.sum()),
        "degenerate": bool(both.size == 0 or np.ptp(both) == 0),
    }
    for label, v in (("A", a[keep]), ("B", b[keep])):
        mean, lo, hi = t_interval(v)
        out[label] = {"mean": mean, "ci95": [lo, hi], "per_sample": v.tolist()}
    diff = b[keep] - a[keep]
    mean, lo, hi = t_interval(diff)
    out["B_minus_A"] = {"mean": mean, "ci95": [lo, hi], "p_sign_flip": sign_flip_p(diff, max_exact=16)}
    return out


def overlay(frame: np.ndarray, heat: np.ndarray, title: str) -> Any:
    """A PIL image: the frame with the attention map (upsampled, red) blended over it, and a title."""
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    m = heat - heat.min()
    m = m / m.max() if m.max() > 0 else m
    up = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)) / 255.0
    red = np.zeros_like(frame, dtype=np.float64)
    red[..., 0] = 255
    mixed = (frame * (1 - 0.6 * up[..., None]) + red * 0.6 * up[..., None]).astype(np.uint8)
    canvas = Image.new("RGB", (max(w, 160), h + 14), "white")
    canvas.paste(Image.fromarray(mixed), (0, 14))
    ImageDraw.Draw(canvas).text((2, 1), title, fill="black")
    return canvas


OUTPUTS = ("heads.csv", "summary.json", "grounding.rrd")  # plus sample_NNNN.png


def _claim_out(out: Path) -> Path:
    """The analysis writes into a new or empty folder, or one holding only its own earlier outputs, and never
    inside a LatBot artifact; anything else is refused before a file is written."""
    import re

    from latbot.ownership import OwnershipError, enclosing_artifact

    inside = enclosing_artifact(out)
    if inside is not None:
        raise OwnershipError(
            f"--out {out}: lies inside the '{inside[1]}' artifact {inside[0]}; choose a folder outside it"
        )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OwnershipError(f"--out {out}: exists and is not a folder; choose another --out")
    if out.is_dir():
        foreign = sorted(
            p.name
            for p in out.iterdir()
            if p.is_symlink() or (p.name not in OUTPUTS and not re.fullmatch(r"sample_\d{4}\.png", p.name))
        )  # an output name that is a link would be written through
        if foreign:
            raise OwnershipError(
                f"--out {out}: holds files grounding-analysis did not write ({', '.join(foreign[:3])}); nothing was "
                f"changed; choose a new or empty --out"
            )
    return out


def first_frames(store: str | Path, samples: int) -> tuple[list[int], np.ndarray, list[str]]:
    """(episode indices, first frames (B, H, W, 3) of the first camera, instructions) of `samples` episodes
    spread evenly over the store (its first and last included, so a store written task by task shows every
    task)."""
    from latbot.data.store import EpisodeStore

    with EpisodeStore.open(store) as s:
        picks = np.unique(np.linspace(0, s.num_episodes - 1, min(samples, s.num_episodes)).round()).astype(int).tolist()
        cam = s.cameras[0]
        frames = np.stack([s.read(i, np.array([0]))[f"frames/{cam}"][0] for i in picks])
        texts = [s.records[i].instruction for i in picks]
    return picks, frames, texts


def analyze_checkpoints(
    checkpoints: list[str | Path], frames: np.ndarray, texts: list[str], weighted: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """`analyze_encoder` of each run's VLM (a LAM's encoder, a distilled or finetuned student) on the same
    frames (B, H, W, 3): {"A": …, "B": …, "2": …} in the order given (the same run may be given twice)."""
    import torch

    from latbot.runs import load_vlm

    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)
    return {
        ("AB"[k] if k < 2 else str(k)): analyze_encoder(load_vlm(ckpt), pixels, texts, weighted)
        for k, ckpt in enumerate(checkpoints)
    }


def run(
    checkpoints: list[str | Path],
    store: str | Path,
    out: str | Path,
    samples: int = 8,
    weighted: bool = False,
    image_size: int = 128,
) -> dict[str, Any]:
    """The CLI's analysis: first frames + instructions of `samples` episodes spread evenly over the store (its
    first and last included, so every task of a store ordered by task is seen), every checkpoint's encoder;
    writes heads.csv, summary.json, one PNG per sample (checkpoints side by side) and grounding.rrd."""
    import csv
    import json

    from PIL import Image

    out = _claim_out(Path(out))
    out.mkdir(parents=True, exist_ok=True)
    picks, frames, texts = first_frames(store, samples)
    results = analyze_checkpoints(checkpoints, frames, texts, weighted)
    paths = {label: str(ckpt) for label, ckpt in zip(results, checkpoints, strict=True)}
    with (out / "heads.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "checkpoint", "sample", "layer", "head", "entropy"])
        for label, r in results.items():
            for (i, layer, head), value in np.ndenumerate(r["entropy"]):
                writer.writerow([label, paths[label], picks[i], layer, head, value])
    summary = {
        label: {
            "checkpoint": paths[label],
            "mean_entropy_per_head": np.where(np.isfinite(r["entropy"]), r["entropy"], np.nan).mean(0).tolist(),
            "lowest": [
                {
                    "sample": picks[i],
                    "layer": int(lh[0]),
                    "head": int(lh[1]),
                    "entropy": float(r["entropy"][i, lh[0], lh[1]]),
                }
                for i, lh in enumerate(r["best"])
            ],
        }
        for label, r in results.items()
    }
    if "A" in results and "B" in results:
        summary["comparison"] = compare(results["A"]["entropy"], results["B"]["entropy"])
        summary["comparison_attention"] = compare(
            results["A"]["attention_entropy"], results["B"]["attention_entropy"], ATTENTION
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True))
    big = np.stack([np.asarray(Image.fromarray(f).resize((image_size, image_size))) for f in frames])
    for i, sample in enumerate(picks):
        tiles = []
        for label, r in results.items():
            layer, head = r["best"][i]
            tiles.append(
                overlay(big[i], r["best_map"][i], f"{label}: L{layer} H{head} H={r['entropy'][i, layer, head]:.2f}")
            )
        sheet = Image.new("RGB", (sum(t.width for t in tiles), tiles[0].height), "white")
        x = 0
        for t in tiles:
            sheet.paste(t, (x, 0))
            x += t.width
        sheet.save(out / f"sample_{sample:04d}.png")
    _record(out / "grounding.rrd", big, texts, picks, results)
    return summary


def _record(path: Path, frames: np.ndarray, texts: list[str], picks: list[int], results: dict) -> None:
    import rerun as rr

    rec = rr.RecordingStream("latbot_grounding")
    rec.save(str(path))
    for i, sample in enumerate(picks):
        rec.set_time("sample", sequence=sample)
        rec.log("frame", rr.Image(frames[i]))
        rec.log("instruction", rr.TextDocument(texts[i]))
        for k, (_, r) in enumerate(results.items()):
            rec.log(f"checkpoint_{k}/lowest_entropy_map", rr.Tensor(r["best_map"][i].astype(np.float32)))
            rec.log(f"checkpoint_{k}/entropy", rr.Scalars(float(np.min(r["entropy"][i]))))
    rec.flush()
