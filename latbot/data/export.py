"""Episode store → LeRobot v3.0 dataset: `latbot data export STORE --format lerobot --out DIR`.

What is written (LeRobot's own layout, as `LeRobotDataset` 0.4+ records it; docs/interop.md)::

    meta/info.json                          codebase_version "v3.0", fps, features (shapes, dtypes, names,
                                            video info), totals, path templates, robot_type, splits
    meta/tasks.parquet                      one row per distinct task string (the pandas index), task_index
    meta/episodes/chunk-CCC/file-FFF.parquet  one row per episode: tasks, length, data and video file indices,
                                            dataset_from/to_index, videos/<key>/from/to_timestamp, per-episode
                                            stats/<feature>/<stat>
    meta/stats.json                         dataset statistics (min, max, mean, std, count, q01..q99)
    data/chunk-CCC/file-FFF.parquet         one row per frame: action, observation.state, timestamp,
                                            frame_index, episode_index, index, task_index (one row group per
                                            episode)
    videos/observation.images.<camera>/chunk-CCC/file-FFF.mp4   the frames, many episodes per file
    meta/latbot_export.json                 LatBot's note of where it came from (LeRobot ignores it)
    meta/latbot_convert.json                the `latbot data convert --config` options that read it back into
                                            the same store (when the store was converted from LeRobot)

Vectors: a store converted from a source with its own action / state vectors (LeRobot, LIBERO, gen-sim)
keeps them (`native_actions`, `native_states`), and those are exported as `action` / `observation.state`:
the robot's own layout, which is what LeRobot policies are trained on. A store without them (EgoDex) exports
the unified 44-D action and 46-D state, with a name per dimension. Frames: each camera's frames at the
store's resolution, encoded with PyAV (h264 by default, or AV1 as LeRobot records; yuv420p, GOP 2 as LeRobot
does), which `LeRobotDataset(..., video_backend="pyav")` decodes (tools/lerobot_dataset_check). Tasks: the episode's
instruction, and its subtasks where it has them (per-frame `task_index`), instruction first in the episode's
`tasks`, so that LatBot's LeRobot adapter reads back the same instruction and subtasks.

Writing is all-or-nothing: everything goes into a hidden folder beside `--out`, which is renamed to `--out`
when complete; a failure (a damaged block in the store, a full disk, Ctrl-C) removes it, so nothing that
looks like a dataset is left. `--out` must be new or an empty folder (`latbot.ownership.claim`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from latbot.errors import LatBotError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder (LeRobot's DEFAULT_CHUNK_SIZE)
DATA_FILE_MB = 100.0  # LeRobot's DEFAULT_DATA_FILE_SIZE_IN_MB
VIDEO_FILE_MB = 200.0  # LeRobot's DEFAULT_VIDEO_FILE_SIZE_IN_MB (0.6)
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CAMERA_PREFIX = "observation.images."
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot's DEFAULT_QUANTILES
STATS = ("min", "max", "mean", "std", "count", *(f"q{round(q * 100):02d}" for q in QUANTILES))
# codec option → (PyAV encoder, the codec name LeRobot records, default CRF, highest CRF). h264: decodable
# everywhere (torchcodec, PyAV, decord, browsers); av1: LeRobot's own default (libsvtav1, CRF 30).
CODECS = {"h264": ("libx264", "h264", 18, 51), "av1": ("libsvtav1", "av1", 30, 63)}
PIX_FMTS = ("yuv420p", "yuv444p")
GOP = 2  # a keyframe every 2 frames, as LeRobot encodes: fast random access
READ_BLOCK = 256  # frames of one camera read from the store at a time
EPISODE_FLUSH = 1000  # episode rows buffered before they are written to meta/episodes
EXPORT_NOTE = "meta/latbot_export.json"
CONVERT_OPTIONS = "meta/latbot_convert.json"
_SCALARS = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
            "task_index": "int64"}  # fmt: skip


class ExportError(LatBotError):
    """A store cannot be exported as asked (its content, the options, or the destination)."""


@dataclass
class ExportResult:
    out: Path
    episodes: int
    frames: int
    cameras: list[str]
    tasks: int
    vectors: dict[str, str]  # "action" / "observation.state" → the store array exported there
    files: dict[str, int]  # "data" / "video" / "episodes" → number of files written
    notes: list[str] = field(default_factory=list)  # what a round trip through `data convert` needs


def unified_names() -> tuple[list[str], list[str]]:
    """Names of the unified action (44) and state (46) dimensions (latbot.data.spaces), as info.json names."""
    from latbot.data.spaces import ARMS, FINGERS

    action = [f"{arm}_{n}" for arm in ARMS for n in ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")]
    state = [f"{arm}_{n}" for arm in ARMS for n in ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper")]
    action += [f"{arm}_{f}_{n}" for arm in ARMS for f in FINGERS for n in ("dx", "dy", "dz")]
    state += [f"{arm}_{f}_{n}" for arm in ARMS for f in FINGERS for n in ("x", "y", "z")]
    return action, state


def export_lerobot(
    store: str | Path,
    out: str | Path,
    *,
    codec: str = "h264",
    crf: int | None = None,
    pix_fmt: str = "yuv420p",
    chunks_size: int = CHUNKS_SIZE,
    data_file_mb: float = DATA_FILE_MB,
    video_file_mb: float = VIDEO_FILE_MB,
    progress: bool = False,
) -> ExportResult:
    """Write the episode store `store` as a LeRobot v3.0 dataset in `out` (new or empty). Everything is checked
    before anything is written; the dataset appears at `out` only once it is complete."""
    from latbot.data.store import EpisodeStore
    from latbot.ownership import claim, enclosing_artifact

    out = Path(out)
    if codec not in CODECS:
        raise ExportError(f"--codec: must be one of {', '.join(CODECS)}, got {codec!r}")
    if pix_fmt not in PIX_FMTS:
        raise ExportError(f"--pix-fmt: must be one of {', '.join(PIX_FMTS)}, got {pix_fmt!r}")
    if codec == "av1" and pix_fmt != "yuv420p":
        raise ExportError(f"--pix-fmt {pix_fmt}: AV1 (libsvtav1) encodes yuv420p only; use --codec h264 for it")
    crf = CODECS[codec][2] if crf is None else crf
    top = CODECS[codec][3]
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= top:
        raise ExportError(f"--crf: {codec} takes an integer in [0, {top}], got {crf!r}")
    if not (isinstance(chunks_size, int) and chunks_size >= 1 and data_file_mb > 0 and video_file_mb > 0):
        raise ExportError("chunks_size, data_file_mb and video_file_mb must be positive")
    fix = "choose a new or empty --out"
    claim(out, (), option="--out", fix=fix)  # new or empty: anything else is refused, nothing changed
    inside = enclosing_artifact(out.parent)
    if inside is not None:
        raise ExportError(
            f"--out {out}: lies inside the '{inside[1]}' artifact {inside[0]}; writing there would change it; {fix}"
        )
    with EpisodeStore.open(store) as s:
        plan = _plan(s, codec, pix_fmt)
        made = _missing_parents(out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.parent / f".{out.name}.export-{os.getpid()}.partial"
            shutil.rmtree(tmp, ignore_errors=True)  # this process's own leftover (a pid is not reused at once)
            tmp.mkdir()
        except OSError as e:
            _remove_empty(made)
            raise ExportError(f"--out {out}: cannot write there ({e.strerror or e}); {fix}") from None
        writer = None
        try:
            writer = _Writer(s, plan, tmp, codec, crf, pix_fmt, chunks_size, data_file_mb, video_file_mb)
            result = writer.run(progress)
            _publish(tmp, out, fix)
        except BaseException:
            if writer is not None:
                writer.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            _remove_empty(made)
            raise
    result.out = out
    return result


# -- what to write -------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    fps: int
    cameras: list[str]
    image_size: tuple[int, int]
    vectors: dict[str, str]  # feature → store array
    dims: dict[str, int]  # feature → width of its vector
    names: dict[str, list[str] | None]
    tasks: dict[str, int]  # task string → task_index (first seen first)
    episode_tasks: list[list[str]]  # per episode: its task strings, instruction first
    robot_type: str | None
    manifest: Any
    convert_options: dict[str, Any] | None
    notes: list[str]


def _plan(s: Any, codec: str, pix_fmt: str) -> _Plan:
    """Everything decided from the store's metadata, checked before a file is written."""
    from latbot.artifacts import read_manifest

    where = str(s.path)
    try:
        manifest = read_manifest(s.path, "episode_store")
    except LatBotError as e:
        raise ExportError(f"{where}: not a finished episode store ({e}); finish its conversion first") from None
    if not s.records:
        raise ExportError(f"{where}: the store has no episodes; nothing to export")
    rates = sorted({r.fps for r in s.records})
    if len(rates) > 1:
        raise ExportError(f"{where}: episodes at different rates {rates}; a LeRobot dataset has one fps")
    fps = rates[0]
    if not (fps > 0 and abs(fps - round(fps)) < 1e-9):
        raise ExportError(f"{where}: the episodes' rate is {fps:g} Hz; a LeRobot dataset's fps is an integer")
    import av

    encoder = CODECS[codec][0]
    if encoder not in av.codecs_available:
        raise ExportError(
            f"--codec {codec}: this PyAV ({av.__version__}) has no {encoder} encoder; try another --codec"
        )
    h, w = s.image_size
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise ExportError(
            f"{where}: frames are {h}x{w}; {codec} in yuv420p needs even sides: export with --pix-fmt yuv444p"
        )
    action_names, state_names = unified_names()
    native = s.has_array("native_actions") or s.has_array("native_states")
    vectors: dict[str, str] = {}
    names: dict[str, list[str] | None] = {}
    if native:  # the robot's own vectors, where the source had them (an absent one is left out)
        for feature, array in (("observation.state", "native_states"), ("action", "native_actions")):
            if s.has_array(array):
                vectors[feature], names[feature] = array, None
    else:
        vectors = {"observation.state": "states", "action": "actions"}
        names = {"observation.state": state_names, "action": action_names}
    dims = {feature: int(s.array(array).shape[1]) for feature, array in vectors.items()}
    tasks: dict[str, int] = {}
    episode_tasks = []
    for r in s.records:
        texts = list(dict.fromkeys([r.instruction, *(text for _, _, text in r.subtasks)]))
        episode_tasks.append(texts)
        for text in texts:
            tasks.setdefault(text, len(tasks))
    embodiments = sorted({r.embodiment for r in s.records})
    robot_type = embodiments[0] if len(embodiments) == 1 else None
    placed = any(r.masks()[1].any() for r in s.records)
    options, notes = _convert_options(manifest.extra, vectors, s.attrs.get("source_format"), placed)
    if robot_type is None:
        notes.append(f"the store mixes embodiments {embodiments}; info.json's robot_type is null")
    return _Plan(round(fps), s.cameras, (h, w), vectors, dims, names, tasks, episode_tasks, robot_type,
                 manifest, options, notes)  # fmt: skip


def _convert_options(
    extra: dict[str, Any], vectors: dict[str, str], made_by: str | None, state_placed: bool
) -> tuple[dict[str, Any] | None, list[str]]:
    """The LeRobot adapter options that read the export back into the same unified vectors (the store's own
    conversion options, pointed at the exported features), or None where no LeRobot options can."""
    adapter = extra.get("adapter") if isinstance(extra.get("adapter"), dict) else {}
    if adapter.get("type") != "lerobot":
        made_by = adapter.get("type") or made_by or "its source"
        return None, [
            f"the store's unified vectors were made by '{made_by}', not by the LeRobot adapter: `latbot data "
            "convert --format lerobot` reads this dataset's vectors with a layout you give (`--preset`/`arms`)"
        ]
    options = {k: v for k, v in adapter.items() if k != "type"}
    options["action_key"] = "action" if "action" in vectors else None
    options["state_key"] = "observation.state" if "observation.state" in vectors else None
    options["camera_keys"] = None  # every exported camera, named as in the store
    notes = []
    if adapter.get("arms") is None and state_placed:
        notes.append(
            "the store's state was placed from the source's feature names, which a store does not keep: reading "
            "this dataset back places no state unless you give `arms` (docs/data.md, 'LeRobot layouts')"
        )
    return options, notes


# -- writing -----------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, s, plan: _Plan, root: Path, codec, crf, pix_fmt, chunks_size, data_mb, video_mb):
        self.s, self.plan, self.root = s, plan, root
        self.codec, self.crf, self.pix_fmt = codec, crf, pix_fmt
        self.chunks_size = chunks_size
        self.keys = {cam: CAMERA_PREFIX + cam for cam in plan.cameras}
        self.features = _features(plan, codec, crf, pix_fmt)
        self.data = _RollingParquet(root, DATA_PATH, _data_schema(self.features), chunks_size, data_mb)
        self.videos = {
            cam: _RollingVideo(root, key, plan, codec, crf, pix_fmt, chunks_size, video_mb)
            for cam, key in self.keys.items()
        }
        self.episode_rows: list[dict[str, Any]] = []
        self.episode_stats: list[dict[str, dict[str, np.ndarray]]] = []
        self.episodes_meta: _RollingParquet | None = None
        self.totals: dict[str, _Aggregate] = {}

    def run(self, progress: bool) -> ExportResult:
        from tqdm import tqdm

        total = 0
        for rec in tqdm(self.s.records, desc="export", unit="episode", disable=not progress):
            total = self._episode(rec, total)
        for video in self.videos.values():
            video.close()
        self.data.close()
        self._flush_episodes(final=True)
        self._write_meta(total)
        return ExportResult(
            out=self.root,
            episodes=len(self.s.records),
            frames=total,
            cameras=list(self.plan.cameras),
            tasks=len(self.plan.tasks),
            vectors=dict(self.plan.vectors),
            files={
                "data": self.data.files,
                "video": sum(v.files for v in self.videos.values()),
                "episodes": self.episodes_meta.files if self.episodes_meta else 0,
            },
            notes=list(self.plan.notes),
        )

    def abort(self) -> None:
        """Close every open file without finishing it (the folder is removed next)."""
        from contextlib import suppress

        for closable in (*self.videos.values(), self.data, self.episodes_meta):
            with suppress(Exception):
                if closable is not None:
                    closable.abort()

    def _episode(self, rec: Any, start: int) -> int:
        import pyarrow as pa

        n, plan, index = rec.length, self.plan, rec.index
        row: dict[str, Any] = {"episode_index": index, "tasks": plan.episode_tasks[index], "length": n}
        stats: dict[str, dict[str, np.ndarray]] = {}
        for cam, key in self.keys.items():
            video = self.videos[cam]
            sampled = set(_sample_indices(n))
            picked = []
            where = video.begin_episode()
            for a in range(0, n, READ_BLOCK):
                frames = self.s.read_steps(f"frames/{cam}", index, slice(a, min(n, a + READ_BLOCK)))
                video.write(frames)
                picked += [frames[i - a].copy() for i in range(a, a + len(frames)) if i in sampled]
            stats[key] = _image_stats(np.stack(picked))
            chunk, file, offset = where
            row |= {
                f"videos/{key}/chunk_index": chunk,
                f"videos/{key}/file_index": file,
                f"videos/{key}/from_timestamp": offset / plan.fps,
                f"videos/{key}/to_timestamp": (offset + n) / plan.fps,
            }
            video.end_episode()
        columns: dict[str, Any] = {}
        for feature, array in plan.vectors.items():
            values = np.ascontiguousarray(self.s.read_steps(array, index, slice(None)), dtype=np.float32)
            columns[feature] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
            stats[feature] = _vector_stats(values)
        task_index = np.full(n, plan.tasks[rec.instruction], np.int64)
        for a, b, text in rec.subtasks:
            task_index[a:b] = plan.tasks[text]
        scalars = {
            "timestamp": (np.arange(n) / plan.fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, index, np.int64),
            "index": np.arange(start, start + n, dtype=np.int64),
            "task_index": task_index,
        }
        for name, values in scalars.items():
            columns[name] = pa.array(values)
            stats[name] = _vector_stats(values.reshape(n, 1))
        schema = self.data.schema
        chunk, file = self.data.write(pa.Table.from_arrays([columns[c] for c in schema.names], schema=schema))
        row |= {"data/chunk_index": chunk, "data/file_index": file,
                "dataset_from_index": start, "dataset_to_index": start + n}  # fmt: skip
        self.episode_rows.append(row)
        self.episode_stats.append(stats)
        if len(self.episode_rows) >= EPISODE_FLUSH:
            self._flush_episodes()
        return start + n

    def _flush_episodes(self, final: bool = False) -> None:
        """Write the buffered episode rows (with their stats columns) into meta/episodes; `final`: and close."""
        if self.episode_rows:
            self._write_episode_rows()
        if final and self.episodes_meta is not None:
            self.episodes_meta.close()

    def _write_episode_rows(self) -> None:
        import pyarrow as pa

        if self.episodes_meta is None:
            schema = _episodes_schema(self.features, self.keys.values())
            self.episodes_meta = _RollingParquet(self.root, EPISODES_PATH, schema, self.chunks_size, DATA_FILE_MB)
        meta = self.episodes_meta
        chunk, file = meta.current()
        rows = []
        for row, stats in zip(self.episode_rows, self.episode_stats, strict=True):
            flat = {f"stats/{feat}/{k}": _tolist(v) for feat, st in stats.items() for k, v in st.items()}
            rows.append({**row, **flat, "meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file})
        meta.write(pa.Table.from_pylist(rows, schema=meta.schema))
        for stats in self.episode_stats:
            for feat, st in stats.items():
                self.totals.setdefault(feat, _Aggregate()).add(st)
        self.episode_rows, self.episode_stats = [], []

    def _write_meta(self, total: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        plan, root = self.plan, self.root
        tasks = list(plan.tasks)
        table = pa.table(
            {"task_index": pa.array(np.arange(len(tasks), dtype=np.int64)), "task": pa.array(tasks, pa.string())}
        )
        table = table.replace_schema_metadata({"pandas": json.dumps(_PANDAS_TASKS)})
        pq.write_table(table, root / "meta/tasks.parquet")
        stats = {feat: {k: _tolist(v) for k, v in agg.result().items()} for feat, agg in self.totals.items()}
        _write_json(root / "meta/stats.json", stats)
        source = plan.manifest.extra.get("source")
        note = {
            "exported_by": "latbot data export --format lerobot",
            "store": self.s.path if isinstance(self.s.path, str) else os.path.abspath(self.s.path),
            "store_content_hash": plan.manifest.content_hash,
            "source": source,
            "vectors": plan.vectors,
            "cameras": {cam: key for cam, key in self.keys.items()},
            "image_size": list(plan.image_size),
            "video": {"codec": CODECS[self.codec][1], "crf": self.crf, "pix_fmt": self.pix_fmt, "g": GOP},
            "read_back": (
                f"latbot data convert DIR --format lerobot --config DIR/{CONVERT_OPTIONS} "
                f"--image-size {plan.image_size[0]} --out STORE"
                if plan.convert_options is not None
                else None
            ),
            "notes": plan.notes,
        }
        _write_json(root / EXPORT_NOTE, note)
        if plan.convert_options is not None:
            _write_json(root / CONVERT_OPTIONS, plan.convert_options)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "fps": plan.fps,
            "features": self.features,
            "total_episodes": len(self.s.records),
            "total_frames": total,
            "total_tasks": len(tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": _mb(self.data.limit_mb),
            "video_files_size_in_mb": _mb(next(iter(self.videos.values())).limit_mb),
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "robot_type": plan.robot_type,
            "splits": {"train": f"0:{len(self.s.records)}"},
        }
        _write_json(root / "meta/info.json", info)  # last: a dataset without it is not one


def _publish(tmp: Path, out: Path, fix: str) -> None:
    """Move the finished dataset to `out` (which is absent, or an empty folder)."""
    try:
        if out.is_dir() and not out.is_symlink():
            out.rmdir()  # empty (claimed so); fails if someone wrote into it meanwhile
        os.rename(tmp, out)
    except OSError as e:
        raise ExportError(
            f"--out {out}: cannot be written ({e.strerror or e}; did something else write it?); {fix}"
        ) from None
    _fsync_dir(out.parent)


def _missing_parents(out: Path) -> list[Path]:
    """The folders above `out` that do not exist yet, nearest last (created for the export, removed on failure)."""
    missing = []
    for folder in Path(os.path.abspath(out)).parents:
        if folder.exists():
            break
        missing.append(folder)
    return missing[::-1]


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def _mb(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


# -- schemas -------------------------------------------------------------------------------------------------
# How pandas marks `task` as the index of meta/tasks.parquet (LeRobot reads the tasks with pandas and looks a
# task's string up as the row's index: without this it would read the row number).
_PANDAS_TASKS = {
    "index_columns": ["task"],
    "column_indexes": [
        {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
         "metadata": {"encoding": "UTF-8"}}
    ],
    "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
    ],
    "attributes": {},
}  # fmt: skip


def _features(plan: _Plan, codec: str, crf: int, pix_fmt: str) -> dict[str, dict[str, Any]]:
    """info.json's `features`, in LeRobot's order: cameras, vectors, then the per-frame bookkeeping."""
    h, w = plan.image_size
    feats: dict[str, dict[str, Any]] = {}
    for cam in plan.cameras:
        feats[CAMERA_PREFIX + cam] = {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": CODECS[codec][1],
                "video.pix_fmt": pix_fmt,
                "video.fps": plan.fps,
                "video.channels": 3,
                "has_audio": False,
                "video.g": GOP,
                "video.crf": crf,
                "is_depth_map": False,
            },
        }
    for feature in plan.vectors:
        feats[feature] = {"dtype": "float32", "shape": [plan.dims[feature]], "names": plan.names[feature]}
    for name, dtype in _SCALARS.items():
        feats[name] = {"dtype": dtype, "shape": [1], "names": None}
    return feats


def _data_schema(features: dict[str, dict[str, Any]]) -> Any:
    """The frame table's schema, with the `datasets` feature description LeRobot's writer stores beside it."""
    import pyarrow as pa

    fields, hf = [], {}
    for name, spec in features.items():
        if spec["dtype"] == "video":
            continue
        if name in _SCALARS:
            fields.append((name, pa.from_numpy_dtype(np.dtype(spec["dtype"]))))
            hf[name] = {"dtype": spec["dtype"], "_type": "Value"}
        else:
            width = spec["shape"][0]
            fields.append((name, pa.list_(pa.float32(), width)))
            hf[name] = {"feature": {"dtype": "float32", "_type": "Value"}, "length": width, "_type": "List"}
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": hf}})})


def _episodes_schema(features: dict[str, dict[str, Any]], video_keys) -> Any:
    import pyarrow as pa

    fields = [
        ("episode_index", pa.int64()),
        ("tasks", pa.list_(pa.string())),
        ("length", pa.int64()),
        ("data/chunk_index", pa.int64()),
        ("data/file_index", pa.int64()),
        ("dataset_from_index", pa.int64()),
        ("dataset_to_index", pa.int64()),
    ]
    for key in video_keys:
        fields += [
            (f"videos/{key}/chunk_index", pa.int64()),
            (f"videos/{key}/file_index", pa.int64()),
            (f"videos/{key}/from_timestamp", pa.float64()),
            (f"videos/{key}/to_timestamp", pa.float64()),
        ]
    image = pa.list_(pa.list_(pa.list_(pa.float64())))
    for feature, spec in features.items():
        kind = image if spec["dtype"] == "video" else pa.list_(pa.float64())
        fields += [(f"stats/{feature}/{k}", pa.list_(pa.int64()) if k == "count" else kind) for k in STATS]
    fields += [("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64())]
    return pa.schema(fields)


# -- statistics (LeRobot's: per episode, then aggregated weighted by count) ---------------------------------------
def _sample_indices(n: int) -> list[int]:
    """The frames of an episode LeRobot samples for image statistics (compute_stats.sample_indices)."""
    num = max(min(100, n), min(int(n**0.75), 10_000))
    return np.round(np.linspace(0, n - 1, num)).astype(int).tolist()


def _vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """(n, d) → per-dimension statistics (exact quantiles; LeRobot estimates them from a histogram)."""
    x = values.astype(np.float64)
    out = {
        "min": x.min(0),
        "max": x.max(0),
        "mean": x.mean(0),
        "std": x.std(0),
        "count": np.array([len(x)], np.int64),
    }
    qs = np.quantile(x, QUANTILES, axis=0) if len(x) >= 2 else np.repeat(out["mean"][None], len(QUANTILES), 0)
    for key, q in zip(STATS[5:], qs, strict=True):
        out[key] = q
    return out


def _image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """(k, H, W, 3) uint8 sampled frames → per-channel statistics in [0, 1], shaped (3, 1, 1) as LeRobot's.
    Computed from each channel's 256-bin histogram: exact, and quick on millions of pixels."""
    h, w = frames.shape[1:3]
    if max(h, w) >= 300:  # LeRobot's auto_downsample_height_width
        step = int(max(h, w) / 150)
        frames = frames[:, ::step, ::step]
    pixels = frames.reshape(-1, 3)
    levels = np.arange(256, dtype=np.float64)
    rows: dict[str, list[float]] = {k: [] for k in STATS if k != "count"}
    for c in range(3):
        counts = np.bincount(pixels[:, c], minlength=256).astype(np.float64)
        n = counts.sum()
        mean = (counts * levels).sum() / n
        rows["mean"].append(mean)
        rows["std"].append(np.sqrt(max((counts * (levels - mean) ** 2).sum() / n, 0.0)))
        present = np.flatnonzero(counts)
        rows["min"].append(present[0])
        rows["max"].append(present[-1])
        ends = np.cumsum(counts)  # values[k] (sorted) = the level whose cumulative count first exceeds k
        for key, q in zip(STATS[5:], QUANTILES, strict=True):
            pos = q * (n - 1)  # np.quantile's linear interpolation between order statistics
            lo = np.searchsorted(ends, np.floor(pos), side="right")
            hi = np.searchsorted(ends, min(np.floor(pos) + 1, n - 1), side="right")
            rows[key].append(lo + (pos - np.floor(pos)) * (hi - lo))
    out = {k: np.asarray(v, np.float64).reshape(3, 1, 1) / 255.0 for k, v in rows.items()}
    return out | {"count": np.array([len(frames)], np.int64)}


class _Aggregate:
    """Dataset statistics from per-episode ones, as LeRobot's aggregate_feature_stats: min / max / mean / std
    exact (the pooled moments), quantiles the count-weighted mean of the episodes'."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: dict[str, np.ndarray] = {}  # count-weighted sums: mean, mean of squares, quantiles
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def add(self, st: dict[str, np.ndarray]) -> None:
        c = int(st["count"][0])
        parts = {"mean": st["mean"], "sq": st["std"] ** 2 + st["mean"] ** 2, **{k: st[k] for k in STATS[5:]}}
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + c * np.asarray(value, np.float64)
        self.lo = st["min"] if self.lo is None else np.minimum(self.lo, st["min"])
        self.hi = st["max"] if self.hi is None else np.maximum(self.hi, st["max"])
        self.count += c

    def result(self) -> dict[str, np.ndarray]:
        mean = self.sums["mean"] / self.count
        out = {
            "min": self.lo,
            "max": self.hi,
            "mean": mean,
            "std": np.sqrt(np.maximum(self.sums["sq"] / self.count - mean**2, 0.0)),
            "count": np.array([self.count], np.int64),
        }
        return out | {k: self.sums[k] / self.count for k in STATS[5:]}


def _tolist(value: np.ndarray) -> Any:
    return np.asarray(value).tolist()


# -- files that roll over at a size, as LeRobot's -----------------------------------------------------------------
def _file_index(n: int, chunks_size: int) -> tuple[int, int]:
    """The n-th file of a kind → (chunk_index, file_index): `chunks_size` files per chunk folder."""
    return divmod(n, chunks_size)


class _RollingParquet:
    """Tables written one row group at a time into `template` files; a new file once one reaches `limit_mb`."""

    def __init__(self, root: Path, template: str, schema: Any, chunks_size: int, limit_mb: float):
        self.root, self.template, self.schema = root, template, schema
        self.chunks_size, self.limit_mb = chunks_size, limit_mb
        self.files = 0  # files started
        self._writer: Any = None
        self._bytes = 0

    def current(self) -> tuple[int, int]:
        """(chunk, file) the next table goes into."""
        n = self.files - 1 if self._writer is not None else self.files
        return _file_index(n, self.chunks_size)

    def write(self, table: Any) -> tuple[int, int]:
        import pyarrow.parquet as pq

        if self._writer is None:
            chunk, file = _file_index(self.files, self.chunks_size)
            path = self.root / self.template.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, self.schema)
            self.files += 1
            self._bytes = 0
        where = _file_index(self.files - 1, self.chunks_size)
        self._writer.write_table(table)  # one row group per table (per episode)
        self._bytes += table.nbytes
        if self._bytes >= self.limit_mb * 2**20:
            self.close()
        return where

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


class _RollingVideo:
    """One camera's frames, encoded into mp4 files that hold many episodes each (a new file once one reaches
    `limit_mb`, at an episode boundary). Frame k of a file has the presentation time k / fps exactly."""

    def __init__(self, root: Path, key: str, plan: _Plan, codec: str, crf: int, pix_fmt: str, chunks_size, limit_mb):
        self.root, self.key, self.plan = root, key, plan
        self.encoder, self.crf, self.pix_fmt = CODECS[codec][0], crf, pix_fmt
        self.chunks_size, self.limit_mb = chunks_size, limit_mb
        self.files = 0
        self._container: Any = None
        self._stream: Any = None
        self._frames = 0  # frames in the open file
        self._bytes = 0

    def begin_episode(self) -> tuple[int, int, int]:
        """(chunk, file, frame offset in that file) where the next episode starts."""
        if self._container is None:
            with self._encoding():
                self._open()
        chunk, file = _file_index(self.files - 1, self.chunks_size)
        return chunk, file, self._frames

    def write(self, frames: np.ndarray) -> None:
        import av

        with self._encoding():
            for arr in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                frame.pts = self._frames
                self._mux(self._stream.encode(frame))
                self._frames += 1

    @contextmanager
    def _encoding(self) -> Iterator[None]:
        """FFmpeg's errors (an encoder that refuses these settings, a full disk) as one-line `ExportError`s."""
        import av

        try:
            yield
        except av.error.FFmpegError as e:
            raise ExportError(f"{self.key}: encoding with {self.encoder} failed: {e}") from e

    def end_episode(self) -> None:
        if self._bytes >= self.limit_mb * 2**20:
            self.close()

    def _open(self) -> None:
        import av

        chunk, file = _file_index(self.files, self.chunks_size)
        path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # errors only: SVT-AV1 prints its whole configuration otherwise
        self._container = av.open(str(path), mode="w")
        stream = self._container.add_stream(self.encoder, rate=Fraction(self.plan.fps))
        stream.height, stream.width = self.plan.image_size
        stream.pix_fmt = self.pix_fmt
        stream.gop_size = GOP
        stream.codec_context.max_b_frames = 0  # presentation order = decoding order
        options = {"crf": str(self.crf)}
        if self.encoder == "libsvtav1":
            options["preset"] = "12"  # LeRobot's default for libsvtav1
        stream.options = options
        self._stream = stream
        self.files += 1
        self._frames = self._bytes = 0

    def _mux(self, packets) -> None:
        for packet in packets:
            self._bytes += packet.size
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            try:
                with self._encoding():
                    self._mux(self._stream.encode())  # flush the encoder
            finally:
                self.abort()

    def abort(self) -> None:
        container, self._container, self._stream = self._container, None, None
        if container is not None:
            container.close()
