"""Embodiments (registry kind `embodiments`): one robot's native ↔ unified conversions, both directions.

One object per robot holds everything LatBot needs to know about its native spaces::

    emb = latbot.data.embodiments.get("franka_panda")
    emb.native_state_dim, emb.native_action_dim          # S, A
    emb.action_mask (44,) bool, emb.state_mask (46,) bool  # the unified dimensions this robot fills
    # store writers (simulator demonstrations, dataset adapters)
    emb.states_to_unified(states (T, S)) -> (T, 46) ; emb.actions_to_unified(actions (T, A)) -> (T, 44)
    emb.trajectory(states (T, S) | None, actions (T, A)) -> UnifiedTrajectory (with the masks)
    # the policy (latbot.policy.LatBotPolicy)
    emb.state_to_unified(state (S,)) -> (46,) ; emb.actions_to_native(actions (H, 44)) -> (H, A)

Because the writer and the policy call the same object, a policy trained on a store answers in exactly
the units the store was written from. Conventions (docs/data.md): a single arm fills the RIGHT slot;
the unified gripper is in [0, 1] (0 open, 1 closed). Each robot keeps its own native gripper range,
declared as `gripper_open` / `gripper_closed` (the native action values meaning fully open / fully
closed, at `gripper_index`), which `latbot plugins check` drives the gripper through: the MetaWorld and
LIBERO arms take a ±1 command (+1 closes, `command_to_unified` / `unified_to_command`); the Bridge V2
WidowX and the RT-1 Google robot an open amount, 1 open … 0 closed (`gripper_to_unified` /
`unified_to_gripper`).

An embodiment is a plugin like any other: a class with a nested `Config` whose `type` is its registered
name (it usually has no other field), registered in the entry-point group `latbot.embodiments`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from latbot.config import PluginConfig
from latbot.data.spaces import STATE_DIM, UnifiedTrajectory
from latbot.errors import LatBotError


class EmbodimentError(LatBotError):
    """Native arrays that do not match an embodiment's dimensions."""


def unified_mask(dim: int, *parts: slice | int) -> np.ndarray:
    """A (dim,) bool mask with the given slices / indices set (an embodiment's `action_mask`, `state_mask`)."""
    mask = np.zeros(dim, bool)
    for part in parts:
        mask[part] = True
    return mask


def command_to_unified(command: np.ndarray) -> np.ndarray:
    """A ±1 gripper command (−1 open, +1 close) → the unified gripper in [0, 1]."""
    return (np.clip(command, -1, 1) + 1) / 2


def unified_to_command(gripper: np.ndarray) -> np.ndarray:
    """The unified gripper (0 open … 1 closed) → the ±1 command (thresholded at 0.5)."""
    return np.where(gripper > 0.5, 1.0, -1.0)


def gripper_to_unified(values: np.ndarray, open_value: float, closed_value: float) -> np.ndarray:
    """A native gripper on a linear scale (`open_value` … `closed_value`, either polarity) → the unified
    gripper in [0, 1] (0 open, 1 closed), clipped."""
    values = np.asarray(values, np.float64)
    return np.clip((values - open_value) / (closed_value - open_value), 0.0, 1.0)


def unified_to_gripper(gripper: np.ndarray, open_value: float, closed_value: float) -> np.ndarray:
    """The unified gripper (0 open … 1 closed) → the native linear scale (the inverse of
    `gripper_to_unified` on [0, 1]; continuous, not thresholded)."""
    return open_value + np.clip(np.asarray(gripper, np.float64), 0.0, 1.0) * (closed_value - open_value)


class Embodiment:
    """Base of `embodiments` plugins. Subclasses set the class attributes and the three conversions."""

    class Config(PluginConfig):
        pass

    native_state_dim: ClassVar[int]
    native_action_dim: ClassVar[int]
    action_mask: ClassVar[np.ndarray]  # (44,) bool
    state_mask: ClassVar[np.ndarray]  # (46,) bool
    gripper: ClassVar[str] = "none"  # the native gripper convention, in words (shown in docs and errors)
    # The native action's gripper, when `gripper` is not "none": its index in the action vector and the
    # values meaning fully open and fully closed (default: the ±1 command, +1 closes). `latbot plugins check`
    # drives the gripper through exactly these two values and requires open → unified 0, closed → 1.
    gripper_index: ClassVar[int] = -1
    gripper_open: ClassVar[float] = -1.0
    gripper_closed: ClassVar[float] = 1.0

    @classmethod
    def gripper_range(cls) -> tuple[float, float]:
        """(lowest, highest) native action gripper value."""
        return (min(cls.gripper_open, cls.gripper_closed), max(cls.gripper_open, cls.gripper_closed))

    def __init__(self, config: PluginConfig):
        self.config = config

    @property
    def name(self) -> str:
        return self.config.type

    # -- native → unified (store writers) ---------------------------------------------------------------
    def states_to_unified(self, states: np.ndarray) -> np.ndarray:
        """(T, S) native states → (T, 46) float32, zero outside `state_mask`."""
        raise NotImplementedError

    def actions_to_unified(self, actions: np.ndarray) -> np.ndarray:
        """(T, A) native actions → (T, 44) float32 per-step deltas, zero outside `action_mask`."""
        raise NotImplementedError

    # -- unified → native (the policy) ------------------------------------------------------------------
    def actions_to_native(self, actions: np.ndarray) -> np.ndarray:
        """(H, 44) unified actions → (H, A) native actions."""
        raise NotImplementedError

    def state_to_unified(self, state: np.ndarray) -> np.ndarray:
        """(S,) one native state → (46,) float32."""
        return self.states_to_unified(np.asarray(state)[None])[0]

    def trajectory(self, states: np.ndarray | None, actions: np.ndarray, where: str = "") -> UnifiedTrajectory:
        """A whole episode into the unified spaces, with this embodiment's validity masks. `states` may be
        None (a source without proprioception): the state mask is then empty."""
        actions = self._check(actions, self.native_action_dim, "actions", where)
        unified_actions = np.asarray(self.actions_to_unified(actions), np.float32)
        if states is None:
            unified_states, state_mask = np.zeros((len(actions), STATE_DIM), np.float32), np.zeros(STATE_DIM, bool)
        else:
            states = self._check(states, self.native_state_dim, "states", where)
            unified_states, state_mask = np.asarray(self.states_to_unified(states), np.float32), self.state_mask
        return UnifiedTrajectory(unified_actions, unified_states, self.action_mask.copy(), state_mask.copy())

    def _check(self, x: np.ndarray, width: int, what: str, where: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != width:
            at = f"{where}: " if where else ""
            raise EmbodimentError(
                f"{at}embodiment '{self.name}' expects native {what} of shape (T, {width}), got {x.shape}"
            )
        return x


def get(name: str) -> Embodiment:
    """The registered embodiment `name`, built (an unknown name lists the registered ones)."""
    from latbot import registry

    return registry.build("embodiments", registry.get("embodiments", name).Config.model_validate({"type": name}))


def is_registered(name: str) -> bool:
    from latbot import registry

    return name in registry.names("embodiments")
