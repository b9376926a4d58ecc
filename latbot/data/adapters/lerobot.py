"""`lerobot`: LeRobot dataset directories, format v2.1 (one parquet + one mp4 per episode) and v3.0
(many episodes per parquet / mp4, located through meta/episodes/*.parquet).

Read from the real layout (see docs/data.md): meta/info.json (codebase_version, fps, features,
data_path / video_path templates), per-frame parquet columns (`timestamp`, `frame_index`,
`episode_index`, `index`, `task_index`, the action / state features), tasks (v2.1 meta/tasks.jsonl,
v3.0 meta/tasks.parquet), and camera features of dtype "video" (mp4, AV1 or h264, decoded with PyAV or
decord) or "image" (PNG bytes stored in the parquet). The source's action and state vectors are mapped
into the unified spaces by `arms` (an `ArmLayout` per arm); the default is the common 7-D end-effector
delta action (dx, dy, dz, droll, dpitch, dyaw, gripper) of OXE-derived datasets.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.data.adapters.base import ArmLayout, DatasetAdapter, SourceEpisode, SourceError, resized, unify
from latbot.data.store import Episode

SUPPORTED_VERSIONS = ("v2.1", "v3.0")


class LeRobotAdapter(DatasetAdapter):
    class Config(PluginConfig):
        type: Literal["lerobot"] = "lerobot"
        action_key: str | None = Field("action", description="Parquet column of the action vector (null: none).")
        state_key: str | None = Field("observation.state", description="Parquet column of the state vector.")
        arms: list[ArmLayout] = Field(default_factory=lambda: [ArmLayout()], description="Unified mapping per arm.")
        camera_keys: list[str] | None = Field(None, description="Image/video features to keep (default: all).")
        embodiment: str | None = Field(None, description="Default: info.json's robot_type.")
        video_backend: Literal["pyav", "decord"] = "pyav"

    config: Config

    # -- metadata -----------------------------------------------------------------------------------
    def _info(self, src: Path) -> dict[str, Any]:
        path = src / "meta" / "info.json"
        if not path.is_file():
            raise SourceError(f"{src}: no meta/info.json (not a LeRobot dataset directory)")
        try:
            info = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SourceError(f"{path}: not valid JSON: {e}") from e
        for key in ("codebase_version", "fps", "features", "data_path"):
            if key not in info:
                raise SourceError(f"{path}: missing key '{key}'")
        if info["codebase_version"] not in SUPPORTED_VERSIONS:
            raise SourceError(
                f"{path}: codebase_version {info['codebase_version']!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_VERSIONS)}; convert v2.0 datasets with LeRobot first)"
            )
        return info

    def _camera_features(self, info: dict[str, Any], where: Path) -> dict[str, str]:
        """store camera name → feature key (e.g. "top" → "observation.images.top")."""
        feats = {k: v for k, v in info["features"].items() if v.get("dtype") in ("video", "image")}
        keys = self.config.camera_keys or sorted(feats)
        missing = [k for k in keys if k not in feats]
        if missing:
            raise SourceError(f"{where}/meta/info.json: camera feature(s) {missing} not found; has {sorted(feats)}")
        if not keys:
            raise SourceError(f"{where}/meta/info.json: the dataset has no image or video features")
        return {k.split(".")[-1]: k for k in keys}

    def cameras(self, src: Path) -> list[str]:
        return list(self._camera_features(self._info(src), src))

    # -- episodes -----------------------------------------------------------------------------------
    def episodes(self, src: Path) -> Iterator[SourceEpisode]:
        info = self._info(src)
        version = info["codebase_version"]
        for ep in _episodes_v21(src) if version == "v2.1" else _episodes_v30(src):
            idx = int(ep["episode_index"])
            yield SourceEpisode(
                key=f"episode_{idx:06d}",
                source=f"{src}#episode_{idx}",
                load=lambda ep=ep, **kw: self._load(src, info, ep, **kw),
            )

    def _load(self, src: Path, info: dict, ep: dict, image_size, resize_mode, cameras) -> Episode:
        import pyarrow.parquet as pq

        idx = int(ep["episode_index"])
        chunk = ep.get("data/chunk_index", idx // info.get("chunks_size", 1000))
        data_file = src / info["data_path"].format(
            episode_chunk=chunk, episode_index=idx, chunk_index=chunk, file_index=ep.get("data/file_index", 0)
        )
        where = f"{data_file} (episode {idx})"
        try:
            table = pq.read_table(data_file)
        except (OSError, ValueError) as e:
            raise SourceError(f"{data_file}: cannot read parquet: {e}") from e
        for col in ("episode_index", "frame_index", "timestamp"):
            if col not in table.column_names:
                raise SourceError(f"{data_file}: missing column '{col}'")
        rows = np.flatnonzero(table.column("episode_index").to_numpy() == idx)  # v3.0 files hold many episodes
        if rows.size == 0:
            raise SourceError(f"{where}: no rows for this episode")
        table = table.take(rows)
        order = np.argsort(table.column("frame_index").to_numpy(), kind="stable")
        table = table.take(order)
        length = table.num_rows
        if ep.get("length") is not None and int(ep["length"]) != length:
            raise SourceError(f"{where}: meta says {ep['length']} frames, the parquet has {length}")
        actions = _vector(table, self.config.action_key, where)
        states = _vector(table, self.config.state_key, where)
        traj = unify(actions, states, self.config.arms, where)
        timestamps = table.column("timestamp").to_numpy().astype(np.float64)
        feats = self._camera_features(info, src)
        frames = {}
        for cam in cameras:
            key = feats[cam]
            if info["features"][key]["dtype"] == "image":
                frames[cam] = resized(_parquet_images(table, key, where), image_size, resize_mode)
                continue
            frames[cam] = resized(self._video_frames(src, info, ep, key, timestamps), image_size, resize_mode)
            if len(frames[cam]) != length:
                raise SourceError(f"{where}: camera '{key}' decoded {len(frames[cam])} frames, expected {length}")
        tasks = list(ep.get("tasks") or [])
        subtasks = _task_segments(table, ep.get("task_names", {}))
        instruction = tasks[0] if tasks else (subtasks[0][2] if subtasks else "")
        if len({s[2] for s in subtasks}) < 2:
            subtasks = []
        return Episode(
            key=f"episode_{idx:06d}",
            frames=frames,
            trajectory=traj,
            instruction=instruction,
            task=instruction,
            subtasks=subtasks,
            embodiment=self.config.embodiment or info.get("robot_type") or "unknown",
            fps=float(info["fps"]),
            source=f"{src}#episode_{idx}",
            success=None,
            native_actions=actions,
            native_states=states,
        )

    def _video_frames(self, src: Path, info: dict, ep: dict, key: str, timestamps: np.ndarray):
        from latbot.data.video import decode_frames, decode_frames_decord

        idx = int(ep["episode_index"])
        chunk = ep.get(f"videos/{key}/chunk_index", idx // info.get("chunks_size", 1000))
        file_index = ep.get(f"videos/{key}/file_index", 0)
        path = src / info["video_path"].format(
            episode_chunk=chunk, episode_index=idx, video_key=key, chunk_index=chunk, file_index=file_index
        )
        offset = float(ep.get(f"videos/{key}/from_timestamp", 0.0))
        fps = float(info["fps"])
        if self.config.video_backend == "decord":
            return iter(decode_frames_decord(path, [round((offset + t) * fps) for t in timestamps]))
        start, stop = offset + timestamps[0], offset + timestamps[-1] + 0.5 / fps
        return decode_frames(path, start=start, stop=stop, expected=len(timestamps))


def _vector(table, key: str | None, where: str) -> np.ndarray | None:
    if key is None:
        return None
    if key not in table.column_names:
        raise SourceError(f"{where}: missing column '{key}' (set action_key / state_key, or null if absent)")
    values = np.asarray(table.column(key).to_pylist(), dtype=np.float32)
    if values.ndim == 1:
        values = values[:, None]
    if not np.isfinite(values).all():
        step = int(np.argwhere(~np.isfinite(values))[0][0])
        raise SourceError(f"{where}: column '{key}' has a non-finite value at frame {step}")
    return values


def _parquet_images(table, key: str, where: str) -> Iterator[np.ndarray]:
    from PIL import Image

    if key not in table.column_names:
        raise SourceError(f"{where}: missing image column '{key}'")
    for cell in table.column(key).to_pylist():
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if not data:
            raise SourceError(f"{where}: image column '{key}' holds no embedded bytes")
        yield np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _task_segments(table, names: dict[int, str]) -> list[tuple[int, int, str]]:
    if "task_index" not in table.column_names or not names:
        return []
    ids = table.column("task_index").to_numpy()
    segments, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[start]:
            segments.append((start, i, names.get(int(ids[start]), "")))
            start = i
    return [s for s in segments if s[2]]


def _episodes_v21(src: Path) -> list[dict]:
    eps_path, tasks_path = src / "meta/episodes.jsonl", src / "meta/tasks.jsonl"
    for p in (eps_path, tasks_path):
        if not p.is_file():
            raise SourceError(f"{p}: missing (LeRobot v2.1 keeps episodes and tasks in meta/*.jsonl)")
    names = {}
    for n, line in enumerate(tasks_path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                names[int(row["task_index"])] = row["task"]
            except (json.JSONDecodeError, KeyError) as e:
                raise SourceError(f"{tasks_path}:{n}: bad task record ({e})") from e
    out = []
    for n, line in enumerate(eps_path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                out.append(
                    {
                        "episode_index": row["episode_index"],
                        "tasks": row.get("tasks", []),
                        "length": row.get("length"),
                        "task_names": names,
                    }
                )
            except (json.JSONDecodeError, KeyError) as e:
                raise SourceError(f"{eps_path}:{n}: bad episode record ({e})") from e
    return out


def _episodes_v30(src: Path) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted((src / "meta/episodes").rglob("*.parquet"))
    if not files:
        raise SourceError(f"{src}/meta/episodes: no parquet files (LeRobot v3.0 keeps episode metadata there)")
    tasks_path = src / "meta/tasks.parquet"
    if not tasks_path.is_file():
        raise SourceError(f"{tasks_path}: missing")
    names = _task_names_v30(pq.read_table(tasks_path), tasks_path)
    out = []
    for path in files:
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            for key in ("episode_index", "data/chunk_index", "data/file_index"):
                if key not in row:
                    raise SourceError(f"{path}: missing column '{key}'")
            out.append({**row, "task_names": names})
    return sorted(out, key=lambda r: r["episode_index"])


def _task_names_v30(table, path: Path) -> dict[int, str]:
    cols = table.column_names
    if "task_index" not in cols:
        raise SourceError(f"{path}: missing column 'task_index'")
    # LeRobot writes the task string as the (pandas) index, stored as a column named "task" or "__index_level_0__".
    text_col = next((c for c in ("task", "__index_level_0__") if c in cols), None)
    if text_col is None:
        raise SourceError(f"{path}: no task text column (expected 'task' or the pandas index)")
    return {
        int(i): str(t)
        for i, t in zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist(), strict=True)
    }
