"""Learning-rate schedule of the paper (supp. 6.3): linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math


def lr_at(step: int, peak: float, floor: float, warmup: int, total: int) -> float:
    """lr for optimizer step `step` (0-based): (step+1)/warmup · peak during warmup, then
    floor + (peak − floor) · ½(1 + cos(π · progress)), reaching `floor` at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
