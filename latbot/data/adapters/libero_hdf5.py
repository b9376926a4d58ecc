"""`libero_hdf5`: LIBERO / robomimic demonstration files (`<task>_demo.hdf5`, one file per task).

Layout read (LIBERO's create_dataset.py; robomimic)::

    /data                       attrs: problem_info (JSON with "language_instruction"), env_name, ...
    /data/demo_<i>/actions      (T, 7)  delta EEF: dx, dy, dz, axis-angle (3), gripper (-1 open, +1 close)
    /data/demo_<i>/robot_states (T, 9)  gripper qpos (2), eef pos (3), eef quat (4, x y z w)
    /data/demo_<i>/obs/agentview_rgb, /obs/eye_in_hand_rgb   uint8 (T, H, W, 3), rendered upside down
    /data/demo_<i>/dones        (T,)    last = 1 for a successful demo

Native actions (7) and states (8: eef pos, axis-angle, gripper qpos — openpi's LIBERO state, also what
`latbot.sim.libero` observes) are kept, and mapped into the unified spaces by the `franka_panda`
embodiment (latbot/data/embodiments/franka_panda.py), the same object a policy uses to answer in native
units. Images are rotated 180° to be upright, then resized.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.data import embodiments
from latbot.data import rotations as rot
from latbot.data.adapters.base import DatasetAdapter, SourceEpisode, SourceError, resized
from latbot.data.store import Episode

CAMERAS = {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}


class LiberoHdf5Adapter(DatasetAdapter):
    class Config(PluginConfig):
        type: Literal["libero_hdf5"] = "libero_hdf5"
        cameras: list[Literal["agentview", "wrist"]] = Field(["agentview", "wrist"], description="Cameras to keep.")
        fps: float = Field(20.0, gt=0, description="LIBERO's control frequency.")
        embodiment: str = Field(
            "franka_panda", description="Registered embodiment (native 8-D state, 7-D action) the files come from."
        )

    config: Config

    def cameras(self, src: Path) -> list[str]:
        return list(self.config.cameras)

    def episodes(self, src: Path) -> Iterator[SourceEpisode]:
        import h5py

        files = sorted(src.rglob("*.hdf5")) if src.is_dir() else [src]
        if not files:
            raise SourceError(f"{src}: no .hdf5 files found")
        for path in files:
            try:
                with h5py.File(path, "r") as f:
                    if "data" not in f:
                        raise SourceError(f"{path}: missing group '/data' (not a LIBERO/robomimic demo file)")
                    demos = sorted(
                        f["data"].keys(), key=lambda k: int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else 0
                    )
            except OSError as e:
                raise SourceError(f"{path}: cannot open as HDF5: {e}") from e
            for demo in demos:
                yield SourceEpisode(
                    key=f"{path.name}/{demo}",
                    source=f"{path}#/data/{demo}",
                    load=lambda path=path, demo=demo, **kw: self._load(path, demo, **kw),
                )

    def _load(
        self, path: Path, demo: str, image_size: tuple[int, int], resize_mode: str, cameras: list[str]
    ) -> Episode:
        import h5py

        with h5py.File(path, "r") as f:
            group = f["data"]
            g = group[demo]
            where = f"{path}:/data/{demo}"
            actions = _read(g, "actions", where, ndim=2, width=7)
            length = len(actions)
            robot = _read(g, "robot_states", where, ndim=2, width=9, length=length) if "robot_states" in g else None
            frames = {}
            for cam in cameras:
                key = f"obs/{CAMERAS[cam]}"
                data = _read(g, key, where, ndim=4, length=length)
                if data.dtype != np.uint8 or data.shape[-1] != 3:
                    raise SourceError(
                        f"{where}/{key}: expected uint8 (T, H, W, 3) images, got {data.dtype}{data.shape}"
                    )
                frames[cam] = resized((img[::-1, ::-1] for img in data), image_size, resize_mode)
            instruction = _instruction(group, path)
            dones = g["dones"][()] if "dones" in g else None
        native_states = None
        if robot is not None:  # gripper qpos (2), eef pos (3), eef quat → eef pos, axis-angle, gripper qpos
            axis_angle = rot.matrix_to_axis_angle(rot.quat_to_matrix(robot[:, 5:9]))
            native_states = np.concatenate([robot[:, 2:5], axis_angle, robot[:, 0:2]], axis=1)
        traj = embodiments.get(self.config.embodiment).trajectory(native_states, actions, where)
        task = re.sub(r"_demo$", "", path.stem)
        return Episode(
            key=f"{path.name}/{demo}",
            frames=frames,
            trajectory=traj,
            instruction=instruction,
            task=task,
            embodiment=self.config.embodiment,
            fps=self.config.fps,
            source=f"{path}#/data/{demo}",
            success=bool(dones[-1]) if dones is not None and len(dones) else None,
            native_actions=actions.astype(np.float32),
            native_states=native_states,
        )


def _read(g, key: str, where: str, ndim: int, width: int | None = None, length: int | None = None) -> np.ndarray:
    if key not in g:
        raise SourceError(f"{where}: missing dataset '{key}'")
    data = g[key][()]
    if data.ndim != ndim or (width is not None and data.shape[-1] != width):
        want = f"{ndim}-D" + (f" with last dimension {width}" if width else "")
        raise SourceError(f"{where}/{key}: expected {want}, got shape {data.shape}")
    if length is not None and len(data) != length:
        raise SourceError(f"{where}/{key}: has {len(data)} steps, but 'actions' has {length}")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        step = int(np.argwhere(~np.isfinite(data))[0][0])
        raise SourceError(f"{where}/{key}: non-finite value at step {step}")
    return data


def _instruction(group, path: Path) -> str:
    info = group.attrs.get("problem_info")
    if info is not None:
        try:
            text = json.loads(info if isinstance(info, str) else info.decode())["language_instruction"]
            text = "".join(text) if isinstance(text, list) else str(text)
            return text.strip().strip('"')
        except (ValueError, KeyError, AttributeError) as e:
            raise SourceError(f"{path}:/data attrs['problem_info']: no readable language_instruction ({e})") from e
    # LIBERO file names spell the task: "pick_up_the_black_bowl_..._demo.hdf5"
    name = re.sub(r"_demo$", "", path.stem)
    name = re.sub(r"^([A-Z_]+SCENE\d+_)", "", name)
    return name.replace("_", " ")
