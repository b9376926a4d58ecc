"""`pi05`: pi0.5's action expert (openpi pi0.py / gemma_pytorch.py; LeRobot modeling_pi05.py; reference §6).

A Gemma-300M-shaped stack (width 1024, mlp 4096, 8 heads, 1 KV head, head_dim 256, one layer per VLM
layer) whose layer l shares attention with the VLM's layer l: the action tokens' Q, K, V come from the
expert's own projections, their keys are [the prefix's K of VLM layer l ; their own K] (values alike),
one softmax under the block mask — action tokens see the valid prefix and each other, the prefix never
sees them (gemma.py explains why running the prefix first is the same computation). Every norm is
adaRMS conditioned on the flow time: cond = swish(time_mlp_out(swish(time_mlp_in(sincos(t))))). The
prefix KV cache (student.py `prefix_cache`) is computed once per prediction; each of the 10 Euler
steps runs only the action tokens.

Actions: the unified 44-D chunk packed into `action_dim` slots (pi0.5: 32) — the embodiment's valid
dimensions first, in order, zeros after (openpi pads LIBERO's 7-D actions to 32 the same way). Flow
matching as pi0.5 (t ~ Beta(1.5, 1)·0.999 + 0.001, x_t = t·ε + (1 − t)·a, u = ε − a, 10 Euler steps from
t = 1); the loss is the MSE of v − u over the valid dimensions and steps (openpi averages over all 32,
padding included: LatBot masks as every action loss does).

The gripper (`gripper_loss`): "flow" — pi0.5's published objective: a regressed flow dimension like any other
(no BCE head); `sample` reports it as (x + 1) / 2 of its normalised value, so the policy's 0.5 threshold is
the middle of the gripper's [q01, q99] range. "bce" — the paper's (§3.3): L = L_ee + w·L_gripper, L_ee the
flow MSE on every valid dimension but the grippers, L_gripper the binary cross-entropy of a gripper head
(Linear width → 2: left, right logits per step, on the final hidden state of each action token) against
closed = (the unified gripper value > 0.5; 0 open, 1 closed, whatever the embodiment's own convention),
on the valid gripper dimensions; `sample` reports sigmoid(logits) of the last Euler step, which the policy
thresholds at 0.5, and the gripper slots of the flow are left untrained.

State (`state`): "discrete" — pi0.5's default: the normalised state as 256-bin text in the prompt (the
student writes it; this module ignores the state); "continuous" — a state token (Linear 46 → width)
before the action tokens, in its own block (pi0's layout), a LatBot option for states text cannot carry
well; "none" — openpi's pi05 configs with discrete_state_input=False (e.g. pi05_libero): no state at all.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from latbot.config import PluginConfig
from latbot.data.spaces import ACTION_DIM, GRIPPER_DIMS, STATE_DIM
from latbot.errors import RecipeError
from latbot.models import flow, gemma
from latbot.models.experts.flow import ee_dims

# the expert's sizes (openpi's gemma_300m; pi0.5's 32 packed action slots) and flow settings (pi0.5's)
GEMMA_300M = {"width": 1024, "mlp_dim": 4096, "heads": 8, "kv_heads": 1, "head_dim": 256, "action_dim": 32}
PI05_FLOW = {"num_steps": 10, "time_alpha": 1.5, "time_beta": 1.0, "min_period": 4e-3, "max_period": 4.0}


class Pi05ActionExpert(nn.Module):
    reads_prefix_cache = True  # the VLA hands it the student's PrefixCache instead of hidden states

    class Config(PluginConfig):
        type: Literal["pi05"] = "pi05"
        pretrained: str | None = Field(
            None, description="LeRobot `pi05` checkpoint directory; its expert, action and time projections load."
        )
        preset: Literal["custom", "checkpoint"] = Field(
            "custom",
            description="custom: the fields below (null: gemma_300m's size, pi0.5's setting); checkpoint: "
            "null sizes (width, mlp_dim, heads, kv_heads, head_dim, action_dim) are read from `pretrained` "
            "(config.json, checked against its tensors; a size given is checked too) and null flow settings "
            "from its config.json, when a run starts; the run records them as custom.",
        )
        width: int | None = Field(None, ge=8, description="gemma_300m: 1024.")
        mlp_dim: int | None = Field(None, ge=8, description="gemma_300m: 4096.")
        heads: int | None = Field(None, ge=1, description="Must equal the VLM's (shared attention); pi0.5: 8.")
        kv_heads: int | None = Field(None, ge=1, description="Must equal the VLM's; pi0.5: 1.")
        head_dim: int | None = Field(None, ge=2, description="Must equal the VLM's; pi0.5: 256.")
        action_dim: int | None = Field(None, ge=1, description="Packed action width (pi0.5's max_action_dim: 32).")
        state: Literal["discrete", "continuous", "none"] = Field(
            "discrete", description="How the state reaches the model (module docstring)."
        )
        num_steps: int | None = Field(None, ge=1, description="Euler steps at inference (pi0.5: 10).")
        time_alpha: float | None = Field(None, gt=0, description="Beta(α, β) of the training flow time (pi0.5: 1.5).")
        time_beta: float | None = Field(None, gt=0, description="Beta(α, β) of the training flow time (pi0.5: 1.0).")
        min_period: float | None = Field(None, gt=0, description="Time embedding (pi0.5: 4e-3).")
        max_period: float | None = Field(None, gt=0, description="Time embedding (pi0.5: 4.0).")
        gripper_loss: Literal["flow", "bce"] = Field(
            "flow",
            description="flow: the gripper is a regressed flow dimension (pi0.5's published objective); bce: "
            "the paper's L_ee + w·L_gripper, a gripper head with binary cross-entropy on open/closed.",
        )
        gripper_weight: float = Field(1.0, ge=0, description="w, the weight of L_gripper (gripper_loss: bce).")

        @model_validator(mode="after")
        def _defaults(self):
            """custom: a null field is gemma_300m's size / pi0.5's setting (checkpoint: read from `pretrained`)."""
            if self.preset == "custom":
                for name, value in (GEMMA_300M | PI05_FLOW).items():
                    if getattr(self, name) is None:
                        setattr(self, name, value)
            return self

    def __init__(self, config: Config, *, vlm_width: int, vlm_layers: int, horizon: int):
        super().__init__()
        if config.preset == "checkpoint":
            raise RecipeError(
                "action_experts.pi05: preset checkpoint takes its sizes from `pretrained` when a run starts (the "
                "stage reads them; the architecture reads no file); to build it without the checkpoint write them "
                "out (preset: custom) — `python -m latbot.models.pi05.checkpoint DIR` prints them"
            )
        c = self.config = config
        self.horizon = horizon
        w = c.width
        self.layers = nn.ModuleList(
            gemma.GemmaLayer(w, c.mlp_dim, c.heads, c.kv_heads, c.head_dim, cond_width=w) for _ in range(vlm_layers)
        )
        self.norm = gemma.AdaptiveRMSNorm(w, w)
        self.action_in_proj = nn.Linear(c.action_dim, w)
        self.action_out_proj = nn.Linear(w, c.action_dim)
        self.time_mlp_in = nn.Linear(w, w)
        self.time_mlp_out = nn.Linear(w, w)
        self.state_proj = nn.Linear(STATE_DIM, w) if c.state == "continuous" else None
        self.gripper_head = nn.Linear(w, len(GRIPPER_DIMS)) if c.gripper_loss == "bce" else None
        self.register_buffer("ee_mask", ee_dims(), persistent=False)
        for module in self.modules():  # Gemma's initialisation (std 0.02); adaRMS projections stay zero
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for layer in [*self.layers, self]:
            norms = [layer.norm] if layer is self else [layer.input_layernorm, layer.post_attention_layernorm]
            for norm in norms:
                nn.init.zeros_(norm.dense.weight)

    @classmethod
    def tiny_config(cls):
        # 44 slots: the contract tests use every unified dimension; the tiny recipes use pi0.5's 32
        return cls.Config(width=16, mlp_dim=32, heads=8, kv_heads=1, head_dim=8, action_dim=ACTION_DIM)

    def repeated_blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def check_vlm(self, student) -> None:
        """The shared attention needs the VLM's heads, KV heads and head width."""
        mine = (self.config.heads, self.config.kv_heads, self.config.head_dim)
        theirs = getattr(student, "attention_shape", None)
        if theirs != mine or not getattr(student, "reads_prefix_cache", False):
            raise ValueError(
                f"action_expert pi05 shares attention with the VLM: it needs a `pi05` student with (heads, kv_heads, "
                f"head_dim) = {mine}; got {type(student).__name__} with {theirs}"
            )

    def example_context(self, layers, ctx_mask):
        """Stand-in prefix K, V from stand-in hidden states (contract tests): fixed projections per layer."""
        keys, values = [], []
        for i in range(len(self.layers)):
            h = layers[i]
            g = torch.Generator().manual_seed(i)
            proj = torch.randn(2, h.shape[-1], self.config.kv_heads * self.config.head_dim, generator=g)
            k, v = (h @ p.to(h) / h.shape[-1] ** 0.5 for p in proj)
            shape = (h.shape[0], h.shape[1], self.config.kv_heads, self.config.head_dim)
            keys.append(k.view(shape).transpose(1, 2))
            values.append(v.view(shape).transpose(1, 2))
        return gemma.PrefixCache(keys, values, ctx_mask.bool())

    # -- the unified space ↔ pi0.5's packed action slots ----------------------------------------------------
    def flow_dims(self, action_mask: torch.Tensor | None, b: int, device) -> torch.Tensor | None:
        """The unified dims the flow carries: the valid ones; with the gripper head, all but the grippers
        (they are the head's: their slots are not in the flow's input or output, and come back as 0)."""
        if self.gripper_head is None:
            return action_mask
        if action_mask is None:
            action_mask = torch.ones(b, ACTION_DIM, dtype=torch.bool, device=device)
        return action_mask.bool() & ~_gripper_mask(action_mask.device)

    def _order(self, action_mask: torch.Tensor | None, b: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (indices (B, P) of the unified dims in the packed slots, filled (B, P) bool)."""
        if action_mask is None:
            action_mask = torch.ones(b, ACTION_DIM, dtype=torch.bool, device=device)
        m = action_mask.bool()
        p = self.config.action_dim
        n = int(m.sum(1).max()) if not m.is_meta else 0  # a meta tensor (`latbot plan`) has no values to check
        if n > p:
            raise ValueError(f"the embodiment has {n} valid action dimensions, action_expert.action_dim is {p}")
        order = torch.sort((~m).int(), dim=1, stable=True).indices  # valid dims first, in order
        idx = torch.zeros(b, p, dtype=torch.long, device=device)
        k = min(p, ACTION_DIM)
        idx[:, :k] = order[:, :k]
        filled = torch.zeros(b, p, dtype=torch.bool, device=device)
        filled[:, :k] = torch.gather(m, 1, order[:, :k])
        return idx, filled

    def pack(self, x: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, H, 44) → (B, H, P)."""
        idx, filled = self._order(action_mask, x.shape[0], x.device)
        packed = torch.gather(x, 2, idx[:, None].expand(-1, x.shape[1], -1))
        return packed * filled[:, None].to(x.dtype)

    def unpack(self, x: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, H, P) → (B, H, 44), zeros in the dimensions the embodiment does not have."""
        idx, filled = self._order(action_mask, x.shape[0], x.device)
        out = torch.zeros(*x.shape[:2], ACTION_DIM, dtype=x.dtype, device=x.device)
        src = x * filled[:, None].to(x.dtype)
        return out.scatter_add(2, idx[:, None].expand(-1, x.shape[1], -1), src)

    # -- the network ----------------------------------------------------------------------------------
    def velocity(self, x_t, t, cache, ctx_mask, state=None, hidden: bool = False):
        """x_t (B, H, P), t (B,), the prefix cache and its valid mask (B, M), state (B, 46) for
        "continuous" → v (B, H, P); with `hidden`, (v, the action tokens' final hidden states (B, H, W))."""
        c = self.config
        cond = self.time_mlp_in(gemma.sincos(t, c.width, c.min_period, c.max_period).to(self.time_mlp_in.weight.dtype))
        cond = F.silu(self.time_mlp_out(F.silu(cond)))
        x = self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype))  # (B, H, W)
        ar = [1] + [0] * (x.shape[1] - 1)
        if self.state_proj is not None:
            x = torch.cat([self.state_proj(state.to(x.dtype))[:, None], x], 1)
            ar = [1, *ar]
        b, s = x.shape[:2]
        valid = ctx_mask.bool().to(x.device)
        own = gemma.block_mask(
            torch.ones(b, s, dtype=torch.bool, device=x.device), torch.tensor([ar] * b, device=x.device)
        )
        mask = gemma.additive(torch.cat([valid[:, None, :].expand(b, s, -1), own], 2))  # (B, 1, S, M + S)
        positions = valid.long().sum(1, keepdim=True) + torch.arange(s, device=x.device)  # after the prefix
        cos, sin = gemma.rope_tables(positions, c.head_dim, dtype=x.dtype)
        for i, layer in enumerate(self.layers):
            # each adaRMS projection reads the condition in its own dtype (LeRobot's bf16 checkpoints keep norms fp32)
            c_i = cond.to(layer.input_layernorm.dense.weight.dtype)
            x, _, _ = layer(x, mask, cos, sin, c_i, past=(cache.keys[i].to(x.dtype), cache.values[i].to(x.dtype)))
        x, _ = self.norm(x, cond.to(self.norm.dense.weight.dtype))
        h = x[:, -self.horizon :].to(self.action_out_proj.weight.dtype)
        v = self.action_out_proj(h)
        return (v, h) if hidden else v

    def loss(self, actions, gripper, action_mask, pad, state, layers, ctx_mask) -> dict[str, torch.Tensor]:
        """actions (B, H, 44) normalised; action_mask (B, 44); pad (B, H) True past the episode's end;
        state (B, 46) normalised and masked; `layers`: the student's PrefixCache (`example_context` makes a
        stand-in). `gripper` is unused: the gripper dims of `actions` are regressed."""
        cache = _cache(self, layers, ctx_mask)
        c = self.config
        flow_dims = self.flow_dims(action_mask, actions.shape[0], actions.device)
        a = self.pack(actions, flow_dims)
        t = flow.sample_time_beta(a.shape[0], c.time_alpha, c.time_beta, a.device)
        x_t, u = flow.noisy(a, torch.randn_like(a), t)
        v, h = self.velocity(x_t, t, cache, ctx_mask, state, hidden=True)
        err = (v.float() - u.float()) ** 2  # (B, H, P)
        steps = (~pad.bool()).float()[:, :, None]
        grippers = action_mask.bool() & _gripper_mask(action_mask.device)
        dims = {"loss": action_mask.bool(), "ee": action_mask.bool() & self.ee_mask, "gripper": grippers}
        if self.gripper_head is not None:  # the flow covers every valid dim but the grippers: L_ee
            dims = {"ee": flow_dims}
        out = {}
        for name, m in dims.items():
            w = self.pack(m.float()[:, None, :].expand(-1, a.shape[1], -1), flow_dims) * steps
            out[name] = (err * w).sum() / w.sum().clamp(min=1)
        if self.gripper_head is not None:  # L_gripper: BCE of the head's logits against closed (> 0.5)
            logits = self.gripper_head(h).float()  # (B, H, 2)
            closed = (gripper.float() > 0.5).float()
            gmask = action_mask[:, GRIPPER_DIMS].float()[:, None, :] * steps  # (B, H, 2)
            bce = F.binary_cross_entropy_with_logits(logits, closed, reduction="none")
            out["gripper"] = (bce * gmask).sum() / gmask.sum().clamp(min=1)
            out["loss"] = out["ee"] + c.gripper_weight * out["gripper"]
        return out

    @torch.no_grad()
    def sample(self, state, layers, ctx_mask, action_mask=None, generator=None, velocity=None):
        """Euler from noise (t = 1) to data → actions (B, H, 44) normalised, and the gripper (B, H, 2) as
        the position of the regressed gripper value in its normalised range, (x + 1) / 2 clipped to [0, 1]:
        above 0.5 ⇔ above the middle of [q01, q99], the closed/open threshold the policy applies.
        `velocity(x, t, hidden=False)` replaces the cached-prefix velocity (the uncached check)."""
        shape = (state.shape[0], self.horizon, self.config.action_dim)
        noise = torch.randn(shape, generator=generator, device="cpu")
        last: dict[str, torch.Tensor] = {}
        flow_dims = self.flow_dims(action_mask, shape[0], ctx_mask.device)
        actions = self.unpack(self.denoise(noise, layers, ctx_mask, state, velocity, last), flow_dims)
        if self.gripper_head is not None:  # closed-probabilities from the head at the last Euler step
            return actions, torch.sigmoid(self.gripper_head(last["hidden"]).float())
        return actions, ((actions[..., GRIPPER_DIMS].float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def denoise(self, noise, layers, ctx_mask, state=None, velocity=None, last: dict | None = None) -> torch.Tensor:
        """noise (B, H, P) → the packed chunk (B, H, P) after `num_steps` Euler steps (pi0.5's loop). With a
        gripper head, `last["hidden"]` receives the action tokens' hidden states of the last step."""
        cache = _cache(self, layers, ctx_mask)
        x = noise.to(ctx_mask.device, self.action_in_proj.weight.dtype)

        def cached(x, t, hidden=False):
            return self.velocity(x, t, cache, ctx_mask, state, hidden=hidden)

        step = velocity or cached  # an outside velocity(x, t, hidden=False): the VLA's uncached check
        if self.gripper_head is not None:

            def v(x, t):
                out, h = step(x, t, hidden=True)
                if last is not None:
                    last["hidden"] = h
                return out
        else:

            def v(x, t):
                return step(x, t)

        (x,) = flow.integrate(lambda x, t: (v(x, t),), (x,), self.config.num_steps)
        return x


def _gripper_mask(device) -> torch.Tensor:
    m = torch.zeros(ACTION_DIM, dtype=torch.bool, device=device)
    m[GRIPPER_DIMS] = True
    return m


def _cache(expert, layers, ctx_mask) -> gemma.PrefixCache:
    """The student's PrefixCache; stand-in hidden states (the registry's contract checks call an expert
    alone with (B, N, D) tensors) become `example_context`. A VisionLanguageAction never passes hidden
    states: it refuses a student that is not `pi05` (`check_vlm`)."""
    if isinstance(layers, gemma.PrefixCache):
        return layers
    if isinstance(layers, list | tuple) and all(isinstance(h, torch.Tensor) for h in layers):
        return expert.example_context(layers, ctx_mask)
    raise TypeError(f"action_expert pi05 reads the prefix KV cache of a `pi05` student, got {type(layers).__name__}")
