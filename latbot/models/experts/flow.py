"""`flow`: a pi0-style action expert (paper §3.3, end; openpi pi0.5, reference §6).

Tokens: one state token (the normalised unified state, invalid dimensions zeroed) then H noisy action
tokens x_t. Every block: adaptive RMSNorm conditioned on the flow time t (scale, shift and a zero-init
gate, as pi0.5's adaRMS) → self-attention over the expert's tokens (bidirectional within the chunk) →
cross-attention to the VLM's hidden states → MLP. Block i reads the VLM layer at the same relative depth
(layer ⌈(i + 1)·L / depth⌉), so a deep expert follows the VLM layer by layer as pi0's shared attention
does; the VLM runs once per prediction and the 10 denoising steps reuse its states. At inference
`context()` computes, once per prediction, every block's normalised cross-attention keys and values over
the VLM's hidden states (a `gemma.PrefixCache`, the container the pi0.5 expert's prefix cache uses) and
the time conditioning of every Euler step (the adaRMS scale, shift and gate of each norm, for all steps
in one batched projection); each step then runs only the expert's own tokens.

Outputs: the flow velocity v(x_t, t) for every unified action dimension, and gripper logits (left,
right) per step. Training (pi0.5 convention, t = 1 noise, t = 0 data): t ~ Beta(1.5, 1)·0.999 + 0.001,
x_t = t·ε + (1 − t)·a, target u = ε − a; L_ee = MSE(v, u) on the valid end-effector translation and
rotation dimensions, L_gripper = BCE(logits, closed) on the valid gripper dimensions. Inference: 10
Euler steps from noise; the gripper comes from the logits of the last step. The flow matching itself
(time sampling, x_t, the Euler loop) is `latbot.models.flow`, shared with the unified decoders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from latbot.config import PluginConfig
from latbot.data.spaces import ACTION_DIM, ACTION_POS, ACTION_ROT, ARMS, GRIPPER_DIMS, STATE_DIM
from latbot.models import flow, gemma


def ee_dims() -> torch.Tensor:
    """(44,) bool: end-effector translation and rotation dimensions of both arms (L_ee's support)."""
    mask = torch.zeros(ACTION_DIM, dtype=torch.bool)
    for arm in ARMS:
        mask[ACTION_POS[arm]] = True
        mask[ACTION_ROT[arm]] = True
    return mask


@dataclass
class FlowContext(gemma.PrefixCache):
    """What the denoising steps of one prediction share (`FlowActionExpert.context`): per block the
    cross-attention keys and values over its VLM layer (B, heads, M, hd) and the context mask (B, M), as
    pi0.5's prefix cache holds them; `mods[norm][step]`: an adaRMS norm's (scale, shift, gate) at an Euler
    step (norms: 3 per block, then the final one)."""

    mods: list | None = None


def sincos(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """pi0's sine-cosine embedding of the flow time t (B,) → (B, dim)."""
    frac = torch.linspace(0.0, 1.0, dim // 2, device=t.device)
    period = min_period * (max_period / min_period) ** frac
    x = t[:, None].float() * (2 * math.pi / period)[None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


class AdaRMSNorm(nn.Module):
    """RMSNorm whose scale and shift come from the condition; also returns the residual gate (zero at init)."""

    def __init__(self, width: int, cond: int):
        super().__init__()
        self.norm = nn.RMSNorm(width, elementwise_affine=False, eps=1e-6)
        self.mod = nn.Linear(cond, 3 * width)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """`cond` (B, C), or its precomputed modulation `(scale, shift, gate)` from `modulation`."""
        scale, shift, gate = self.modulation(cond) if isinstance(cond, torch.Tensor) else cond
        return self.norm(x) * (1 + scale) + shift, gate

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """cond (..., B, C) → scale, shift, gate (..., B, 1, width)."""
        return self.mod(cond).unsqueeze(-2).chunk(3, dim=-1)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, kv_width: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(kv_width or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor | None, key_mask: torch.Tensor | None = None, kv=None
    ) -> torch.Tensor:
        """`kv`: keys and values (B, heads, M, hd) already projected from `ctx` (`keys_values`)."""
        b, n, w = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = kv if kv is not None else self.keys_values(ctx)
        mask = None if key_mask is None else key_mask[:, None, None, :].bool()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, w))

    def keys_values(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ctx (B, M, D) → keys, values (B, heads, M, hd)."""
        k, v = self.kv(ctx).view(ctx.shape[0], ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return k, v


class ExpertBlock(nn.Module):
    def __init__(self, width: int, heads: int, vlm_width: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (AdaRMSNorm(width, width) for _ in range(3))
        self.self_attn = Attention(width, heads)
        self.ctx_norm = nn.RMSNorm(vlm_width, eps=1e-6)
        self.cross_attn = Attention(width, heads, kv_width=vlm_width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x, cond, ctx, ctx_mask, kv=None, mods=None):
        """`kv`: this block's cross-attention keys and values (`context_kv`); `mods`: the three norms'
        precomputed modulations (`AdaRMSNorm.modulation`); either replaces recomputing from ctx / cond."""
        mods = mods or (cond, cond, cond)
        h, gate = self.norm1(x, mods[0])
        x = x + gate * self.self_attn(h, h)
        h, gate = self.norm2(x, mods[1])
        x = x + gate * self.cross_attn(h, None if kv is not None else self.ctx_norm(ctx), ctx_mask, kv)
        h, gate = self.norm3(x, mods[2])
        return x + gate * self.mlp(h)

    def context_kv(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention's keys and values over the normalised VLM states (the same at every step)."""
        return self.cross_attn.keys_values(self.ctx_norm(ctx))


MERGED_BYTES_KEPT = 64 * 1024**2  # `sample` keeps merged q, k, v weights between calls up to this size


def _projection(linear: nn.Linear, *more: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(bias, weightᵀ) of one linear layer, or of several stacked along their outputs (one matrix product)."""
    if not more:
        return linear.bias, linear.weight.t()
    return torch.cat([linear.bias, *(m.bias for m in more)]), torch.cat([linear.weight, *(m.weight for m in more)]).t()


class FlowActionExpert(nn.Module):
    class Config(PluginConfig):
        type: Literal["flow"] = "flow"
        width: int = Field(1024, ge=8, description="Expert width (pi0.5: gemma_300m, 1024).")
        depth: int = Field(18, ge=1, description="Blocks (pi0.5: 18).")
        heads: int = Field(8, ge=1)
        mlp_ratio: float = Field(4.0, gt=0, description="MLP width / width (gemma_300m: 4096 / 1024).")
        num_steps: int = Field(10, ge=1, description="Euler integration steps at inference (paper: 10).")
        time_alpha: float = Field(1.5, gt=0, description="Beta(α, β) of the training flow time (pi0.5: 1.5).")
        time_beta: float = Field(1.0, gt=0, description="Beta(α, β) of the training flow time (pi0.5: 1.0).")
        gripper_weight: float = Field(1.0, ge=0, description="Weight of L_gripper against L_ee.")

    def __init__(self, config: Config, *, vlm_width: int, vlm_layers: int, horizon: int):
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"action_expert.width ({config.width}) must be a multiple of heads ({config.heads})")
        self.config, self.horizon, self.vlm_layers = config, horizon, vlm_layers
        w = config.width
        self.action_in = nn.Linear(ACTION_DIM, w)
        self.state_in = nn.Linear(STATE_DIM, w)
        self.pos = nn.Parameter(torch.randn(horizon + 1, w) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU())
        self.blocks = nn.ModuleList(
            ExpertBlock(w, config.heads, vlm_width, config.mlp_ratio) for _ in range(config.depth)
        )
        self.final_norm = AdaRMSNorm(w, w)
        self.velocity = nn.Linear(w, ACTION_DIM)
        self.gripper = nn.Linear(w, len(GRIPPER_DIMS))
        self.register_buffer("ee_mask", ee_dims(), persistent=False)

    @classmethod
    def tiny_config(cls):
        return cls.Config(width=32, depth=2, heads=2)

    def repeated_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

    def layer_for_block(self, i: int) -> int:
        """Index into the VLM's hidden-state tuple (0 = embeddings, L = last layer) read by block i."""
        return math.ceil((i + 1) * self.vlm_layers / len(self.blocks))

    def forward(self, x_t, t, state, layers, ctx_mask, action_mask=None, cache=None, step=None):
        """x_t (B, H, 44), t (B,), state (B, 46), layers: the VLM's L + 1 hidden states (B, N, D),
        ctx_mask (B, N), action_mask (B, 44): dimensions the embodiment does not have are zeroed in the
        input → velocity (B, H, 44), gripper logits (B, H, 2). `cache` (`context`): the blocks' keys and
        values over `layers`, which are then not read; with `step`, also that Euler step's conditioning."""
        if action_mask is not None:
            x_t = x_t * action_mask[:, None, :].to(x_t.dtype)
        n = len(self.blocks)
        if cache is not None and step is not None:
            mods = [m[step] for m in cache.mods]  # per norm: (scale, shift, gate) of this step
            cond = None
        else:
            cond = self.time_mlp(sincos(t, self.config.width).to(x_t.dtype))
            mods = [None] * (3 * n) + [cond]
        tokens = torch.cat([self.state_in(state)[:, None], self.action_in(x_t)], dim=1) + self.pos
        for i, block in enumerate(self.blocks):
            kv = (cache.keys[i], cache.values[i]) if cache is not None else None
            norms = tuple(mods[3 * i : 3 * i + 3]) if mods[3 * i] is not None else None
            ctx = layers[self.layer_for_block(i)] if cache is None else None
            tokens = block(tokens, cond, ctx, ctx_mask, kv, norms)
        h, _ = self.final_norm(tokens, mods[-1])
        h = h[:, 1:]
        return self.velocity(h), self.gripper(h)

    def context(self, layers, ctx_mask, times: torch.Tensor | None = None) -> FlowContext:
        """What every denoising step shares, computed once: each block's cross-attention keys and values
        over its (normalised) VLM layer; with `times` (S,) — the Euler steps' flow
        times — also `mods`: per adaRMS norm (3 per block, then the final one), its (scale, shift, gate)
        at every step, (S, B, 1, width) each, from one batched projection."""
        keys, values = zip(
            *(blk.context_kv(layers[self.layer_for_block(i)]) for i, blk in enumerate(self.blocks)), strict=True
        )
        cache = FlowContext(list(keys), list(values), ctx_mask.bool())
        if times is not None:
            b = ctx_mask.shape[0]
            dtype = keys[0].dtype
            cond = self.time_mlp(sincos(times.to(keys[0].device), self.config.width).to(dtype))  # (S, W)
            cond = cond[:, None].expand(-1, b, -1)  # (S, B, W): every sample of the batch shares t
            norms = [n for blk in self.blocks for n in (blk.norm1, blk.norm2, blk.norm3)] + [self.final_norm]
            cache.mods = [list(zip(*norm.modulation(cond), strict=True)) for norm in norms]
        return cache

    def loss(self, actions, gripper, action_mask, pad, state, layers, ctx_mask) -> dict[str, torch.Tensor]:
        """actions (B, H, 44) normalised; gripper (B, H, 2) unnormalised in [0, 1]; action_mask (B, 44);
        pad (B, H) True past the episode's end; state (B, 46) normalised and masked."""
        c = self.config
        t = flow.sample_time_beta(actions.shape[0], c.time_alpha, c.time_beta, actions.device)
        x_t, u = flow.noisy(actions, torch.randn_like(actions), t)
        v, logits = self(x_t, t, state, layers, ctx_mask, action_mask)
        steps = (~pad).float()[:, :, None]  # (B, H, 1)
        ee = (action_mask & self.ee_mask).float()[:, None, :] * steps  # (B, H, 44)
        l_ee = (((v.float() - u.float()) ** 2) * ee).sum() / ee.sum().clamp(min=1)
        gmask = action_mask[:, GRIPPER_DIMS].float()[:, None, :] * steps  # (B, H, 2)
        bce = F.binary_cross_entropy_with_logits(logits.float(), (gripper > 0.5).float(), reduction="none")
        l_grip = (bce * gmask).sum() / gmask.sum().clamp(min=1)
        return {"loss": l_ee + self.config.gripper_weight * l_grip, "ee": l_ee, "gripper": l_grip}

    @torch.no_grad()
    def sample(self, state, layers, ctx_mask, action_mask=None, generator: torch.Generator | None = None):
        """Euler integration from noise (t = 1) to data (t = 0) → actions (B, H, 44) normalised,
        gripper probabilities (B, H, 2) from the last step. What the steps share is computed once
        (`context`: cross-attention keys and values; `_projections`: every norm's modulation at every step in
        one projection, merged weights); each step then runs `_step`, `forward`'s network over the expert's
        own tokens in functional ops on (B·N, W) rows (tests/test_fastread.py checks it against `forward`'s
        loop)."""
        b = state.shape[0]
        x = torch.randn((b, self.horizon, ACTION_DIM), generator=generator, device="cpu").to(state.device, state.dtype)
        steps = self.config.num_steps
        dt = 1.0 / steps
        times = torch.tensor([1.0 - k * dt for k in range(steps)], dtype=torch.float32)  # as flow.integrate
        cache = self.context(layers, ctx_mask)
        if bool(cache.valid.all()):  # no padding in the context (one sample): attention needs no mask
            cache.valid = None
        pre = self._projections(times.to(x.device, x.dtype), b)
        mask = None if action_mask is None else action_mask[:, None, :].to(x.dtype)
        state_token = self.state_in(state)[:, None] + self.pos[:1]  # (B, 1, W): the same at every step
        eps = x.new_full((1, 1), 1e-6)  # the adaRMS norms' ε
        out = None
        for k in range(steps):  # flow.integrate's Euler loop
            out = self._step(x if mask is None else x * mask, state_token, cache, pre, k, eps)  # (B·H, 46)
            x = x.add(out[:, :ACTION_DIM].view(b, self.horizon, ACTION_DIM), alpha=-dt)
        return x, torch.sigmoid(out[:, ACTION_DIM:].view(b, self.horizon, -1).float())

    def _modulations(self, times: torch.Tensor) -> torch.Tensor:
        """Every adaRMS norm's (1 + scale, shift, gate) at every Euler step, (S, norms, 3, W) (norms: 3 per
        block, then the final one; the flow time is the same for the whole batch), from one projection."""
        cond = self.time_mlp(sincos(times, self.config.width).to(times.dtype))  # (S, W)
        norms = [n for blk in self.blocks for n in (blk.norm1, blk.norm2, blk.norm3)] + [self.final_norm]
        weight = torch.cat([n.mod.weight for n in norms])
        bias = torch.cat([n.mod.bias for n in norms])
        m = F.linear(cond, weight, bias).view(len(times), len(norms), 3, self.config.width)
        return torch.cat([m[:, :, :1] + 1, m[:, :, 1:]], 2)

    def _projections(self, times: torch.Tensor, batch: int) -> dict:
        """What every Euler step reads besides the tokens, gathered once so that the steps look nothing up:
        per step the (1 + scale, shift, gate) of every adaRMS norm (3 per block, then the final one), (W,)
        each; per block its projections as (bias, weightᵀ), the self-attention's q, k, v as one; the velocity
        and gripper heads as one; the action embedding's bias plus the action tokens' positions, (B·H, W).
        They depend on the weights and the flow times only: kept from one prediction to the next until a
        parameter they come from changes (another tensor, or an in-place update: its version counter)."""
        sources = self._projection_sources()
        try:
            key = (times.tolist(), times.dtype, times.device, [(id(t), t.data_ptr(), t._version) for t in sources])
        except (RuntimeError, NotImplementedError):  # a tensor without storage (meta, sharded): no reuse
            key = None
        memo = self.__dict__.get("_projection_memo")  # a plain attribute, not module state
        if key is None or memo is None or memo[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # kept: normal tensors, whatever the caller's mode
                memo = (key, self._compute_projections(times))
            self.__dict__["_projection_memo"] = memo
        pre = dict(memo[1])
        if pre["blocks"] is None:  # a large expert: its merged q, k, v weights are not kept between calls
            pre["blocks"] = self._block_projections()
        embed_bias, embed_weight = pre["embed"]
        pre["embed"] = (embed_bias.repeat(batch, 1), embed_weight)
        return pre

    def _projection_sources(self) -> list[torch.Tensor]:
        """The parameters `_compute_projections` copies from (the others it only views)."""
        out = [p for layer in (self.time_mlp[0], self.time_mlp[2]) for p in (layer.weight, layer.bias)]
        for blk in self.blocks:
            sa = blk.self_attn
            for norm in (blk.norm1, blk.norm2, blk.norm3):
                out += [norm.mod.weight, norm.mod.bias]
            out += [sa.q.weight, sa.q.bias, sa.kv.weight, sa.kv.bias]
        out += [self.final_norm.mod.weight, self.final_norm.mod.bias, self.action_in.bias, self.pos]
        return [*out, self.velocity.weight, self.velocity.bias, self.gripper.weight, self.gripper.bias]

    def _compute_projections(self, times: torch.Tensor) -> dict:
        mods = self._modulations(times)  # (S, norms, 3, W)
        steps = [list(m.unbind(0)) for m in mods.flatten(1, 2).unbind(0)]  # per step: 3 × norms tensors (W,)
        qkv_bytes = sum(3 * b.self_attn.q.weight.numel() * b.self_attn.q.weight.element_size() for b in self.blocks)
        return {
            "mods": steps,
            "blocks": self._block_projections() if qkv_bytes <= MERGED_BYTES_KEPT else None,
            "heads": _projection(self.velocity, self.gripper),
            "embed": (self.action_in.bias + self.pos[1:], self.action_in.weight.t()),
        }

    def _block_projections(self) -> list[tuple]:
        """Per block: self-attention q, k, v (merged), out; cross-attention q, out; MLP up, down."""
        blocks = []
        for blk in self.blocks:
            sa, ca = blk.self_attn, blk.cross_attn
            blocks.append((
                _projection(sa.q, sa.kv), _projection(sa.out), _projection(ca.q), _projection(ca.out),
                _projection(blk.mlp[0]), _projection(blk.mlp[2]),
            ))  # fmt: skip
        return blocks

    def _step(self, x_t, state_token, cache: FlowContext, pre: dict, k: int, eps: torch.Tensor) -> torch.Tensor:
        """One Euler step k of `forward` with the cached keys/values and the step's modulations
        (`_projections`), on (B·N, W) token rows → the velocity and gripper logits of the action tokens,
        (B·H, 44 + 2). adaRMS: x · rsqrt(‖x‖²/W + ε) · (1 + scale) + shift."""
        w, heads = self.config.width, self.config.heads
        b, h = x_t.shape[:2]
        n, inv_w = h + 1, 1.0 / w
        mods = pre["mods"][k]  # norm j: mods[3j] = 1 + scale, mods[3j + 1] = shift, mods[3j + 2] = gate
        addmm, addcmul, norm2, sdpa = (
            torch.addmm,
            torch.addcmul,
            torch.linalg.vector_norm,
            F.scaled_dot_product_attention,
        )
        tokens = torch.cat(
            [state_token, addmm(pre["embed"][0], x_t.reshape(b * h, -1), pre["embed"][1]).view(b, h, w)], 1
        )
        tokens = tokens.view(b * n, w)
        key_mask = None if cache.valid is None else cache.valid[:, None, None, :]
        for i, (qkv, out, cq, cout, up, down) in enumerate(pre["blocks"]):
            j = 9 * i
            r = norm2(tokens, dim=-1, keepdim=True)
            x = addcmul(mods[j + 1], tokens * addcmul(eps, r, r, value=inv_w).rsqrt_(), mods[j])
            q, kk, v = addmm(qkv[0], x, qkv[1]).view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            y = sdpa(q, kk, v).transpose(1, 2).reshape(b * n, w)
            tokens = addcmul(tokens, mods[j + 2], addmm(out[0], y, out[1]))
            r = norm2(tokens, dim=-1, keepdim=True)
            x = addcmul(mods[j + 4], tokens * addcmul(eps, r, r, value=inv_w).rsqrt_(), mods[j + 3])
            q = addmm(cq[0], x, cq[1]).view(b, n, heads, -1).transpose(1, 2)
            y = sdpa(q, cache.keys[i], cache.values[i], attn_mask=key_mask).transpose(1, 2).reshape(b * n, w)
            tokens = addcmul(tokens, mods[j + 5], addmm(cout[0], y, cout[1]))
            r = norm2(tokens, dim=-1, keepdim=True)
            x = addcmul(mods[j + 7], tokens * addcmul(eps, r, r, value=inv_w).rsqrt_(), mods[j + 6])
            y = F.gelu(addmm(up[0], x, up[1]), approximate="tanh")
            tokens = addcmul(tokens, mods[j + 8], addmm(down[0], y, down[1]))
        last = tokens.view(b, n, w)[:, 1:].reshape(b * h, w)
        r = norm2(last, dim=-1, keepdim=True)
        j = 9 * len(pre["blocks"])
        x = addcmul(mods[j + 1], last * addcmul(eps, r, r, value=inv_w).rsqrt_(), mods[j])
        return addmm(pre["heads"][0], x, pre["heads"][1])
