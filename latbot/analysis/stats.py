"""Seed-level statistics for studies: the seed, not the episode, is the unit a study replicates.

- `t_interval`: the primary interval of a mean over seeds (of per-seed success rates, or of per-seed paired
  differences): mean ± t(n−1, 0.975) · sd / √n. Exact under normal per-seed values; with 3 seeds t = 4.30.
- `sign_flip_p`: the exact two-sided permutation p-value of a paired difference, over all 2^n sign flips of
  the per-seed differences (the null: each seed's difference is as likely negative as positive). Its
  smallest value is 2 / 2^n: 0.25 with 3 seeds, 0.0625 with 5, 0.031 with 6.
- `t_test_p`: the two-sided p-value of the same t statistic the interval uses (p < 0.05 exactly when the
  95% t-interval excludes 0).
- `holm`: Holm's step-down correction of the secondary comparisons' p-values. A secondary comparison's claim
  is made from its Holm-adjusted t-test p (`claim(..., p_adjusted=...)`), so with several secondary rows an
  interval that excludes 0 on its own can still read "includes 0 after Holm".
- `hierarchical_bootstrap`: the old interval (resample seeds, then episodes within each task), kept as a
  labelled secondary view. With few seeds it is too narrow: `coverage` measures how often each interval
  covers the truth in simulated studies with the study's own design (`latbot study --check-intervals`).
- `MIN_SEEDS`: no claim ("above 0" / "below 0") is printed from fewer seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_SEEDS = 5
LEVEL = 0.95


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of `values` (one per seed); low = high = nan with fewer than 2 values."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if x.size else math.nan
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def t_test_p(values: Sequence[float]) -> float:
    """Two-sided one-sample t-test p-value of mean(values) = 0 (the test behind `t_interval`); nan with fewer
    than 2 values; with no spread, 1 for all-zero values and 0 otherwise."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return math.nan
    if x.std(ddof=1) == 0:  # scipy gives nan here
        return 1.0 if x.mean() == 0 else 0.0
    return float(stats.ttest_1samp(x, 0.0).pvalue)


def sign_flip_p(differences: Sequence[float], max_exact: int = 20, draws: int = 100_000, seed: int = 0) -> float:
    """Two-sided p-value of mean(differences) = 0 by flipping signs: exact over all 2^n flips up to
    `max_exact` seeds, else `draws` random flips. Ties count against the claim (≥ with a tolerance)."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return math.nan
    observed = abs(d.mean())
    if d.size <= max_exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(draws, d.size))
    flipped = np.abs(signs @ d) / d.size
    return float(np.mean(flipped >= observed - 1e-12))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1); nan stays nan."""
    finite = sorted((p, k) for k, p in pvalues.items() if not math.isnan(p))
    m, running, out = len(finite), 0.0, {k: math.nan for k in pvalues}
    for i, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def claim(low: float, high: float, seeds: int, p_adjusted: float | None = None) -> str:
    """What a report may say of an interval: "above 0", "below 0", "includes 0", or why it says nothing.
    `p_adjusted` (a secondary comparison's Holm-adjusted t-test p): an interval that excludes 0 makes a claim
    only if the adjusted p is below 1 − LEVEL too; otherwise "includes 0 after Holm"."""
    if seeds < MIN_SEEDS:
        return f"no claim: {seeds} seeds (< {MIN_SEEDS})"
    if math.isnan(low):
        return "no interval"
    if low <= 0 <= high:
        return "includes 0"
    if p_adjusted is not None and not p_adjusted < 1 - LEVEL:
        return "includes 0 after Holm"
    return "above 0" if low > 0 else "below 0"


def hierarchical_bootstrap(
    successes: np.ndarray, episodes: int, rng: np.random.Generator, draws: int = 2000, other: np.ndarray | None = None
) -> np.ndarray:
    """Draws of the seed-mean task-averaged success (or, with `other`, of the paired difference), resampling
    seeds with replacement and then each seed's episodes within each task. `successes`: (seeds, tasks)
    counts out of `episodes` (vectorised: resampling a task's episodes is Binomial(episodes, rate))."""
    n = successes.shape[0]
    idx = rng.integers(0, n, size=(draws, n))

    def arm(counts: np.ndarray) -> np.ndarray:
        rates = counts[idx] / episodes  # (draws, n, tasks)
        return (rng.binomial(episodes, rates) / episodes).mean(axis=2)

    values = arm(successes) - (arm(other) if other is not None else 0.0)
    return values.mean(axis=1)


@dataclass(frozen=True)
class Design:
    """A simulated study: per-task success rates of the two arms, the spread of a seed's effect on an arm's
    rate (sd, on the logit scale), tasks, episodes per task per cell, and seeds."""

    base_rates: tuple[float, ...]
    delta_logit: float
    seed_sd: float
    episodes: int
    seeds: int


def _draw(design: Design, rng: np.random.Generator, reps: int) -> tuple[np.ndarray, np.ndarray]:
    """(ours, base): (reps, seeds, tasks) success counts."""
    logit = np.log(np.asarray(design.base_rates) / (1 - np.asarray(design.base_rates)))
    shape = (reps, design.seeds, len(design.base_rates))

    def arm(shift: float) -> np.ndarray:
        u = rng.normal(0, design.seed_sd, size=(*shape[:2], 1))  # a seed moves all of an arm's tasks together
        p = 1 / (1 + np.exp(-(logit + shift + u)))
        return rng.binomial(design.episodes, p)

    return arm(design.delta_logit), arm(0.0)


def true_difference(design: Design, rng: np.random.Generator, n: int = 400_000) -> float:
    """The expected paired difference (over seeds and episodes), by Monte Carlo over seed effects."""
    logit = np.log(np.asarray(design.base_rates) / (1 - np.asarray(design.base_rates)))
    u, v = rng.normal(0, design.seed_sd, size=(2, n, 1))
    ours = 1 / (1 + np.exp(-(logit + design.delta_logit + u)))
    base = 1 / (1 + np.exp(-(logit + v)))
    return float((ours - base).mean())


def coverage(design: Design, reps: int = 2000, boot_draws: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """How often each interval of the paired difference covers the truth, and how often it says "above 0",
    over `reps` simulated studies of `design` → {method: {"coverage", "above_zero", "mean_width"}}."""
    rng = np.random.default_rng(seed)
    truth = true_difference(design, rng)
    ours, base = _draw(design, rng, reps)
    diffs = ours.mean(axis=2) / design.episodes - base.mean(axis=2) / design.episodes  # (reps, seeds)
    rows: dict[str, list[tuple[float, float]]] = {"t_interval": [], "hierarchical_bootstrap": []}
    for r in range(reps):
        _, lo, hi = t_interval(diffs[r])
        rows["t_interval"].append((lo, hi))
        draws = hierarchical_bootstrap(ours[r], design.episodes, rng, boot_draws, other=base[r])
        rows["hierarchical_bootstrap"].append((float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))))
    p = np.array([sign_flip_p(diffs[r]) for r in range(reps)])
    out = {}
    for method, intervals in rows.items():
        lo, hi = np.array(intervals).T
        out[method] = {
            "coverage": float(np.mean((lo <= truth) & (truth <= hi))),
            "above_zero": float(np.mean(lo > 0)),
            "mean_width": float(np.mean(hi - lo)),
        }
    out["sign_flip_p<0.05"] = {"rejects": float(np.mean(p < 0.05)), "smallest_p": 2 / 2**design.seeds}
    out["truth"] = {"difference": truth}
    return out
