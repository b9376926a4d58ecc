"""Native ↔ unified conversions of the embodiments LatBot's simulators and adapters produce, so a policy
trained in the unified spaces reads a robot's own state and answers in its own action units.

Each is the exact inverse of what the store writer did (latbot.sim.generate for MetaWorld's Sawyer,
latbot.data.adapters.libero_hdf5 for LIBERO's Franka Panda); a single arm fills the RIGHT slot. Add an
embodiment with `register(Embodiment(...))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from latbot.data import rotations as rot
from latbot.data.adapters.libero_hdf5 import PANDA_GRIPPER_OPEN_WIDTH
from latbot.data.spaces import (
    ACTION_GRIPPER,
    ACTION_POS,
    ACTION_ROT,
    STATE_DIM,
    STATE_GRIPPER,
    STATE_POS,
    STATE_QUAT,
)
from latbot.errors import LatBotError

R = "right"


@dataclass(frozen=True)
class Embodiment:
    name: str
    native_state_dim: int
    native_action_dim: int
    state_to_unified: Callable[[np.ndarray], np.ndarray]  # (S,) → (46,)
    actions_to_native: Callable[[np.ndarray], np.ndarray]  # (H, 44) → (H, A)


def _gripper_command(g: np.ndarray) -> np.ndarray:
    """Unified gripper (0 open … 1 closed) → the ±1 command both simulators take."""
    return np.where(g > 0.5, 1.0, -1.0)


def _sawyer_state(s: np.ndarray) -> np.ndarray:
    out = np.zeros(STATE_DIM, np.float32)
    out[STATE_POS[R]] = s[:3]
    out[STATE_GRIPPER[R]] = 1.0 - np.clip(s[3], 0.0, 1.0)
    return out


def _sawyer_actions(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[:, ACTION_POS[R]], _gripper_command(a[:, ACTION_GRIPPER[R]])[:, None]], 1)


def _panda_state(s: np.ndarray) -> np.ndarray:
    out = np.zeros(STATE_DIM, np.float32)
    out[STATE_POS[R]] = s[:3]
    out[STATE_QUAT[R]] = rot.matrix_to_quat(rot.axis_angle_to_matrix(np.asarray(s[3:6], np.float64)))
    out[STATE_GRIPPER[R]] = 1.0 - np.clip((s[6] - s[7]) / PANDA_GRIPPER_OPEN_WIDTH, 0.0, 1.0)
    return out


def _panda_actions(a: np.ndarray) -> np.ndarray:
    axis_angle = rot.matrix_to_axis_angle(rot.euler_to_matrix(np.asarray(a[:, ACTION_ROT[R]], np.float64)))
    grip = _gripper_command(a[:, ACTION_GRIPPER[R]])[:, None]
    return np.concatenate([a[:, ACTION_POS[R]], axis_angle, grip], 1)


EMBODIMENTS: dict[str, Embodiment] = {}


def register(embodiment: Embodiment) -> None:
    EMBODIMENTS[embodiment.name] = embodiment


register(Embodiment("sawyer", 4, 4, _sawyer_state, _sawyer_actions))
register(Embodiment("franka_panda", 8, 7, _panda_state, _panda_actions))


def get(name: str) -> Embodiment:
    if name not in EMBODIMENTS:
        raise LatBotError(
            f"embodiment '{name}' has no native conversion (known: {', '.join(sorted(EMBODIMENTS))}); call "
            "predict(..., space='unified') or register one with latbot.policy.embodiments.register"
        )
    return EMBODIMENTS[name]
