"""The grounding A/B statistic: the mean entropy of each sample's 10% lowest-entropy heads, with intervals over
samples. On coarse token grids the single lowest head is a one-blob map at 0 nats for any model, so the
old statistic could not differ between two policies; this one does when their attention differs."""

from __future__ import annotations

import numpy as np
import pytest

from latbot.analysis.grounding import compare, k_lowest


def test_k_lowest_averages_the_most_concentrated_heads_and_skips_empty_maps():
    entropy = np.array([[[0.0, 0.5, np.inf, 1.0], [0.2, 0.7, 0.9, 1.1]]] * 2)  # (2 samples, 2 layers, 4 heads)
    got = k_lowest(entropy, fraction=0.1, minimum=4)  # 7 finite heads: the 4 lowest
    assert got == pytest.approx([np.mean([0.0, 0.2, 0.5, 0.7])] * 2)
    assert np.isnan(k_lowest(np.full((1, 2, 2), np.inf)))[0]  # nothing above the mean anywhere


def test_compare_tells_two_models_apart_where_the_lowest_head_cannot():
    rng = np.random.default_rng(0)
    heads = (12, 2, 4)  # 12 samples, 2 layers × 4 heads
    a = rng.uniform(0.6, 1.2, heads)
    b = a - 0.3  # B's heads are more concentrated ...
    a[:, 0, 0] = b[:, 0, 0] = 0.0  # ... though each model has one single-blob head: the lowest head is 0 for both
    assert (a.reshape(12, -1).min(1) == 0).all() and (b.reshape(12, -1).min(1) == 0).all()
    c = compare(a, b)
    assert c["samples"] == 12 and c["B"]["mean"] < c["A"]["mean"]
    _, hi = c["B_minus_A"]["ci95"]
    assert hi < 0 and c["B_minus_A"]["p_sign_flip"] < 0.01
    same = compare(a, a.copy())
    assert same["B_minus_A"]["mean"] == 0 and same["B_minus_A"]["p_sign_flip"] == 1.0


def test_attention_entropy_is_continuous_where_spatial_entropy_is_zero():
    """On a 4 × 4 grid one blob above the mean is 0 nats of spatial entropy however spread the attention is;
    the attention entropy still orders a sharp head below a diffuse one, and a uniform map is log 16."""
    from latbot.analysis.grounding import attention_entropy, spatial_entropy

    sharp = np.full((4, 4), 0.01)
    sharp[1, 1] = 1.0
    diffuse = np.full((4, 4), 0.2)
    diffuse[1:3, 1:3] = 0.6
    maps = np.stack([sharp, diffuse, np.ones((4, 4)), np.zeros((4, 4))])
    assert spatial_entropy(maps[:2]).tolist() == [0.0, 0.0]
    got = attention_entropy(maps)
    assert 0 < got[0] < got[1] < got[2] == pytest.approx(np.log(16)) and got[3] == np.inf
    c = compare(np.zeros((3, 1, 4)), np.zeros((3, 1, 4)))
    assert c["degenerate"] and not compare(np.zeros((3, 1, 4)), np.ones((3, 1, 4)))["degenerate"]
