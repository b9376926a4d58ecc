"""`widowx`: the WidowX 250 6-DoF arm of BridgeData V2 (the `bridge` preset; SimplerEnv's WidowX), right slot.

Native spaces = the vectors of OXE `bridge_orig` after the Octo/OpenVLA standardization, which the
IPEC-COMMUNITY LeRobot copy stores (`action`, `observation.state`) and which Bridge-trained policies
(Octo, OpenVLA) read and answer in:

- action (7): dx, dy, dz (metres), droll, dpitch, dyaw (radians; `relabel_bridge_actions`: the
  difference of consecutive states' Euler angles), gripper as an open amount in [0, 1], 1 = fully
  open, 0 = closed (widowx_envs: "for gripper action, 0 is fully closed, 1 is fully open, continuous
  interpolation in the middle"; Octo's `binarize_gripper_actions` makes it 0/1 in the copy, Octo's
  SimplerEnv wrapper reads it as `open_gripper`, "range [0, 1]; 1 = open; 0 = close").
- state (8): x, y, z (metres), roll, pitch, yaw (radians, extrinsic x-y-z), a zero pad, gripper. The
  orientation is the end effector's relative to the top-down gripper pose (bridge_data_robot's
  DEFAULT_ROTATION), not to the base frame. The state gripper's polarity is not documented by the
  dataset, so it stays masked (as in the `bridge` preset's `unmapped`).

Unified: action position and Euler deltas as they are, gripper 1 − open amount; state position, the
quaternion of the Euler angles, no gripper. Control at 5 Hz; camera `image_0`, 256 × 256 in the OXE copy
(480 × 640 in the original release). Sources: docs/plugins.md, "Embodiments".
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from latbot.config import PluginConfig
from latbot.data import rotations as rot
from latbot.data.embodiments import unified_mask
from latbot.data.embodiments.oxe import OxeEndEffectorArm
from latbot.data.spaces import ACTION_DIM, ACTION_GRIPPER, ACTION_POS, ACTION_ROT, STATE_DIM, STATE_POS, STATE_QUAT

R = "right"
FPS = 5.0  # BridgeData V2 control rate (Octo/OpenVLA `control_frequency`; SimplerEnv's WidowX runs at 5 Hz)
GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, 0.0
# bridge_data_robot widowx_controller: the state's orientation is R_ee · DEFAULT_ROTATIONᵀ (top-down = identity).
DEFAULT_ROTATION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


class WidowXEmbodiment(OxeEndEffectorArm):
    class Config(PluginConfig):
        type: Literal["widowx"] = "widowx"

    native_state_dim = 8
    action_mask = unified_mask(ACTION_DIM, ACTION_POS[R], ACTION_ROT[R], ACTION_GRIPPER[R])
    state_mask = unified_mask(STATE_DIM, STATE_POS[R], STATE_QUAT[R])
    gripper = "action[6] open amount in [0, 1], 1 = open, 0 = closed; state[7] not mapped (polarity undocumented)"
    gripper_open = GRIPPER_OPEN
    gripper_closed = GRIPPER_CLOSED

    def states_to_unified(self, states: np.ndarray) -> np.ndarray:
        states = np.asarray(states, np.float64)
        out = np.zeros((len(states), STATE_DIM), np.float32)
        out[:, STATE_POS[R]] = states[:, :3]
        out[:, STATE_QUAT[R]] = rot.matrix_to_quat(rot.euler_to_matrix(states[:, 3:6]))
        return out
