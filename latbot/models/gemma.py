"""pi0.5's Gemma pieces (openpi `gemma.py` / `gemma_pytorch.py`; reference §5b–6), written once for the
pi0.5 student's VLM and the pi0.5 action expert: one decoder layer class with two norm variants, RoPE,
and the big_vision prefix-LM block mask.

Parameter names follow transformers' Gemma (`self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`,
`input_layernorm`, `post_attention_layernorm`) so that a pi0.5 checkpoint maps onto them by renaming
prefixes only (latbot/models/pi05/keys.py).

Shared attention (the "mixture of transformers"): in pi0.5 every layer runs both parameter sets — the
VLM's on the prefix tokens, the expert's on the action tokens — and concatenates their Q, K, V along the
sequence for one softmax under the block mask. Because the prefix never attends to the action tokens, the
prefix rows of that softmax read prefix keys only: the VLM's layers can run first over the prefix alone,
keeping each layer's K and V (`GemmaLayer.forward` returns them), and the expert's layer l then attends
over [prefix K, V of layer l ; its own K, V]. That is the same computation (tests/test_pi05.py compares
it with a literal one-pass implementation and with LeRobot's), and it is the prefix KV cache of inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

MASKED = -2.3819763e38  # openpi's additive mask value (finite: a fully masked padding row stays finite)


@dataclass
class PrefixCache:
    """Each layer's keys and values of the prefix (B, kv_heads, M, hd), post-RoPE, and which of the M
    positions are real tokens (B, M) bool: what the pi0.5 expert's shared attention reads."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor


class GemmaRMSNorm(nn.Module):
    """Gemma's RMSNorm, x̂ · (1 + w), computed in float32; returns (y, None) like the adaptive variant."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        xf = x.float()
        y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight.float())
        return y.type_as(x), None


class AdaptiveRMSNorm(nn.Module):
    """pi0.5's adaRMS: x̂ · (1 + scale) + shift with (scale, shift, gate) = dense(cond); the gate scales the
    residual branch. `dense` is zero-initialised (weight), so a fresh expert starts as a plain RMSNorm."""

    def __init__(self, width: int, cond: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond, 3 * width)
        nn.init.zeros_(self.dense.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps)
        scale, shift, gate = self.dense(cond)[:, None].chunk(3, dim=-1)  # (B, 1, D) each
        return (normed * (1 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


class GemmaMLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaAttention(nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int, head_dim: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(width, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, width, bias=False)

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x (B, N, D) → q (B, heads, N, hd), k and v (B, kv_heads, N, hd), RoPE applied to q and k."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        return rope(q, cos, sin), rope(k, cos, sin), v


class GemmaLayer(nn.Module):
    """One Gemma decoder layer. `cond_width` set: adaRMS norms and gated residuals (pi0.5's expert)."""

    def __init__(self, width: int, mlp: int, heads: int, kv_heads: int, head_dim: int, cond_width: int | None = None):
        super().__init__()
        self.self_attn = GemmaAttention(width, heads, kv_heads, head_dim)
        self.mlp = GemmaMLP(width, mlp)
        norm = (lambda: AdaptiveRMSNorm(width, cond_width)) if cond_width else (lambda: GemmaRMSNorm(width))
        self.input_layernorm, self.post_attention_layernorm = norm(), norm()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cond: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, N, D); mask (B, 1, N, M + N) additive over [past keys ; own keys]; cos/sin (B, N, hd) of
        the tokens' positions; past: another parameter set's (k, v) (B, kv_heads, M, hd) that these tokens
        also attend to (the shared attention) → (x, k, v) with this layer's own k, v for later readers."""
        h, gate = self.input_layernorm(x, cond)
        q, k, v = self.self_attn.qkv(h, cos, sin)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        y = attend(q, keys, values, mask)  # (B, N, heads·hd)
        x = residual(x, self.self_attn.o_proj(y), gate)
        h, gate = self.post_attention_layernorm(x, cond)
        return residual(x, self.mlp(h), gate), k, v


def residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return x + y if gate is None else x + y * gate


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention, grouped-query heads, scale hd^-0.5 → (B, N, heads·hd)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), scale=q.shape[-1] ** -0.5)
    return y.transpose(1, 2).flatten(2)


# -- positions -----------------------------------------------------------------------------------------
def rope_tables(positions: torch.Tensor, head_dim: int, theta: float = 10000.0, dtype=torch.float32):
    """positions (B, N) → cos, sin (B, N, hd) (transformers' default RoPE: halves rotated)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim))
    freqs = positions[..., None].float() * inv  # (B, N, hd/2)
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, None] + torch.cat([-x2, x1], -1) * sin[:, None]


# -- the block mask (big_vision / openpi make_attn_mask) ------------------------------------------------
def block_mask(valid: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
    """valid (B, N) bool, ar (B, N) int: token i attends to j iff cumsum(ar)[j] <= cumsum(ar)[i] and both
    are valid → (B, N, N) bool. ar = 0 joins the previous block, 1 starts a block the earlier ones cannot
    see: [0 0 0 | 1 0 0] is a prefix-LM, all ones is causal."""
    c = ar.long().cumsum(1)
    return (c[:, None, :] <= c[:, :, None]) & valid[:, None, :] & valid[:, :, None]


def additive(mask: torch.Tensor) -> torch.Tensor:
    """(B, N, M) bool → (B, 1, N, M) float, 0 where allowed and MASKED elsewhere."""
    return torch.where(mask[:, None], 0.0, MASKED)


def sincos(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """pi0.5's time embedding (openpi create_sinusoidal_pos_embedding, float64 as there): t (B,) → (B, dim)."""
    frac = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** frac
    x = (1.0 / period * 2 * math.pi)[None, :] * t[:, None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=1)
