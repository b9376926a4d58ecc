"""`egodex`: Apple's EgoDex human-hand manipulation data (`<split>/<task>/<n>.hdf5` + `<n>.mp4`).

Layout read (apple/ml-egodex): `/transforms/<joint>` (N, 4, 4) poses in the ARKit world frame for 68
joints, `/transforms/camera` (N, 4, 4) the camera pose (OpenCV axes), optional `/confidences/<joint>`,
root attrs `llm_description`, `llm_description2`, `which_llm_description`, `llm_type`; the paired mp4 is
the 30 Hz 1080p egocentric video.

Unified mapping (docs/data.md): both hands fill both slots. Every pose is expressed in the camera frame
of its own time step (the head moves; this keeps the hands as the camera sees them). States: wrist
position, wrist orientation (the 6D of the rotation, orthonormalised, as a quaternion), the hand's
gripper value from the thumb–index distance (`spaces.hand_gripper`), and the five fingertip positions.
Actions between t and t+1 are both expressed in the camera frame of t: wrist and fingertip position
deltas, the Euler angles of the relative wrist rotation, and the next step's gripper value.
Language follows the official loader: for `llm_type == "reversible"`, `which_llm_description` picks
`llm_description` ("1") or `llm_description2`; otherwise `llm_description`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.data import rotations as rot
from latbot.data.adapters.base import DatasetAdapter, SourceEpisode, SourceError, resized
from latbot.data.spaces import FINGERS, UnifiedTrajectory, fill_arm, fill_fingertips, hand_gripper
from latbot.data.store import Episode
from latbot.data.video import decode_frames

TIP_JOINTS = {
    "thumb": "ThumbTip",
    "index": "IndexFingerTip",
    "middle": "MiddleFingerTip",
    "ring": "RingFingerTip",
    "little": "LittleFingerTip",
}


class EgoDexAdapter(DatasetAdapter):
    class Config(PluginConfig):
        type: Literal["egodex"] = "egodex"
        fps: float = Field(30.0, gt=0, description="EgoDex records video and poses at 30 Hz.")
        embodiment: str = "human_hands"
        camera: str = Field("egocentric", description="Store camera name of the mp4 view.")

    config: Config

    def cameras(self, src: Path) -> list[str]:
        return [self.config.camera]

    def episodes(self, src: Path) -> Iterator[SourceEpisode]:
        files = sorted(src.rglob("*.hdf5")) if src.is_dir() else [src]
        if not files:
            raise SourceError(f"{src}: no .hdf5 files found")
        for path in files:
            key = str(path.relative_to(src) if src.is_dir() else path.name)
            yield SourceEpisode(
                key=key, source=str(path), load=lambda path=path, key=key, **kw: self._load(path, key, **kw)
            )

    def _load(self, path: Path, key: str, image_size, resize_mode, cameras) -> Episode:
        import h5py

        video = path.with_suffix(".mp4")
        if not video.is_file():
            raise SourceError(f"{path}: the paired video {video.name} is missing")
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise SourceError(f"{path}: cannot open as HDF5: {e}") from e
        with f:
            camera = _pose(f, "camera", path)
            n = len(camera)
            wrists = {side: _pose(f, f"{side}Hand", path, n) for side in ("left", "right")}
            tips = {
                side: np.stack([_pose(f, f"{side}{TIP_JOINTS[t]}", path, n) for t in FINGERS], 1)
                for side in ("left", "right")
            }
            instruction = _instruction(dict(f.attrs), path)
        world_to_cam = np.linalg.inv(camera)  # (N, 4, 4)
        traj = UnifiedTrajectory.empty(n)
        for side in ("left", "right"):
            _fill_hand(traj, side, wrists[side], tips[side], world_to_cam)
        # step t+1's camera frame → step t's (actions are in each step's camera; clips sum them over a stride)
        r = world_to_cam[:, :3, :3]
        motion = np.repeat(np.eye(3)[None], n, 0)
        motion[:-1] = r[:-1] @ np.swapaxes(r[1:], -1, -2)
        frames = resized(decode_frames(video, expected=n), image_size, resize_mode)
        if len(frames) < n:
            raise SourceError(f"{video}: {len(frames)} frames but {n} poses")
        return Episode(
            key=key,
            frames={cameras[0]: frames[:n]},
            trajectory=traj,
            instruction=instruction,
            task=path.parent.name,
            embodiment=self.config.embodiment,
            fps=self.config.fps,
            source=str(path),
            success=None,
            frame_motion=motion,
        )


def _pose(f, joint: str, path: Path, n: int | None = None) -> np.ndarray:
    key = f"transforms/{joint}"
    if key not in f:
        raise SourceError(f"{path}: missing dataset '/{key}'")
    node = f[key]
    if not hasattr(node, "dtype") or node.dtype.kind not in "fiu":
        got = f"dtype {node.dtype}" if hasattr(node, "dtype") else "a group"
        raise SourceError(f"{path}:/{key}: expected numeric (N, 4, 4) poses, got {got}")
    data = node[()].astype(np.float64)
    if data.ndim != 3 or data.shape[1:] != (4, 4) or (n is not None and len(data) != n):
        raise SourceError(f"{path}:/{key}: expected ({n or 'N'}, 4, 4) poses, got {data.shape}")
    if not np.isfinite(data).all():
        raise SourceError(f"{path}:/{key}: non-finite value at frame {int(np.argwhere(~np.isfinite(data))[0][0])}")
    return data


def _to_camera(w2c: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, ..., 3) in the world → in the camera of the same step; w2c (N, 4, 4)."""
    flat = points.reshape(len(points), -1, 3)  # (N, P, 3)
    out = np.einsum("nij,npj->npi", w2c[:, :3, :3], flat) + w2c[:, None, :3, 3]
    return out.reshape(points.shape)


def _fill_hand(traj: UnifiedTrajectory, side: str, wrist: np.ndarray, tips: np.ndarray, w2c: np.ndarray) -> None:
    """wrist (N, 4, 4) and tips (N, 5, 4, 4) world poses; w2c (N, 4, 4) world → camera of each step."""
    n = len(wrist)
    nxt = np.minimum(np.arange(n) + 1, n - 1)  # the last step repeats itself: no motion
    # The paper's wrist orientation is 6D: orthonormalise through it, then express it in the camera.
    r_wrist = rot.rot6d_to_matrix(rot.matrix_to_rot6d(wrist[:, :3, :3]))
    rot_now = w2c[:, :3, :3] @ r_wrist  # (N, 3, 3) in the camera of step t
    rot_next = w2c[:, :3, :3] @ r_wrist[nxt]  # step t+1, also in the camera of step t
    wrist_now, wrist_next = _to_camera(w2c, wrist[:, :3, 3]), _to_camera(w2c, wrist[nxt, :3, 3])
    tips_now, tips_next = _to_camera(w2c, tips[:, :, :3, 3]), _to_camera(w2c, tips[nxt, :, :3, 3])  # (N, 5, 3)
    grip = hand_gripper(tips_now[:, 0], tips_now[:, 1])
    fill_arm(
        traj,
        side,
        position=wrist_now,
        rotation=rot_now,
        gripper=grip,
        action_position=wrist_next - wrist_now,
        action_rotation=rot.matrix_to_euler(rot.relative_rotation(rot_now, rot_next)),
        action_gripper=grip[nxt],
    )
    fill_fingertips(traj, side, tips_now, tips_next - tips_now)


def _instruction(attrs: dict, path: Path) -> str:
    def text(key: str) -> str | None:
        v = attrs.get(key)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if v is not None and not isinstance(v, str):
            raise SourceError(f"{path}: root attribute '{key}' must be a string, got {type(v).__name__} {v!r:.60}")
        return v.strip() if v is not None else None

    key = "llm_description"
    if text("llm_type") == "reversible" and text("which_llm_description") == "2":
        key = "llm_description2"
    value = text(key)
    if not value:
        raise SourceError(f"{path}: root attribute '{key}' is missing or empty (no language description)")
    return value
