"""Normalisation statistics of a store and quantile normalisation (q01/q99 → [−1, 1]).

Statistics are per store (one dataset) and per dimension, over the steps of the episodes whose
validity mask marks the dimension as filled; a dimension no episode fills has no statistics (null).
Quantiles come from all rows, or from a deterministic random subsample of `STAT_SAMPLE_ROWS` rows for
larger stores; mean/std/min/max always from all rows.

    x' = 2 · (x − q01) / (q99 − q01) − 1          x = (x' + 1) / 2 · (q99 − q01) + q01

A dimension with q99 − q01 < `DEGENERATE_RANGE` (constant, e.g. an unused gripper) would explode; it is
passed through unchanged in both directions and reported once with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

DEGENERATE_RANGE = 1e-6
STAT_SAMPLE_ROWS = 2_000_000
STAT_KEYS = ("mean", "std", "min", "max", "q01", "q99")


def compute_stats(store: Any, seed: int = 0) -> dict[str, Any]:
    """{"actions": {stat: [44 values or None]}, "states": {...}, "num_frames": N} for an EpisodeStore."""
    out: dict[str, Any] = {"num_frames": store.num_frames}
    rng = np.random.default_rng(seed)
    for name, mask_index in (("actions", 0), ("states", 1)):
        arr = store.array(name)
        dim = arr.shape[1]
        valid = np.zeros((store.num_frames, dim), bool)
        for rec in store.records:
            valid[rec.offset : rec.stop] = rec.masks()[mask_index]
        values = arr[: store.num_frames] if store.num_frames else np.zeros((0, dim), np.float32)
        rows = np.arange(store.num_frames)
        if len(rows) > STAT_SAMPLE_ROWS:
            rows = np.sort(rng.choice(rows, STAT_SAMPLE_ROWS, replace=False))
        stats: dict[str, list] = {k: [] for k in STAT_KEYS}
        for d in range(dim):
            column = values[valid[:, d], d].astype(np.float64)
            if column.size == 0:
                for k in STAT_KEYS:
                    stats[k].append(None)
                continue
            sample = values[rows[valid[rows, d]], d].astype(np.float64)
            q01, q99 = np.quantile(sample, [0.01, 0.99])
            for k, v in zip(
                STAT_KEYS, (column.mean(), column.std(), column.min(), column.max(), q01, q99), strict=True
            ):
                stats[k].append(float(v))
        out[name] = stats
    return out


class QuantileNormalizer:
    """Maps values with per-dimension q01/q99 to [−1, 1] and back; symmetric and exact (float64 inside).

    Dimensions without statistics (None) or with a degenerate range pass through unchanged."""

    def __init__(self, q01: list[float | None], q99: list[float | None], name: str = "values"):
        lo = np.array([np.nan if v is None else v for v in q01], np.float64)
        hi = np.array([np.nan if v is None else v for v in q99], np.float64)
        span = hi - lo
        self.passthrough = ~np.isfinite(span) | (span < DEGENERATE_RANGE)
        degenerate = np.flatnonzero(np.isfinite(span) & (span < DEGENERATE_RANGE))
        if degenerate.size:
            warnings.warn(
                f"{name}: dimension(s) {degenerate.tolist()} have q99 − q01 < {DEGENERATE_RANGE} (constant); "
                "they are passed through unnormalised",
                stacklevel=2,
            )
        self.lo = np.where(self.passthrough, 0.0, lo)
        self.span = np.where(self.passthrough, 1.0, span)

    @classmethod
    def from_stats(cls, stats: dict[str, Any], key: str) -> QuantileNormalizer:
        return cls(stats[key]["q01"], stats[key]["q99"], name=key)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        y = 2.0 * (np.asarray(x, np.float64) - self.lo) / self.span - 1.0
        return np.where(self.passthrough, x, y).astype(np.asarray(x).dtype)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        x = (np.asarray(y, np.float64) + 1.0) / 2.0 * self.span + self.lo
        return np.where(self.passthrough, y, x).astype(np.asarray(y).dtype)
