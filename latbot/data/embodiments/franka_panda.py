"""`franka_panda`: LIBERO's Franka Panda (latbot.sim.libero, the `libero_hdf5` adapter), right slot.

Native state (8, openpi's LIBERO state): end-effector position (3), end-effector orientation as
axis-angle (3), gripper finger positions q₀, q₁ (2). Native action (7): dx, dy, dz, axis-angle delta (3),
gripper command (−1 open, +1 close). Unified: state position, quaternion (scalar-last, w ≥ 0) and
gripper closure 1 − (q₀ − q₁)/0.08 clipped to [0, 1]; action position delta, rotation delta as Euler
roll-pitch-yaw, gripper command −1..1 → 0..1.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from latbot.config import PluginConfig
from latbot.data import rotations as rot
from latbot.data.embodiments import Embodiment, command_to_unified, unified_mask, unified_to_command
from latbot.data.spaces import (
    ACTION_DIM,
    ACTION_GRIPPER,
    ACTION_POS,
    ACTION_ROT,
    STATE_DIM,
    STATE_GRIPPER,
    STATE_POS,
    STATE_QUAT,
)

R = "right"
PANDA_GRIPPER_OPEN_WIDTH = 0.08  # metres between the fingers fully open


class FrankaPandaEmbodiment(Embodiment):
    class Config(PluginConfig):
        type: Literal["franka_panda"] = "franka_panda"

    native_state_dim = 8
    native_action_dim = 7
    action_mask = unified_mask(ACTION_DIM, ACTION_POS[R], ACTION_ROT[R], ACTION_GRIPPER[R])
    state_mask = unified_mask(STATE_DIM, STATE_POS[R], STATE_QUAT[R], STATE_GRIPPER[R])
    gripper = "action[6] -1 open / +1 close; state[6:8] the finger positions"

    def states_to_unified(self, states: np.ndarray) -> np.ndarray:
        out = np.zeros((len(states), STATE_DIM), np.float32)
        out[:, STATE_POS[R]] = states[:, :3]
        out[:, STATE_QUAT[R]] = rot.matrix_to_quat(rot.axis_angle_to_matrix(np.asarray(states[:, 3:6], np.float64)))
        out[:, STATE_GRIPPER[R]] = 1.0 - np.clip((states[:, 6] - states[:, 7]) / PANDA_GRIPPER_OPEN_WIDTH, 0.0, 1.0)
        return out

    def actions_to_unified(self, actions: np.ndarray) -> np.ndarray:
        out = np.zeros((len(actions), ACTION_DIM), np.float32)
        out[:, ACTION_POS[R]] = actions[:, :3]
        out[:, ACTION_ROT[R]] = rot.matrix_to_euler(rot.axis_angle_to_matrix(np.asarray(actions[:, 3:6], np.float64)))
        out[:, ACTION_GRIPPER[R]] = command_to_unified(actions[:, 6])
        return out

    def actions_to_native(self, actions: np.ndarray) -> np.ndarray:
        axis_angle = rot.matrix_to_axis_angle(rot.euler_to_matrix(np.asarray(actions[:, ACTION_ROT[R]], np.float64)))
        grip = unified_to_command(actions[:, ACTION_GRIPPER[R]])[:, None]
        return np.concatenate([actions[:, ACTION_POS[R]], axis_angle, grip], 1)
