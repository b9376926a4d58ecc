"""The action-expert contract (registry kind `action_experts`), written down once.

Everything LatBot calls on an action expert, with the arguments it passes:

    expert = cls(config, vlm_width=student.width, vlm_layers=student.num_layers, horizon=H)   # finetuning (VLA)
    expert.loss(actions, gripper, action_mask, pad, state, layers, ctx_mask)   # finetuning: the losses
    expert.sample(state, layers, ctx_mask, action_mask, generator)            # the policy, `latbot eval`/`serve`
    expert.repeated_blocks()                                                   # FSDP wrapping, checkpointing

and, only for an expert that shares the student's attention (`reads_prefix_cache = True`, the built-in `pi05`;
`PrefixCacheExpert`): `expert.check_vlm(student)`, `expert.config.state`, `expert.velocity(x_t, t, cache,
ctx_mask, state)` and `expert.sample(..., velocity=...)`.

A plugin need not subclass `ActionExpert` (it is a `typing.Protocol`: the example plugin's `mlp_head` does
not); `latbot plugins check` (latbot/testing/contracts/models.py) checks that each member exists and takes
the arguments above, then calls it. The VLA checks what `loss` and `sample` return at every call
(`check_loss`, `check_sample`): a wrong shape or dtype stops there with one line that names the plugin.
docs/plugins.md, "Action experts", states the same contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import torch
    from torch import nn

    from latbot.config import PluginConfig
    from latbot.models.encoders.base import OutputCheck

# The one spelling of each member, named by `latbot plugins check` when a plugin lacks it or it cannot take
# the arguments LatBot passes.
SIGNATURES = {
    "__init__": "cls(config, *, vlm_width: int, vlm_layers: int, horizon: int)",
    "loss": ('loss(actions, gripper, action_mask, pad, state, layers, ctx_mask) -> {"loss", "ee", "gripper"} scalars'),
    "sample": (
        "sample(state, layers, ctx_mask, action_mask=None, generator: torch.Generator | None = None) -> "
        "(actions (B, H, 44), gripper (B, H, 2) in [0, 1])"
    ),
    "repeated_blocks": "repeated_blocks() -> list[nn.Module]",
    "reads_prefix_cache": "a class attribute `reads_prefix_cache = True`",
    "config": 'an attribute `config` with a field `state` ("discrete" puts the state into the student\'s prompt)',
    "check_vlm": "check_vlm(student) -> None (raise if the student's attention cannot be shared)",
    "velocity": "velocity(x_t, t, cache, ctx_mask, state=None) -> v (B, H, P)",
    "sample(velocity=)": (
        "sample(state, layers, ctx_mask, action_mask=None, generator=None, velocity=None) -> (actions, gripper)"
    ),
}
LOSS_KEYS = ("loss", "ee", "gripper")  # "loss" is optimised; the finetuning stage logs all three


class ActionExpert(Protocol):
    """An action expert: reads the student's hidden states and generates a chunk of H unified actions.

    B batch, H = `horizon` (`model.action_horizon`), 44 the unified action width, 46 the unified state width,
    L + 1 = `vlm_layers` + 1 hidden-state tensors of the student, each (B, N, `vlm_width`).
    """

    def __init__(self, config: PluginConfig, *, vlm_width: int, vlm_layers: int, horizon: int) -> None:
        """Built by the VLA with the student's `width` and `num_layers` and the chunk length H, as keywords."""

    def repeated_blocks(self) -> list[nn.Module]:
        """The repeated (transformer) blocks FSDP wraps and activation checkpointing recomputes; [] if none."""
        ...

    def loss(
        self,
        actions: torch.Tensor,
        gripper: torch.Tensor,
        action_mask: torch.Tensor,
        pad: torch.Tensor,
        state: torch.Tensor,
        layers: Sequence[torch.Tensor],
        ctx_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Called positionally in this order. actions (B, H, 44) float, quantile-normalised; gripper (B, H, 2)
        float in [0, 1] (left, right; not normalised); action_mask (B, 44) bool; pad (B, H) bool, True past
        the episode's end; state (B, 46) float, normalised and zero outside the state mask; layers: the
        student's "layers" (L + 1 tensors (B, N, vlm_width)); ctx_mask (B, N) its "attention_mask".
        → {"loss", "ee", "gripper"}: floating scalars (), all three."""
        ...

    def sample(
        self,
        state: torch.Tensor,
        layers: Sequence[torch.Tensor],
        ctx_mask: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Called positionally, under no_grad, in eval mode: state, layers, ctx_mask as in `loss`;
        action_mask (B, 44) bool; `generator` the source of all sampling noise. → (actions (B, H, 44)
        floating, normalised; gripper (B, H, 2) floating closed-probabilities in [0, 1])."""
        ...


class PrefixCacheExpert(ActionExpert, Protocol):
    """An expert that shares each layer's attention with the student (the built-in `pi05`): the VLA hands it
    the student's prefix KV cache (`PrefixCacheStudent.prefix_cache`) as `layers` and its valid mask as
    `ctx_mask`."""

    reads_prefix_cache: bool
    config: PluginConfig  # with a field `state`: "discrete" makes the VLA pass the state into the prompt

    def check_vlm(self, student: Any) -> None:
        """Raise (a ValueError) if `student` cannot share its attention (another attention shape, or a student
        without `reads_prefix_cache`); called once, when the VLA is built."""

    def velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, cache: Any, ctx_mask: torch.Tensor, state: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_t (B, H, P), t (B,), the prefix cache and its valid mask (B, M), state (B, 46) → v (B, H, P)."""
        ...

    def sample(
        self,
        state: torch.Tensor,
        layers: Any,
        ctx_mask: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As `ActionExpert.sample`; `velocity(x, t)` replaces the cached-prefix velocity (the VLA's uncached
        check recomputes the prefix at every step)."""
        ...


def check_loss(check: OutputCheck, out: Any) -> dict[str, torch.Tensor]:
    """What `ActionExpert.loss` returned: {"loss", "ee", "gripper"}, floating scalars."""
    check.mapping("loss", out, LOSS_KEYS)
    for key in LOSS_KEYS:
        check.tensor("loss", f'"{key}"', out[key], ())
    return out


def check_sample(check: OutputCheck, out: Any, batch: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What `ActionExpert.sample` returned: (actions (B, H, 44), gripper (B, H, 2)), floating."""
    from latbot.data.spaces import ACTION_DIM
    from latbot.models.encoders.base import dims_text

    acts = (("B", batch), ("horizon", horizon), ("action_dim", ACTION_DIM))
    grip = (("B", batch), ("horizon", horizon), ("grippers", 2))
    actions, gripper = check.pair("sample", out, f"(actions {dims_text(acts)}, gripper {dims_text(grip)})")
    return check.tensor("sample", "actions", actions, acts), check.tensor("sample", "gripper", gripper, grip)
