"""The `datasets` plugin contract and the mapping from a source's own vectors into the unified spaces.

An adapter is built from its `Config` and lists the episodes of a source directory or file::

    adapter = registry.build("datasets", LeRobotAdapter.Config())
    cameras = adapter.cameras(src)                  # store camera names the source provides
    for item in adapter.episodes(src):              # cheap: nothing decoded yet
        if not store.has_key(item.key):             # resume: skip what is already committed
            store.append(item.load(image_size=(224, 224), resize_mode="pad", cameras=cameras))

`load` decodes and resizes frame by frame (a 1080p episode never sits in memory at full size) and raises
`SourceError` naming the file and the key when the source is malformed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig, Section
from latbot.data import rotations as rot
from latbot.data.spaces import UnifiedTrajectory, fill_arm
from latbot.data.store import Episode
from latbot.errors import LatBotError

RotationFormat = Literal["euler", "axis_angle", "quat_xyzw", "quat_wxyz", "rot6d"]


class SourceError(LatBotError):
    """A source file is malformed: the message names the file and the key, and what was expected."""


@dataclass
class SourceEpisode:
    """An episode of a source, not yet decoded: `load(...)` reads it into an `Episode`."""

    key: str
    source: str
    load: Callable[..., Episode]


class DatasetAdapter:
    """Base of `datasets` plugins."""

    class Config(PluginConfig):
        pass

    def __init__(self, config: PluginConfig):
        self.config = config

    def cameras(self, src: Path) -> list[str]:
        raise NotImplementedError

    def episodes(self, src: Path) -> Iterator[SourceEpisode]:
        raise NotImplementedError


class ArmLayout(Section):
    """Where one arm's end-effector quantities sit in a source's own action / state vectors.

    Index ranges are [start, stop). Actions that are absolute targets (`actions_are_deltas: false`) are
    turned into per-step deltas like states are. Gripper values are mapped linearly so that
    `gripper_open` → 0 and `gripper_closed` → 1, then clipped to [0, 1]; the state's gripper uses
    `state_gripper_open` / `state_gripper_closed` when a source records it on another scale or with the
    other polarity (e.g. RT-1: action 1 = open, state `gripper_closed` 1 = closed)."""

    arm: Literal["left", "right"] = Field("right", description="Unified slot; single-arm robots use right.")
    action_position: tuple[int, int] | None = (0, 3)
    action_rotation: tuple[int, int] | None = (3, 6)
    action_rotation_format: RotationFormat = "euler"
    action_gripper: int | None = 6
    actions_are_deltas: bool = True
    state_position: tuple[int, int] | None = None
    state_rotation: tuple[int, int] | None = None
    state_rotation_format: RotationFormat = "quat_xyzw"
    state_gripper: int | None = None
    gripper_open: float = 0.0
    gripper_closed: float = 1.0
    state_gripper_open: float | None = Field(None, description="State value meaning open (default: gripper_open).")
    state_gripper_closed: float | None = Field(
        None, description="State value meaning closed (default: gripper_closed)."
    )


def to_matrix(values: np.ndarray, fmt: str) -> np.ndarray:
    """(T, k) rotations in `fmt` → (T, 3, 3)."""
    values = np.asarray(values, np.float64)
    if fmt == "euler":
        return rot.euler_to_matrix(values)
    if fmt == "axis_angle":
        return rot.axis_angle_to_matrix(values)
    if fmt == "quat_xyzw":
        return rot.quat_to_matrix(values)
    if fmt == "quat_wxyz":
        return rot.quat_to_matrix(np.roll(values, -1, axis=-1))
    if fmt == "rot6d":
        return rot.rot6d_to_matrix(values)
    raise ValueError(f"unknown rotation format {fmt!r}")


def _gripper(values: np.ndarray, open_value: float, closed_value: float) -> np.ndarray:
    span = closed_value - open_value
    return np.clip((values - open_value) / (span if span else 1.0), 0.0, 1.0)


def _cols(arr: np.ndarray | None, rng: tuple[int, int] | None, where: str, what: str) -> np.ndarray | None:
    if rng is None or arr is None:
        return None
    if arr.ndim != 2 or rng[1] > arr.shape[1] or rng[0] >= rng[1]:
        raise SourceError(f"{where}: {what} columns {list(rng)} do not fit a vector of shape {arr.shape[1:]}")
    return arr[:, rng[0] : rng[1]].astype(np.float64)


def _col(arr: np.ndarray, index: int, where: str, what: str) -> np.ndarray:
    if arr.ndim != 2 or not 0 <= index < arr.shape[1]:
        raise SourceError(f"{where}: {what} column {index} does not fit a vector of shape {arr.shape[1:]}")
    return arr[:, index].astype(np.float64)


def unify(
    actions: np.ndarray | None, states: np.ndarray | None, layouts: list[ArmLayout], where: str
) -> UnifiedTrajectory:
    """Map a source's own action (T, A) and state (T, S) vectors into the unified spaces via `layouts`."""
    length = len(actions) if actions is not None else len(states)
    traj = UnifiedTrajectory.empty(length)
    for lay in layouts:
        kw: dict[str, np.ndarray | None] = {}
        kw["position"] = _cols(states, lay.state_position, where, "state position")
        s_rot = _cols(states, lay.state_rotation, where, "state rotation")
        kw["rotation"] = to_matrix(s_rot, lay.state_rotation_format) if s_rot is not None else None
        if lay.state_gripper is not None and states is not None:
            lo = lay.gripper_open if lay.state_gripper_open is None else lay.state_gripper_open
            hi = lay.gripper_closed if lay.state_gripper_closed is None else lay.state_gripper_closed
            kw["gripper"] = _gripper(_col(states, lay.state_gripper, where, "state gripper"), lo, hi)
        a_pos = _cols(actions, lay.action_position, where, "action position")
        a_rot = _cols(actions, lay.action_rotation, where, "action rotation")
        a_rot_m = to_matrix(a_rot, lay.action_rotation_format) if a_rot is not None else None
        if lay.actions_are_deltas:
            kw["action_position"] = a_pos
            kw["action_rotation"] = rot.matrix_to_euler(a_rot_m) if a_rot_m is not None else None
        else:
            from latbot.data.spaces import deltas, relative_euler

            kw["action_position"] = deltas(a_pos) if a_pos is not None else None
            kw["action_rotation"] = relative_euler(a_rot_m) if a_rot_m is not None else None
        if lay.action_gripper is not None and actions is not None:
            values = _col(actions, lay.action_gripper, where, "action gripper")
            kw["action_gripper"] = _gripper(values, lay.gripper_open, lay.gripper_closed)
        fill_arm(traj, lay.arm, **kw)
    return traj


def resized(frames: Iterator[np.ndarray], size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize a stream of frames once, into one (T, H, W, 3) uint8 array."""
    from latbot.data.video import resize_frame

    out = [resize_frame(np.ascontiguousarray(f), size, mode) for f in frames]
    return np.stack(out) if out else np.zeros((0, *size, 3), np.uint8)
