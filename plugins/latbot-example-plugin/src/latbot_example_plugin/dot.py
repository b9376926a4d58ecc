"""`dot`: a point in the plane as a robot, as an example of an `embodiments` plugin.

Native state (S = 2): x, y in metres. Native action (A = 2): a velocity command in [−1, 1] per axis,
× STEP metres per step. Unified (docs/data.md): a single arm fills the RIGHT slot; x, y are the right
arm's position (state) and position deltas (actions); there is no gripper, no rotation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from latbot.config import PluginConfig
from latbot.data.embodiments import Embodiment, unified_mask
from latbot.data.spaces import ACTION_DIM, ACTION_POS, STATE_DIM, STATE_POS

STEP = 0.08  # metres per step at full command
X, Y = ACTION_POS["right"].start, ACTION_POS["right"].start + 1  # unified action dims 7, 8
SX, SY = STATE_POS["right"].start, STATE_POS["right"].start + 1  # unified state dims 8, 9


class DotEmbodiment(Embodiment):
    class Config(PluginConfig):
        type: Literal["dot"] = "dot"

    native_state_dim = 2
    native_action_dim = 2
    action_mask = unified_mask(ACTION_DIM, X, Y)
    state_mask = unified_mask(STATE_DIM, SX, SY)
    gripper = "none"

    def states_to_unified(self, states: np.ndarray) -> np.ndarray:
        """(T, 2) → (T, 46) float32."""
        out = np.zeros((len(states), STATE_DIM), np.float32)
        out[:, [SX, SY]] = states
        return out

    def actions_to_unified(self, actions: np.ndarray) -> np.ndarray:
        """(T, 2) commands → (T, 44) float32 displacements in metres."""
        out = np.zeros((len(actions), ACTION_DIM), np.float32)
        out[:, [X, Y]] = STEP * np.clip(actions, -1, 1)
        return out

    def actions_to_native(self, actions: np.ndarray) -> np.ndarray:
        """(H, 44) displacements → (H, 2) commands."""
        return np.clip(np.asarray(actions)[:, [X, Y]] / STEP, -1, 1).astype(np.float32)
