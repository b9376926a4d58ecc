"""`lerobot`: LeRobot dataset directories, format v2.1 (one parquet + one mp4 per episode) and v3.0
(many episodes per parquet / mp4, located through meta/episodes/*.parquet).

Read from the real layout (see docs/data.md): meta/info.json (codebase_version, fps, features,
data_path / video_path templates), per-frame parquet columns (`timestamp`, `frame_index`,
`episode_index`, `index`, `task_index`, the action / state features), tasks (v2.1 meta/tasks.jsonl,
v3.0 meta/tasks.parquet), and camera features of dtype "video" (mp4, AV1 or h264, decoded with PyAV or
decord) or "image" (PNG bytes stored in the parquet). The source's action and state vectors are mapped
into the unified spaces by `arms` (an `ArmLayout` per arm), usually from a preset (`latbot data presets`),
or, with `use_embodiment: true`, by the registered embodiment `embodiment` itself (its native layout:
the same object a policy answers through, so store and policy cannot disagree).
Without `arms`, the state is placed from its feature names where they are unambiguous
(`latbot.data.adapters.names`) and the action is taken as the 7-D end-effector delta (dx, dy, dz, droll,
dpitch, dyaw, gripper 1 = closed); both are reported in `notes`, with every field that was not placed.
`action_key` / `state_key` may list several features (AgiBot's per-part vectors), concatenated in order.
"""

from __future__ import annotations

import io
import json
import os
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
        action_key: str | list[str] | None = Field(
            "action", description="Parquet column(s) of the action vector, concatenated (null: none)."
        )
        state_key: str | list[str] | None = Field(
            "observation.state", description="Parquet column(s) of the state vector, concatenated (null: none)."
        )
        arms: list[ArmLayout] | None = Field(
            None, description="Unified mapping per arm (null: state from feature names, 7-D EEF delta action)."
        )
        camera_keys: list[str] | None = Field(None, description="Image/video features to keep (default: all).")
        embodiment: str | None = Field(None, description="Default: info.json's robot_type.")
        use_embodiment: bool = Field(
            False,
            description="Map action and state through the registered embodiment `embodiment` (its native layout; "
            "`latbot plugins list --kind embodiments`) instead of `arms`.",
        )
        video_backend: Literal["pyav", "decord"] = "pyav"

    config: Config

    def __init__(self, config: PluginConfig):
        super().__init__(config)
        self.notes: list[str] = []  # what the default layout assumed or could not place (shown by convert)

    # -- metadata -----------------------------------------------------------------------------------
    def _info(self, src: Path) -> dict[str, Any]:
        path = src / "meta" / "info.json"
        if not path.is_file():
            raise SourceError(f"{src}: no meta/info.json (not a LeRobot dataset directory)")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise SourceError(f"{path}: not valid JSON: {e}") from e
        if not isinstance(info, dict):
            raise SourceError(f"{path}: expected a JSON object, got {type(info).__name__}")
        for key in ("codebase_version", "fps", "features", "data_path"):
            if key not in info:
                raise SourceError(f"{path}: missing key '{key}'")
        if info["codebase_version"] not in SUPPORTED_VERSIONS:
            raise SourceError(
                f"{path}: codebase_version {info['codebase_version']!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_VERSIONS)}; convert v2.0 datasets with LeRobot first)"
            )
        _check_info(info, path)
        return info

    def _camera_features(self, info: dict[str, Any], where: Path) -> dict[str, str]:
        """store camera name → feature key (e.g. "top" → "observation.images.top")."""
        feats = {k: v for k, v in info["features"].items() if v["dtype"] in ("video", "image")}
        keys = self.config.camera_keys or sorted(feats)
        missing = [k for k in keys if k not in feats]
        if missing:
            raise SourceError(f"{where}/meta/info.json: camera feature(s) {missing} not found; has {sorted(feats)}")
        if not keys:
            raise SourceError(f"{where}/meta/info.json: the dataset has no image or video features")
        return {k.split(".")[-1]: k for k in keys}

    def cameras(self, src: Path) -> list[str]:
        return list(self._camera_features(self._info(src), src))

    def describe(self, src: Path) -> dict[str, Any]:
        """What a preset checks a source against: fps, robot type, and each vector feature's shape and names."""
        from latbot.data.adapters.names import feature_names

        info = self._info(src)
        vectors = {
            k: {"shape": v.get("shape"), "names": feature_names(v)}
            for k, v in info["features"].items()
            if v["dtype"] not in ("video", "image", "string")
        }
        return {"fps": info["fps"], "robot_type": info.get("robot_type"), "features": vectors}

    def layouts(self, info: dict[str, Any]) -> list[ArmLayout]:
        """The arms to map: the configured ones, or the default (see the module docstring), noting in
        `self.notes` what the default assumed and which fields it could not place."""
        from latbot.data.adapters.names import HOW_TO, feature_names, place_state

        if self.config.arms is not None:
            return self.config.arms
        fields: dict[str, Any] = {}
        self.notes = []
        if self.config.state_key is not None:
            keys = _keys(self.config.state_key)
            spec = info["features"].get(keys[0]) if len(keys) == 1 else None
            shape = spec.get("shape") if isinstance(spec, dict) else None
            fields, unplaced = place_state(feature_names(spec), shape[0] if shape else None)
            if unplaced:
                self.notes.append(f"state not placed in the unified space: {'; '.join(unplaced)}; {HOW_TO}")
        if self.config.action_key is not None:
            self.notes.append(
                "action assumed to be the 7-D end-effector delta (dx, dy, dz, droll, dpitch, dyaw in radians, "
                f"gripper 0 = open, 1 = closed), which many datasets are not; {HOW_TO}"
            )
            return [ArmLayout(**fields)]
        return [ArmLayout(action_position=None, action_rotation=None, action_gripper=None, **fields)]

    # -- episodes -----------------------------------------------------------------------------------
    def _embodiment(self, info: dict[str, Any]):
        """The registered embodiment that maps the vectors (`use_embodiment`), else None."""
        if not self.config.use_embodiment:
            return None
        from latbot.data import embodiments

        name = self.config.embodiment or info.get("robot_type")
        if self.config.arms is not None:
            raise SourceError("lerobot: set either `arms` or `use_embodiment`, not both")
        if self.config.action_key is None:
            raise SourceError(f"lerobot: use_embodiment needs the action vector (action_key is null; '{name}')")
        if not name or not embodiments.is_registered(name):
            from latbot import registry

            raise SourceError(
                f"lerobot: use_embodiment: embodiment {name!r} is not registered "
                f"(registered: {', '.join(registry.names('embodiments'))})"
            )
        return embodiments.get(name)

    def episodes(self, src: Path) -> Iterator[SourceEpisode]:
        info = self._info(src)
        version = info["codebase_version"]
        emb = self._embodiment(info)
        arms = emb if emb is not None else self.layouts(info)
        for ep in _episodes_v21(src) if version == "v2.1" else _episodes_v30(src):
            idx = int(ep["episode_index"])
            yield SourceEpisode(
                key=f"episode_{idx:06d}",
                source=f"{src}#episode_{idx}",
                load=lambda ep=ep, **kw: self._load(src, info, ep, arms, **kw),
            )

    def _load(self, src: Path, info: dict, ep: dict, arms, image_size, resize_mode, cameras) -> Episode:
        import pyarrow.parquet as pq

        idx = int(ep["episode_index"])
        chunk = ep.get("data/chunk_index", idx // info.get("chunks_size", 1000))
        data_file = _source_path(
            src,
            info,
            "data_path",
            episode_chunk=chunk,
            episode_index=idx,
            chunk_index=chunk,
            file_index=ep.get("data/file_index", 0),
        )
        where = f"{data_file} (episode {idx})"
        try:
            table = pq.read_table(data_file)
        except (OSError, ValueError) as e:
            raise SourceError(f"{data_file}: cannot read parquet: {e}") from e
        for col in ("episode_index", "frame_index", "timestamp"):
            if col not in table.column_names:
                raise SourceError(f"{data_file}: missing column '{col}'")
        ep_col = _numbers(table, "episode_index", where, np.int64)
        rows = np.flatnonzero(ep_col == idx)  # v3.0 files hold many episodes
        if rows.size == 0:
            raise SourceError(f"{where}: no rows for this episode")
        table = table.take(rows)
        order = np.argsort(_numbers(table, "frame_index", where, np.int64), kind="stable")
        table = table.take(order)
        length = table.num_rows
        if ep.get("length") is not None and int(ep["length"]) != length:
            raise SourceError(f"{where}: meta says {ep['length']} frames, the parquet has {length}")
        actions = _vector(table, self.config.action_key, where)
        states = _vector(table, self.config.state_key, where)
        traj = unify(actions, states, arms, where) if isinstance(arms, list) else _through(arms, states, actions, where)
        timestamps = _numbers(table, "timestamp", where, np.float64)
        if not np.isfinite(timestamps).all():
            raise SourceError(f"{where}: column 'timestamp' has a non-finite value")
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
        path = _source_path(
            src,
            info,
            "video_path",
            episode_chunk=chunk,
            episode_index=idx,
            video_key=key,
            chunk_index=chunk,
            file_index=file_index,
        )
        offset = float(ep.get(f"videos/{key}/from_timestamp", 0.0))
        fps = float(info["fps"])
        if self.config.video_backend == "decord":
            return iter(decode_frames_decord(path, [round((offset + t) * fps) for t in timestamps]))
        start, stop = offset + timestamps[0], offset + timestamps[-1] + 0.5 / fps
        return decode_frames(path, start=start, stop=stop, expected=len(timestamps))


def _through(emb, states: np.ndarray | None, actions: np.ndarray, where: str):
    """The unified trajectory from a registered embodiment's own conversion (`use_embodiment`)."""
    from latbot.data.embodiments import EmbodimentError

    try:
        return emb.trajectory(states, actions, where)
    except EmbodimentError as e:
        raise SourceError(str(e)) from e


def _keys(key: str | list[str]) -> list[str]:
    return [key] if isinstance(key, str) else list(key)


def _vector(table, key: str | list[str] | None, where: str) -> np.ndarray | None:
    """The per-frame vector of `key` (T, D); several keys are flattened per frame and concatenated."""
    if key is None:
        return None
    if not isinstance(key, str):
        parts = [_vector(table, k, where) for k in key]
        return np.concatenate(parts, axis=1) if parts else None
    if key not in table.column_names:
        raise SourceError(f"{where}: missing column '{key}' (set action_key / state_key, or null if absent)")
    try:
        values = np.asarray(table.column(key).to_pylist(), dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise SourceError(f"{where}: column '{key}' is not a fixed-length numeric vector per frame ({e})") from e
    if values.ndim == 0:
        raise SourceError(f"{where}: column '{key}' has shape {values.shape}, expected one vector per frame")
    values = values.reshape(len(values), -1)  # (T,) → (T, 1); AgiBot's (T, 2, 3) → (T, 6)
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
        try:
            yield np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise SourceError(f"{where}: image column '{key}' holds bytes that are not an image ({e})") from e


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
    for n, row in _jsonl(tasks_path):
        where = f"{tasks_path}:{n}"
        names[_int(row.get("task_index"), where, "task_index")] = _str(row.get("task"), where, "task")
    out = []
    for n, row in _jsonl(eps_path):
        out.append(_episode_row(row, f"{eps_path}:{n}") | {"task_names": names})
    _unique_episodes(out, eps_path)
    return out


def _episodes_v30(src: Path) -> list[dict]:

    files = sorted((src / "meta/episodes").rglob("*.parquet"))
    if not files:
        raise SourceError(f"{src}/meta/episodes: no parquet files (LeRobot v3.0 keeps episode metadata there)")
    tasks_path = src / "meta/tasks.parquet"
    if not tasks_path.is_file():
        raise SourceError(f"{tasks_path}: missing")
    names = _task_names_v30(_read_parquet(tasks_path), tasks_path)
    out = []
    for path in files:
        for n, row in enumerate(_read_parquet(path).to_pylist()):
            for key in ("episode_index", "data/chunk_index", "data/file_index"):
                if key not in row:
                    raise SourceError(f"{path}: missing column '{key}'")
            out.append({**row, **_episode_row(row, f"{path} row {n}"), "task_names": names})
    _unique_episodes(out, files[0].parent)
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
        _int(i, f"{path} row {n}", "task_index"): _str(t, f"{path} row {n}", text_col)
        for n, (i, t) in enumerate(
            zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist(), strict=True)
        )
    }


# -- validation of metadata (every field a converter reads is checked for its type and range) ----------
KNOWN_DTYPES = (
    "video", "image", "string", "bool", "float16", "float32", "float64",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
)  # fmt: skip
TEMPLATE_FIELDS = ("episode_chunk", "episode_index", "chunk_index", "file_index", "video_key")
MAX_FPS = 1000.0


def _check_info(info: dict[str, Any], path: Path) -> None:
    fps = info["fps"]
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= MAX_FPS:
        raise SourceError(f"{path}: 'fps' must be a number in (0, {MAX_FPS:g}], got {fps!r}")
    feats = info["features"]
    if not isinstance(feats, dict) or not feats:
        raise SourceError(
            f"{path}: 'features' must be a non-empty object feature name → spec, got {type(feats).__name__}"
        )
    for key, spec in feats.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str):
            raise SourceError(f"{path}: features['{key}'] must be an object with a string 'dtype', got {spec!r:.80}")
        if spec["dtype"] not in KNOWN_DTYPES:
            raise SourceError(
                f"{path}: features['{key}'] has dtype {spec['dtype']!r}, which LeRobot does not define "
                f"(known: {', '.join(KNOWN_DTYPES)})"
            )
        shape = spec.get("shape")
        if shape is not None and not (
            isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise SourceError(f"{path}: features['{key}'].shape must be a list of non-negative integers, got {shape!r}")
    for key in ("data_path", "video_path"):
        if key in info and not isinstance(info[key], str):
            raise SourceError(f"{path}: '{key}' must be a path template string, got {info[key]!r}")
    if any(spec["dtype"] == "video" for spec in feats.values()) and "video_path" not in info:
        raise SourceError(f"{path}: has video features but no 'video_path'")
    chunks = info.get("chunks_size", 1000)
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise SourceError(f"{path}: 'chunks_size' must be a positive integer, got {chunks!r}")
    robot = info.get("robot_type")
    if robot is not None and not isinstance(robot, str):
        raise SourceError(f"{path}: 'robot_type' must be a string, got {robot!r}")


def _source_path(src: Path, info: dict[str, Any], template_key: str, **fields: Any) -> Path:
    """A file named by an info.json template, which must stay inside the dataset directory."""
    where = f"{src}/meta/info.json: '{template_key}'"
    template = info[template_key]
    try:
        rel = template.format(**fields)
    except (KeyError, IndexError) as e:
        raise SourceError(
            f"{where} {template!r} names an unknown field {e}; templates may use {', '.join(TEMPLATE_FIELDS)}"
        ) from e
    except ValueError as e:
        raise SourceError(f"{where} {template!r} is not a valid template ({e})") from e
    # Lexically, not through symlinks: a Hub cache snapshot links its files to blobs elsewhere.
    root = os.path.normpath(os.path.abspath(src))
    full = os.path.normpath(os.path.join(root, rel))
    if os.path.isabs(rel) or os.path.commonpath([root, full]) != root:
        raise SourceError(f"{where} {template!r} gives {rel!r}, which is outside the dataset directory {src}")
    return Path(full)


def _int(value: Any, where: str, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise SourceError(f"{where}: '{key}' must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _str(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise SourceError(f"{where}: '{key}' must be a string, got {value!r}")
    return value


def _episode_row(row: Any, where: str) -> dict[str, Any]:
    """The fields of an episode record that conversion reads, type-checked."""
    if not isinstance(row, dict):
        raise SourceError(f"{where}: an episode record must be an object, got {type(row).__name__}")
    out: dict[str, Any] = {"episode_index": _int(row.get("episode_index"), where, "episode_index")}
    tasks = row.get("tasks") or []
    if not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
        raise SourceError(f"{where}: 'tasks' must be a list of strings, got {tasks!r:.80}")
    out["tasks"] = tasks
    out["length"] = None if row.get("length") is None else _int(row["length"], where, "length", 1)
    for key, value in row.items():
        if key.endswith(("chunk_index", "file_index")):
            out[key] = _int(value, where, key)
        elif key.endswith(("from_timestamp", "to_timestamp")):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
                raise SourceError(f"{where}: '{key}' must be a time in seconds ≥ 0, got {value!r}")
    return out


def _unique_episodes(rows: list[dict], where: Path) -> None:
    seen: set[int] = set()
    for row in rows:
        if row["episode_index"] in seen:
            raise SourceError(f"{where}: episode_index {row['episode_index']} is listed twice")
        seen.add(row["episode_index"])


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text ({e})") from e
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                raise SourceError(f"{path}:{n}: not a JSON record ({e})") from e


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise SourceError(f"{path}: cannot read parquet: {e}") from e


def _numbers(table, column: str, where: str, dtype) -> np.ndarray:
    try:
        return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=dtype)
    except (TypeError, ValueError) as e:
        raise SourceError(f"{where}: column '{column}' must hold numbers ({e})") from e
