"""What the Open X-Embodiment arms LatBot maps share (`widowx`, `google_robot`): after the Octo/OpenVLA
standardization their action is a 7-D end-effector delta in the right slot — dx, dy, dz (metres), droll,
dpitch, dyaw (radians), then the gripper on a linear scale from `gripper_open` to `gripper_closed` (an open
amount, 1 = open, for both). Each subclass maps its own state."""

from __future__ import annotations

import numpy as np

from latbot.data.embodiments import Embodiment, gripper_to_unified, unified_to_gripper
from latbot.data.spaces import ACTION_DIM, ACTION_GRIPPER, ACTION_POS, ACTION_ROT

R = "right"


class OxeEndEffectorArm(Embodiment):
    """A right-slot arm whose native action is [xyz delta, roll-pitch-yaw delta, gripper] (7)."""

    native_action_dim = 7
    gripper_index = 6

    def actions_to_unified(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions, np.float64)
        out = np.zeros((len(actions), ACTION_DIM), np.float32)
        out[:, ACTION_POS[R]] = actions[:, :3]
        out[:, ACTION_ROT[R]] = actions[:, 3:6]
        out[:, ACTION_GRIPPER[R]] = gripper_to_unified(actions[:, 6], self.gripper_open, self.gripper_closed)
        return out

    def actions_to_native(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        grip = unified_to_gripper(actions[:, ACTION_GRIPPER[R]], self.gripper_open, self.gripper_closed)[:, None]
        return np.concatenate([actions[:, ACTION_POS[R]], actions[:, ACTION_ROT[R]], grip], 1).astype(np.float32)
