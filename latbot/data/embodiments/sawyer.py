"""`sawyer`: MetaWorld's Sawyer arm (latbot.sim.metaworld), a single arm in the right slot.

Native state (4): hand position x, y, z and the gripper opening (1 = open). Native action (4): commanded
dx, dy, dz and the gripper command in [−1, 1] (> 0 closes). Unified: state position and gripper closure
1 − opening; action position delta and the gripper command mapped −1..1 → 0..1. No orientation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from latbot.config import PluginConfig
from latbot.data.embodiments import Embodiment, command_to_unified, unified_mask, unified_to_command
from latbot.data.spaces import ACTION_DIM, ACTION_GRIPPER, ACTION_POS, STATE_DIM, STATE_GRIPPER, STATE_POS

R = "right"


class SawyerEmbodiment(Embodiment):
    class Config(PluginConfig):
        type: Literal["sawyer"] = "sawyer"

    native_state_dim = 4
    native_action_dim = 4
    action_mask = unified_mask(ACTION_DIM, ACTION_POS[R], ACTION_GRIPPER[R])
    state_mask = unified_mask(STATE_DIM, STATE_POS[R], STATE_GRIPPER[R])
    gripper = "action[3] in [-1, 1], > 0 closes; state[3] the opening, 1 = open"

    def states_to_unified(self, states: np.ndarray) -> np.ndarray:
        out = np.zeros((len(states), STATE_DIM), np.float32)
        out[:, STATE_POS[R]] = states[:, :3]
        out[:, STATE_GRIPPER[R]] = 1.0 - np.clip(states[:, 3], 0.0, 1.0)
        return out

    def actions_to_unified(self, actions: np.ndarray) -> np.ndarray:
        out = np.zeros((len(actions), ACTION_DIM), np.float32)
        out[:, ACTION_POS[R]] = actions[:, :3]
        out[:, ACTION_GRIPPER[R]] = command_to_unified(actions[:, 3])
        return out

    def actions_to_native(self, actions: np.ndarray) -> np.ndarray:
        grip = unified_to_command(actions[:, ACTION_GRIPPER[R]])[:, None]
        return np.concatenate([actions[:, ACTION_POS[R]], grip], 1)
