"""`google_robot`: the Google (Everyday Robots) mobile manipulator of RT-1 / Fractal (the `fractal` preset;
SimplerEnv's Google robot), its arm in the right slot.

Native spaces = the vectors of OXE `fractal20220817_data` after the Octo/OpenVLA standardization
(`rt1_dataset_transform`), which the IPEC-COMMUNITY LeRobot copy stores (`action`, `observation.state`)
and which Fractal-trained policies (Octo, OpenVLA) read and answer in:

- action (7): `world_vector` dx, dy, dz (metres) and `rotation_delta` droll, dpitch, dyaw (radians) of the
  end effector in the robot base frame, then the gripper as an absolute open amount, 1 = open, 0 =
  closed. The raw RLDS `gripper_closedness_action` is a relative command in [−1, 1] (+1 close, −1 open,
  0 no change; SimplerEnv's RT-1 wrapper: "-1 is open gripper, 1 is close gripper"), which the
  standardization turns into the absolute one (`rel2abs_gripper_actions`: "+1 for closing, -1 for
  opening" → "0 for closed, 1 for open"). `terminate_episode` (3, one-hot) and the base motion
  (`base_displacement_vector`, `base_displacement_vertical_rotation`) are not part of it.
- state (8): `base_pose_tool_reached` x, y, z (metres) + quaternion x, y, z, w of the tool in the robot
  base frame, then `gripper_closed` (1 = closed, 0 = open).

Unified: action position and Euler deltas as they are, gripper 1 − open amount; state position, the
quaternion made canonical (unit, w ≥ 0), gripper = `gripper_closed`. Control at 3 Hz; camera `image`,
256 × 320. Sources: docs/plugins.md, "Embodiments".
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from latbot.config import PluginConfig
from latbot.data import rotations as rot
from latbot.data.embodiments import unified_mask
from latbot.data.embodiments.oxe import OxeEndEffectorArm
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
FPS = 3.0  # RT-1 control rate (Octo/OpenVLA `control_frequency`)
GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, 0.0  # the standardized action; the state's `gripper_closed` is 0 open, 1 closed


class GoogleRobotEmbodiment(OxeEndEffectorArm):
    class Config(PluginConfig):
        type: Literal["google_robot"] = "google_robot"

    native_state_dim = 8
    action_mask = unified_mask(ACTION_DIM, ACTION_POS[R], ACTION_ROT[R], ACTION_GRIPPER[R])
    state_mask = unified_mask(STATE_DIM, STATE_POS[R], STATE_QUAT[R], STATE_GRIPPER[R])
    gripper = (
        "action[6] absolute open amount, 1 = open, 0 = closed (raw RT-1 gripper_closedness_action is relative, "
        "+1 close / -1 open); state[7] gripper_closed, 1 = closed"
    )
    gripper_open = GRIPPER_OPEN
    gripper_closed = GRIPPER_CLOSED

    def states_to_unified(self, states: np.ndarray) -> np.ndarray:
        states = np.asarray(states, np.float64)
        out = np.zeros((len(states), STATE_DIM), np.float32)
        out[:, STATE_POS[R]] = states[:, :3]
        out[:, STATE_QUAT[R]] = rot.canonical_quat(states[:, 3:7])
        out[:, STATE_GRIPPER[R]] = np.clip(states[:, 7], 0.0, 1.0)
        return out


def relative_to_absolute_gripper(closedness: np.ndarray) -> np.ndarray:
    """Raw RT-1 `gripper_closedness_action` (T,) (relative: > 0.1 closes, < −0.1 opens, else no change) →
    the standardized absolute open amount (T,) (1 open, 0 closed), as Octo's `rel2abs_gripper_actions`:
    the state before the first command is the opposite of that command (open when none is given)."""
    closedness = np.asarray(closedness, np.float64)
    step = np.where(closedness < -0.1, 1.0, np.where(closedness > 0.1, 0.0, np.nan))  # 1 open, 0 close, nan hold
    out = np.empty(len(step))
    given = step[~np.isnan(step)]
    state = 1.0 - given[0] if len(given) else 1.0
    for t, s in enumerate(step):
        state = state if np.isnan(s) else s
        out[t] = state
    return out
