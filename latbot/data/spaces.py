"""The unified action (44-D) and state (46-D) spaces of the paper (supp. 6.1), defined once.

Action, per step (deltas between consecutive steps)::

    [0:7]   left arm / hand:  dx, dy, dz, droll, dpitch, dyaw, gripper
    [7:14]  right arm / hand: dx, dy, dz, droll, dpitch, dyaw, gripper
    [14:44] fingertip position deltas, 10 tips × xyz: left thumb, index, middle, ring, little, then right

State, per step (absolute)::

    [0:8]   left:  x, y, z, qx, qy, qz, qw, gripper
    [8:16]  right: x, y, z, qx, qy, qz, qw, gripper
    [16:46] fingertip positions, 10 tips × xyz (same order)

Every sample carries validity masks, (44,) and (46,) booleans, saying which dimensions its embodiment
fills; every loss over actions or states uses them. Conventions (docs/data.md): a single-arm robot fills
the RIGHT slot; rotations per `latbot.data.rotations`; gripper in [0, 1] with 0 = open, 1 = closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latbot.data import rotations as rot

ACTION_DIM = 44
STATE_DIM = 46
ARMS = ("left", "right")
FINGERS = ("thumb", "index", "middle", "ring", "little")

# -- action layout ------------------------------------------------------------------------------------
ACTION_ARM = {"left": slice(0, 7), "right": slice(7, 14)}
ACTION_POS = {arm: slice(s.start, s.start + 3) for arm, s in ACTION_ARM.items()}
ACTION_ROT = {arm: slice(s.start + 3, s.start + 6) for arm, s in ACTION_ARM.items()}
ACTION_GRIPPER = {arm: s.start + 6 for arm, s in ACTION_ARM.items()}
GRIPPER_DIMS = [ACTION_GRIPPER[arm] for arm in ARMS]  # (6, 13): the grippers' open/close dims, left then right
ACTION_TIPS = {"left": slice(14, 29), "right": slice(29, 44)}

# -- state layout -------------------------------------------------------------------------------------
STATE_ARM = {"left": slice(0, 8), "right": slice(8, 16)}
STATE_POS = {arm: slice(s.start, s.start + 3) for arm, s in STATE_ARM.items()}
STATE_QUAT = {arm: slice(s.start + 3, s.start + 7) for arm, s in STATE_ARM.items()}
STATE_GRIPPER = {arm: s.start + 7 for arm, s in STATE_ARM.items()}
STATE_TIPS = {"left": slice(16, 31), "right": slice(31, 46)}

# Named slices for logging and diagnostics ("action MSE per unified slice").
ACTION_SLICES: dict[str, slice] = {
    **{f"{arm}_pos": ACTION_POS[arm] for arm in ARMS},
    **{f"{arm}_rot": ACTION_ROT[arm] for arm in ARMS},
    **{f"{arm}_gripper": slice(ACTION_GRIPPER[arm], ACTION_GRIPPER[arm] + 1) for arm in ARMS},
    **{f"{arm}_fingertips": ACTION_TIPS[arm] for arm in ARMS},
}
STATE_SLICES: dict[str, slice] = {
    **{f"{arm}_pos": STATE_POS[arm] for arm in ARMS},
    **{f"{arm}_quat": STATE_QUAT[arm] for arm in ARMS},
    **{f"{arm}_gripper": slice(STATE_GRIPPER[arm], STATE_GRIPPER[arm] + 1) for arm in ARMS},
    **{f"{arm}_fingertips": STATE_TIPS[arm] for arm in ARMS},
}

# A hand's "gripper" value from the thumb-tip–index-tip distance d (metres):
# g = clip((D_OPEN − d) / (D_OPEN − D_CLOSED), 0, 1): 1 when the tips touch (pinch), 0 when spread.
HAND_GRIP_CLOSED_M = 0.02
HAND_GRIP_OPEN_M = 0.10


@dataclass
class UnifiedTrajectory:
    """One episode in the unified spaces: actions (T, 44), states (T, 46) and their validity masks."""

    actions: np.ndarray
    states: np.ndarray
    action_mask: np.ndarray
    state_mask: np.ndarray

    @classmethod
    def empty(cls, length: int) -> UnifiedTrajectory:
        return cls(
            np.zeros((length, ACTION_DIM), np.float32),
            np.zeros((length, STATE_DIM), np.float32),
            np.zeros(ACTION_DIM, bool),
            np.zeros(STATE_DIM, bool),
        )

    def check(self, where: str) -> None:
        """Shapes and finiteness, with an error naming `where` (file / key)."""
        t = len(self.actions)
        if self.actions.shape != (t, ACTION_DIM) or self.states.shape != (t, STATE_DIM):
            raise ValueError(f"{where}: unified arrays have shapes {self.actions.shape}, {self.states.shape}")
        for name, arr, mask in (("action", self.actions, self.action_mask), ("state", self.states, self.state_mask)):
            bad = ~np.isfinite(arr[:, mask])
            if bad.any():
                step, dim = np.argwhere(bad)[0]
                raise ValueError(
                    f"{where}: non-finite {name} value at step {step} (unified dim {np.flatnonzero(mask)[dim]})"
                )


def deltas(x: np.ndarray) -> np.ndarray:
    """Per-step change x[t+1] − x[t]; the last step repeats no motion (0)."""
    out = np.zeros_like(x)
    out[:-1] = x[1:] - x[:-1]
    return out


def relative_euler(rotations: np.ndarray) -> np.ndarray:
    """(T, 3, 3) orientations → (T, 3) Euler angles of R_{t+1} R_tᵀ; the last step is 0."""
    out = np.zeros((len(rotations), 3))
    if len(rotations) > 1:
        out[:-1] = rot.matrix_to_euler(rot.relative_rotation(rotations[:-1], rotations[1:]))
    return out


def fill_arm(
    traj: UnifiedTrajectory,
    arm: str,
    *,
    position: np.ndarray | None = None,
    rotation: np.ndarray | None = None,
    gripper: np.ndarray | None = None,
    action_position: np.ndarray | None = None,
    action_rotation: np.ndarray | None = None,
    action_gripper: np.ndarray | None = None,
) -> None:
    """Fill one arm slot. States: `position` (T, 3), `rotation` (T, 3, 3), `gripper` (T,) in [0, 1].
    Actions default to the per-step deltas of the states (Euler of the relative rotation, gripper of the
    next step); pass `action_*` to use commanded deltas instead (already in the unified conventions)."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    a, s = traj.actions, traj.states
    if position is not None:
        s[:, STATE_POS[arm]] = position
        traj.state_mask[STATE_POS[arm]] = True
    if rotation is not None:
        s[:, STATE_QUAT[arm]] = rot.matrix_to_quat(rotation)
        traj.state_mask[STATE_QUAT[arm]] = True
    if gripper is not None:
        s[:, STATE_GRIPPER[arm]] = gripper
        traj.state_mask[STATE_GRIPPER[arm]] = True
    if action_position is None and position is not None:
        action_position = deltas(position)
    if action_rotation is None and rotation is not None:
        action_rotation = relative_euler(rotation)
    if action_gripper is None and gripper is not None:
        action_gripper = np.concatenate([gripper[1:], gripper[-1:]])  # the gripper command reaches the next state
    for value, idx in ((action_position, ACTION_POS[arm]), (action_rotation, ACTION_ROT[arm])):
        if value is not None:
            a[:, idx] = value
            traj.action_mask[idx] = True
    if action_gripper is not None:
        a[:, ACTION_GRIPPER[arm]] = action_gripper
        traj.action_mask[ACTION_GRIPPER[arm]] = True


def fill_fingertips(traj: UnifiedTrajectory, arm: str, tips: np.ndarray, tip_deltas: np.ndarray | None = None) -> None:
    """`tips` (T, 5, 3) in FINGERS order → state positions; actions are `tip_deltas` (T, 5, 3) when given
    (e.g. both ends in one camera frame), else the per-step differences of `tips`."""
    flat = tips.reshape(len(tips), 15)
    traj.states[:, STATE_TIPS[arm]] = flat
    traj.actions[:, ACTION_TIPS[arm]] = deltas(flat) if tip_deltas is None else tip_deltas.reshape(len(tips), 15)
    traj.state_mask[STATE_TIPS[arm]] = True
    traj.action_mask[ACTION_TIPS[arm]] = True


def hand_gripper(thumb_tip: np.ndarray, index_tip: np.ndarray) -> np.ndarray:
    """(T, 3), (T, 3) → (T,) in [0, 1]; see HAND_GRIP_CLOSED_M / HAND_GRIP_OPEN_M."""
    d = np.linalg.norm(thumb_tip - index_tip, axis=-1)
    return np.clip((HAND_GRIP_OPEN_M - d) / (HAND_GRIP_OPEN_M - HAND_GRIP_CLOSED_M), 0.0, 1.0)


def mask_to_str(mask: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in mask)


def mask_from_str(text: str, dim: int) -> np.ndarray:
    if len(text) != dim or set(text) - {"0", "1"}:
        raise ValueError(f"a validity mask must be {dim} characters of 0/1, got {text!r}")
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")
