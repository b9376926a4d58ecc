"""The episode store: many episodes in flat Zarr v3 arrays, one commit log, atomic per episode.

On disk (a directory)::

    zarr.json              the Zarr group; attrs["latbot"] = format version, cameras, image size, codec,
                           normalisation stats
    frames/<camera>/       uint8 (N, H, W, 3): decoded frames at training resolution, chunked along time
                           (`chunk_frames` per chunk, default 1) and sharded (`shard_frames` per file), compressed
                           (blosc-lz4, zstd, none; or one image per chunk: png, qoi, webp/jpegxl lossless, jpeg<Q>,
                           latbot.data.imagecodec) with a crc32c checksum per chunk
    actions/  states/      float32 (N, 44) / (N, 46): the unified spaces (latbot.data.spaces)
    native_actions/ ...    float32 (N, A): the source's own action/state vectors, when it has them
    frame_motion/          float32 (N, 9): step t+1's action frame → step t's (moving cameras, e.g. EgoDex)
    episodes.jsonl         the commit log: one JSON record per episode (offset, length, instruction,
                           subtasks, embodiment, fps, source, success, masks, source key)
    latbot.json            the artifact manifest, written when a conversion finishes

An episode is committed when its record is appended (and fsynced) to episodes.jsonl; array data past the
last committed frame is ignored and overwritten. A conversion killed at any point therefore leaves no
partial episode, and reopening the store for writing resumes after the last committed one.

A store does not lie: every chunk is written, even one that equals the fill value, so a block file that
is missing is damage, and reading it raises a `StoreError` (Zarr itself would return fill values: black
frames, NaN actions); opening checks that every array holds the frames the commit log promises; a block
that does not decode (crc32c) raises a `StoreError` naming the array and frames.
File count: frames are stored `shard_frames` per file, so 10^6 episodes of ~200 frames at 256 frames per
shard is ~8·10^5 files per camera, independent of how the frames are split into episodes.

A store may also live at an fsspec URL (`s3://bucket/stores/x`, latbot.data.location): its arrays are read
and written through zarr's `FsspecStore`, its commit log through fsspec. Object stores have no append, so
there a commit is one PUT of the whole log (atomic: a reader sees the old log or the new one), and commits
are grouped (`REMOTE_COMMIT_FRACTION`, `REMOTE_COMMIT_SECONDS`): an interrupted conversion then loses the
episodes written since the last commit, which a rerun converts again. No writer lock exists there.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latbot.data.location import LocationError, StoreDir
from latbot.data.spaces import ACTION_DIM, STATE_DIM, UnifiedTrajectory, mask_from_str, mask_to_str
from latbot.errors import LatBotError
from latbot.ownership import LOCK_NAME as OWNERSHIP_LOCK_NAME
from latbot.ownership import release_lock, take_lock

STORE_FORMAT_VERSION = 1
LOG_NAME = "episodes.jsonl"
LOCK_NAME = ".writer.lock"
LOCK_NAMES = (LOCK_NAME, OWNERSHIP_LOCK_NAME)  # lock files: not the store's data; a folder holding only them is empty
BYTE_CODECS = ("zstd", "lz4", "none")  # whole chunks of frames, compressed as bytes
# one image per chunk (chunk_frames=1), imagecodecs (latbot.data.imagecodec); jpeg<Q> takes any Q in [1, 100]
IMAGE_CODECS = ("png", "qoi", "webp-lossless", "jpegxl-lossless", "jpeg95", "jpeg90")
CODECS = BYTE_CODECS + IMAGE_CODECS
DEFAULT_CODEC = "lz4"  # docs/data.md, "Choosing a codec" (tools/bench/bench_codecs.py)
DEFAULT_CHUNK_FRAMES = 1  # one frame per chunk: clips, strided clips and single frames read only their frames
STAT_SAMPLE_ROWS = 2_000_000  # quantiles from at most this many rows (a deterministic subsample)
MAX_IMAGE_SIDE = 4096  # pixels; the recipes' data.image_size has the same bound
# A store at a URL commits its log by rewriting it whole (one PUT), so commits are grouped: when the episodes
# written since the last commit reach 1/REMOTE_COMMIT_FRACTION of the committed ones (log bytes uploaded stay
# O(n), not O(n²)), or REMOTE_COMMIT_SECONDS have passed, and when the store is closed.
REMOTE_COMMIT_FRACTION = 16
REMOTE_COMMIT_SECONDS = 30.0


class StoreError(LatBotError):
    """An episode store is missing, of another format version, damaged, or given inconsistent data."""


@dataclass
class Episode:
    """One episode ready to be written: frames at store resolution plus the unified trajectory."""

    key: str  # unique within the source (e.g. "demo_3" or a file path); used to resume conversions
    frames: dict[str, np.ndarray]  # camera → (T, H, W, 3) uint8
    trajectory: UnifiedTrajectory
    instruction: str
    task: str = ""
    subtasks: list[tuple[int, int, str]] = field(default_factory=list)  # [start, end) frame ranges
    embodiment: str = "unknown"
    fps: float = 10.0
    source: str = ""
    success: bool | None = None
    native_actions: np.ndarray | None = None  # (T, A)
    native_states: np.ndarray | None = None  # (T, S)
    # (T, 3, 3): for sources whose actions are expressed in a moving frame (EgoDex: the camera of each step),
    # the rotation taking vectors in step t+1's frame to step t's, so that deltas summed over a clip's frame
    # stride are composed in one frame (latbot.data.clips.aggregate_actions); None: a fixed frame (robots)
    frame_motion: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.trajectory.actions)


@dataclass(frozen=True)
class EpisodeRecord:
    """An episode's entry in the commit log (everything but the array data)."""

    index: int
    offset: int
    length: int
    key: str
    instruction: str
    task: str
    subtasks: list[tuple[int, int, str]]
    embodiment: str
    fps: float
    source: str
    success: bool | None
    action_mask: str
    state_mask: str

    @property
    def stop(self) -> int:
        return self.offset + self.length

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        return mask_from_str(self.action_mask, ACTION_DIM), mask_from_str(self.state_mask, STATE_DIM)

    def subtask_at(self, step: int) -> str | None:
        return next((text for start, end, text in self.subtasks if start <= step < end), None)


_RECORD_TYPES = {"index": int, "offset": int, "length": int, "key": str, "instruction": str, "task": str}


def _record_from_json(line: str, lineno: int, path: Path | str) -> EpisodeRecord:
    try:
        data = json.loads(line)
        data["subtasks"] = [tuple(s) for s in data["subtasks"]]
        for key, kind in _RECORD_TYPES.items():
            if not isinstance(data[key], kind) or isinstance(data[key], bool) or (kind is int and data[key] < 0):
                raise TypeError(f"'{key}' is {data[key]!r}")
        return EpisodeRecord(**data)
    except (ValueError, TypeError, KeyError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise StoreError(f"{path}:{lineno}: damaged episode record ({e}); run `latbot data verify`") from e


class EpisodeStore:
    """Open with `EpisodeStore.open(path)` (read) / `open(path, mode="a")` (append), or `create(...)`."""

    def __init__(self, path: Path | str, group: Any, records: list[EpisodeRecord], writable: bool):
        self.dir = StoreDir(path)
        self.path = self.dir.location  # a Path, or a URL string (latbot.data.location)
        self._group = group
        self.records = records
        self.writable = writable
        self._lock_fd: int | None = None
        self._present: dict[str, set[int]] = {}  # block files seen on disk, per array
        self._arrays: dict[str, Any] = {}  # Zarr array handles, opened once (metadata parsing costs ~1 ms)
        self._readers: dict[str, Any] = {}  # name → fastread.ArrayReader, or None: read with zarr-python
        self.verify_checksums = True  # crc32c of every chunk read (`open(..., verify_checksums=False)`)
        self._pid = os.getpid()
        self._keys = {r.key for r in records}
        self._offsets = np.array([r.offset for r in records] + [self.num_frames], dtype=np.int64)
        self._committed = len(records)  # records[_committed:] are written but not yet in the log (URL stores)
        self._last_commit = time.monotonic()

    # -- opening ------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        cameras: list[str],
        image_size: tuple[int, int],
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        shard_frames: int = 256,
        codec: str = DEFAULT_CODEC,
        source_format: str = "",
        source: str | None = None,
    ) -> EpisodeStore:
        """A new, empty store (the directory must not hold one already). `source` (e.g. the resolved source
        path) is recorded in the attributes, so that a resumed conversion can check it reads the same source."""
        import zarr

        d = StoreDir(path)
        path = d.location
        if _reach(d, d.exists, "zarr.json"):
            raise StoreError(f"{path}: a store exists here already; open it with mode='a' to append")
        check_codec(codec, chunk_frames)
        if not cameras or len(set(cameras)) != len(cameras):
            raise StoreError(f"cameras must be a non-empty list of distinct names, got {cameras}")
        bad = [c for c in cameras if not (isinstance(c, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", c))]
        if bad:
            raise StoreError(f"camera names must be letters, digits, '_' or '-', got {bad}")
        h, w = image_size
        if not (isinstance(h, int) and isinstance(w, int) and 1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
            raise StoreError(f"image_size must be two integers in [1, {MAX_IMAGE_SIDE}], got {list(image_size)}")
        if not (1 <= chunk_frames <= shard_frames <= 65536):
            raise StoreError(f"need 1 <= chunk_frames ({chunk_frames}) <= shard_frames ({shard_frames}) <= 65536")
        if shard_frames % chunk_frames:
            raise StoreError(f"shard_frames ({shard_frames}) must be a multiple of chunk_frames ({chunk_frames})")
        attrs = {
            "format_version": STORE_FORMAT_VERSION,
            "cameras": list(cameras),
            "image_size": [h, w],
            "chunk_frames": chunk_frames,
            "shard_frames": shard_frames,
            "codec": codec,
            "source_format": source_format,
            "action_dim": ACTION_DIM,
            "state_dim": STATE_DIM,
            "stats": None,
        }
        if source is not None:
            attrs["source"] = source
        present = d.names() if d.exists() else []
        if d.exists() and not (d.is_dir() and not [n for n in present if n not in LOCK_NAMES]):
            raise StoreError(f"{path}: exists and is not an empty directory (nor a store); choose another --out")
        mode = "a" if present else "w-"  # only lock files are there, which "w-" would take for data
        try:
            d.mkdir()
            with _write_every_chunk():
                group = zarr.open_group(d.zarr_store(read_only=False), mode=mode, attributes={"latbot": attrs})
            d.write_atomic(LOG_NAME, b"")
        except OSError as e:
            raise StoreError(f"{path}: cannot create the store here ({e.strerror or e}); choose another --out") from e
        for cam in cameras:
            zarr.create_array(
                group.store,
                name=f"frames/{cam}",
                shape=(0, h, w, 3),
                dtype="uint8",
                chunks=(chunk_frames, h, w, 3),
                shards=(shard_frames, h, w, 3),
                **_frame_codecs(codec),
                fill_value=0,
                config={"write_empty_chunks": True},
            )
        for name, dim in (("actions", ACTION_DIM), ("states", STATE_DIM)):
            _create_vector_array(group, name, dim)
        return cls._open(path, "a")

    @classmethod
    def open(
        cls, path: str | Path, mode: str = "r", *, check: bool = True, verify_checksums: bool = True
    ) -> EpisodeStore:
        """Open an existing store, read-only (`"r"`) or for appending (`"a"`, resumes after the last commit).
        `check=False` skips the array-length check (for `verify`, which reports it as a finding).
        `verify_checksums=False` skips the crc32c check of each chunk read (`verify` always checks them)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        store = cls._open(path, mode, check=check)
        store.verify_checksums = verify_checksums
        return store

    @classmethod
    def _open(cls, path: Path | str, mode: str, check: bool = True) -> EpisodeStore:
        import zarr

        _register_codecs()
        d = StoreDir(path)
        path = d.location
        if d.is_url:
            _reach(d, d.refresh)
        if not _reach(d, d.is_file, "zarr.json"):
            raise StoreError(f"{path}: not an episode store (no zarr.json); create one with `latbot data convert`")
        try:
            with _write_every_chunk():
                group = zarr.open_group(
                    d.zarr_store(read_only=mode == "r"),
                    mode="r" if mode == "r" else "r+",
                    zarr_format=3 if d.is_url else None,  # on a URL, no probing for Zarr v2 metadata (requests)
                )
            attrs = dict(group.attrs).get("latbot")
        except Exception as e:  # any Zarr/JSON failure here means the group metadata is damaged
            raise StoreError(
                f"{path}: cannot open the Zarr group ({type(e).__name__}: {e}); the store is damaged: "
                "re-convert it (run `latbot data verify` for details)"
            ) from e
        if not isinstance(attrs, dict) or "format_version" not in attrs:
            raise StoreError(f"{path}: zarr.json has no latbot attributes; this is not a LatBot episode store")
        if attrs["format_version"] != STORE_FORMAT_VERSION:
            raise StoreError(
                f"{path}: episode store format version {attrs['format_version']}, but this LatBot reads "
                f"version {STORE_FORMAT_VERSION}; re-convert the source data"
            )
        lock_fd = None
        # Object stores have no lock: one writer per store is the user's job. A command that holds the lock
        # already (`writing`) appends under it.
        if mode == "a" and not d.is_url and str(Path(path).resolve()) not in _WRITING:
            lock_fd = _take_lock(Path(path))
        try:
            if mode == "a" and not d.exists(LOG_NAME) and _all_empty(group, attrs):
                d.write_atomic(LOG_NAME, b"")  # created but never committed to (an older LatBot died here): empty
            if mode == "r" and check and not d.is_url:  # verify (check=False) reports it as a finding
                from latbot.data.integrity import check_store

                check_store(Path(path), LOG_NAME, StoreError, LOCK_NAME)
            records = _read_log(d, repair=mode == "a")
            store = cls(path, group, records, writable=mode == "a")
            store._lock_fd = lock_fd
            if check or mode == "a":
                store._check_lengths()
            if mode == "a":
                store._truncate_uncommitted()
        except BaseException:
            if lock_fd is not None:
                release_lock(lock_fd)
            raise
        return store

    def close(self) -> None:
        if self.writable:
            self.commit()
        self._drop_readers()
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:
        # A store dropped without `close` commits nothing (as after a kill) but releases its writer lock, so
        # that the next writer in this process (`convert` after a failed `create`) is not refused by a ghost.
        fd = getattr(self, "_lock_fd", None)
        if fd is not None and getattr(self, "_pid", None) == os.getpid():  # a forked child closed its copy
            release_lock(fd)
            self._lock_fd = None

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata -----------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)["latbot"]

    @property
    def cameras(self) -> list[str]:
        return list(self.attrs["cameras"])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.attrs["image_size"]
        return h, w

    @property
    def stats(self) -> dict[str, Any] | None:
        return self.attrs.get("stats")

    @property
    def num_episodes(self) -> int:
        return len(self.records)

    @property
    def num_frames(self) -> int:
        return self.records[-1].stop if self.records else 0

    def array(self, name: str) -> Any:
        """A Zarr array of the store ("frames/<camera>", "actions", "states", "native_actions", ...), opened
        once per store and process."""
        arr = self._arrays.get(name)
        if arr is not None:
            return arr
        try:
            with _write_every_chunk():
                arr = self._arrays[name] = self._group[name]
                return arr
        except KeyError as e:
            raise StoreError(f"{self.path}: no array '{name}' in this store (its zarr.json is missing?)") from e
        except Exception as e:  # unreadable array metadata
            raise StoreError(f"{self.path}/{name}: array metadata is damaged ({type(e).__name__}: {e})") from e

    def has_array(self, name: str) -> bool:
        try:
            return name in self._group
        except Exception:  # there, but its metadata does not parse: `array(name)` reports the damage
            return True

    def has_key(self, key: str) -> bool:
        return key in self._keys

    def episode_of_frame(self, frame: int) -> int:
        return int(np.searchsorted(self._offsets, frame, side="right") - 1)

    # -- reading ------------------------------------------------------------------------------------
    def read(self, episode: int, steps: np.ndarray | slice, cameras: list[str] | None = None) -> dict[str, Any]:
        """Frames (per camera, (n, H, W, 3) uint8), actions (n, 44), states (n, 46) at `steps` of an episode.
        `steps` are indices within the episode (a slice, or an increasing integer array). Only the chunks
        holding those steps are read."""
        rows = self._rows(episode, steps)
        where = f"episode {episode} ({self.records[episode].key})"
        names = [f"frames/{cam}" for cam in cameras or self.cameras] + ["actions", "states"]
        return {name: self._read_array(name, rows, where) for name in names}

    def read_steps(self, name: str, episode: int, steps: np.ndarray | slice) -> np.ndarray:
        """One array (e.g. "frames/<camera>", "native_actions") at `steps` of an episode, as `read`."""
        return self._read_array(name, self._rows(episode, steps), f"episode {episode} ({self.records[episode].key})")

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a flat array, checked like `read` (missing or corrupt blocks raise)."""
        return self._read_array(name, np.arange(start, max(start, stop)), where=f"frames {start}:{stop}")

    def _rows(self, episode: int, steps: np.ndarray | slice) -> np.ndarray:
        """Absolute rows of `steps` of an episode (increasing)."""
        rec = self.records[episode]
        if isinstance(steps, slice):
            return rec.offset + np.arange(*steps.indices(rec.length))
        steps = np.asarray(steps, np.int64)
        if steps.size and (steps.min() < 0 or steps.max() >= rec.length):
            raise IndexError(f"steps out of range for episode {episode} of length {rec.length}")
        return rec.offset + steps

    def _reader(self, name: str) -> Any:
        """The fast reader of an array (latbot.data.fastread), or None where its layout is not the store's own."""
        if os.getpid() != self._pid:  # a forked child: descriptors are shared but caches are per process
            self._readers, self._pid = {}, os.getpid()
        if name in self._readers:
            return self._readers[name]
        from latbot.data import fastread

        if self.dir.is_url:  # the fast reader preads local files; a URL store reads through zarr's own pipeline
            self._readers[name] = None
            return None
        arr = self.array(name)
        lay = fastread.layout(arr.metadata.to_dict())
        if lay is not None and lay.shape[0] < self.num_frames:
            lay = None  # shorter than the commit log (open(check=False)): let zarr-python report it
        reader = fastread.ArrayReader(self.path / name, lay, self.verify_checksums) if lay is not None else None
        self._readers[name] = reader
        return reader

    def _drop_readers(self) -> None:
        for reader in self._readers.values():
            if reader is not None and os.getpid() == self._pid:
                reader.close()
        self._readers = {}

    def _read_array(self, name: str, rows: np.ndarray, where: str) -> np.ndarray:
        from latbot.data import fastread

        reader = self._reader(name)
        if reader is None:
            return self._read_zarr(name, rows, where)
        try:
            return reader.take(rows)
        except fastread.BlockMissing as e:
            raise StoreError(
                f"{self.path}/{name}: the block holding frames {e.start}:{e.stop} is missing on disk (deleted or "
                "never written); the store is damaged: run `latbot data verify` and re-convert"
            ) from e
        except (fastread.BlockCorrupt, OSError) as e:
            raise StoreError(
                f"{self.path}/{name}: {where} cannot be read ({e}); the store is damaged: run `latbot data verify` "
                "and re-convert"
            ) from e

    def _read_zarr(self, name: str, rows: np.ndarray, where: str) -> np.ndarray:
        """The same read through zarr-python (arrays in a layout the fast reader does not handle)."""
        arr = self.array(name)
        if not len(rows):
            return np.zeros((0, *arr.shape[1:]), arr.dtype)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        self._check_blocks(name, arr, lo, hi)
        try:
            return np.asarray(arr[lo:hi])[rows - lo]
        except Exception as e:  # a block that does not decode (crc32c, codec): the bytes on disk are damaged
            raise StoreError(
                f"{self.path}/{name}: {where} cannot be read ({type(e).__name__}: {e}); the store is damaged: "
                "run `latbot data verify` and re-convert"
            ) from e

    def missing_blocks(self, name: str, start: int, stop: int) -> list[tuple[int, int]]:
        """Row ranges [a, b) within [start, stop) of `name` whose block file (a shard, or a chunk of an
        unsharded array) is not on disk or is empty. Zarr would read them as fill values; here they are damage."""
        arr = self.array(name)
        rows = arr.shards[0] if arr.shards else arr.chunks[0]
        encode = arr.metadata.chunk_key_encoding.encode_chunk_key
        known = self._present.setdefault(name, set())
        missing = []
        for block in range(start // rows, -(-stop // rows) if stop > start else start // rows):
            if block in known:
                continue
            size = self.dir.size(f"{name}/{encode((block,) + (0,) * (arr.ndim - 1))}")
            if size:  # Zarr reads an empty shard as fill values too
                known.add(block)
            else:
                missing.append((block * rows, min((block + 1) * rows, arr.shape[0])))
        return missing

    def _check_blocks(self, name: str, arr: Any, start: int, stop: int) -> None:
        stop = min(stop, arr.shape[0])
        missing = self.missing_blocks(name, start, stop) if stop > start else []
        if missing:
            a, b = missing[0]
            raise StoreError(
                f"{self.path}/{name}: the block holding frames {a}:{b} is missing on disk (deleted or never "
                "written); the store is damaged: run `latbot data verify` and re-convert"
            )

    def _check_lengths(self) -> None:
        """Every array must hold the frames the commit log promises (a shorter one means lost data)."""
        n = self.num_frames
        for name in self._array_names():
            have = self.array(name).shape[0]
            if have < n:
                raise StoreError(
                    f"{self.path}/{name}: holds {have} frames, but the commit log's episodes need {n}; the "
                    "store is damaged: run `latbot data verify` and re-convert"
                )

    # -- writing ------------------------------------------------------------------------------------
    def append(self, episode: Episode) -> EpisodeRecord:
        """Write one episode and commit it (atomically: either all of it is in the store or none)."""
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only; open with mode='a' to append")
        if self.has_key(episode.key):
            raise StoreError(f"{self.path}: episode '{episode.key}' is already in the store")
        n = len(episode)
        self._validate(episode, n)
        start, stop = self.num_frames, self.num_frames + n
        arrays: dict[str, np.ndarray] = {f"frames/{c}": episode.frames[c] for c in self.cameras}
        arrays["actions"] = episode.trajectory.actions.astype(np.float32)
        arrays["states"] = episode.trajectory.states.astype(np.float32)
        optional = (
            ("native_actions", episode.native_actions),
            ("native_states", episode.native_states),
            ("frame_motion", episode.frame_motion),
        )
        for name, value in optional:
            if value is not None:
                value = np.asarray(value, np.float32).reshape(n, -1)
                if not self.has_array(name):
                    if self.records:
                        raise StoreError(f"{episode.source}: has {name} but earlier episodes of this store do not")
                    _create_vector_array(self._group, name, value.shape[1])
                arrays[name] = value
            elif self.has_array(name):
                raise StoreError(f"{episode.source}: has no {name}, but earlier episodes of this store do")
        for name, value in arrays.items():
            arr = self.array(name)
            if value.shape[1:] != arr.shape[1:]:
                raise StoreError(
                    f"{episode.source}: {name} has shape {value.shape[1:]} per step, the store {arr.shape[1:]}"
                )
            arr.resize((stop, *arr.shape[1:]))
            arr[start:stop] = value
        self._drop_readers()  # shapes and shard files changed
        record = EpisodeRecord(
            index=len(self.records),
            offset=start,
            length=n,
            key=episode.key,
            instruction=episode.instruction,
            task=episode.task,
            subtasks=[(int(a), int(b), str(t)) for a, b, t in episode.subtasks],
            embodiment=episode.embodiment,
            fps=float(episode.fps),
            source=episode.source,
            success=episode.success,
            action_mask=mask_to_str(episode.trajectory.action_mask),
            state_mask=mask_to_str(episode.trajectory.state_mask),
        )
        if not self.dir.is_url:
            _append_log(self.path / LOG_NAME, record)  # the commit
        self.records.append(record)
        self._keys.add(record.key)
        self._offsets = np.append(self._offsets[:-1], [start, stop])
        if not self.dir.is_url:
            self._committed = len(self.records)
        elif len(self.records) - self._committed >= max(1, self._committed // REMOTE_COMMIT_FRACTION) or (
            time.monotonic() - self._last_commit >= REMOTE_COMMIT_SECONDS
        ):
            self.commit()
        return record

    def commit(self) -> None:
        """Make every appended episode durable. A local store commits each episode as it is appended; a store
        at a URL commits in groups (see REMOTE_COMMIT_FRACTION), by one atomic PUT of the whole log."""
        if self._committed == len(self.records):
            return
        self.dir.write_atomic(LOG_NAME, b"".join(_log_line(r) for r in self.records))
        self._committed = len(self.records)
        self._last_commit = time.monotonic()

    def log_bytes(self) -> bytes:
        """The committed log (after committing every appended episode): what the manifest's hash covers."""
        if self.writable:
            self.commit()
        return self.dir.read_bytes(LOG_NAME)

    def _validate(self, episode: Episode, n: int) -> None:
        where = episode.source or episode.key
        if n == 0:
            raise StoreError(f"{where}: an episode needs at least one step")
        missing = [c for c in self.cameras if c not in episode.frames]
        if missing:
            raise StoreError(f"{where}: missing camera(s) {missing}; the store has {self.cameras}")
        h, w = self.image_size
        for cam in self.cameras:
            f = episode.frames[cam]
            if f.dtype != np.uint8 or f.shape != (n, h, w, 3):
                raise StoreError(f"{where}: camera '{cam}' frames are {f.dtype}{f.shape}, expected uint8{(n, h, w, 3)}")
        try:
            episode.trajectory.check(where)
        except ValueError as e:
            raise StoreError(str(e)) from e
        for start, end, text in episode.subtasks:
            if not (0 <= start < end <= n) or not text:
                raise StoreError(f"{where}: subtask ({start}, {end}, {text!r}) is not a non-empty range in [0, {n})")

    def _truncate_uncommitted(self) -> None:
        committed = self.num_frames
        for name in self._array_names():
            arr = self.array(name)
            if arr.shape[0] != committed:
                arr.resize((committed, *arr.shape[1:]))

    def _array_names(self) -> list[str]:
        names = [f"frames/{c}" for c in self.cameras] + ["actions", "states"]
        # A native array whose directory is on disk counts even when its metadata is gone (damage to report).
        optional = ("native_actions", "native_states", "frame_motion")
        return names + [n for n in optional if self.has_array(n) or self.dir.exists(n)]

    def check_vectors(self) -> None:
        """Raise a `StoreError` unless actions and states are readable and finite in every valid dimension
        (what statistics are computed from: `latbot data stats` refuses to write NaN statistics)."""
        for name, which in (("actions", 0), ("states", 1)):
            values = self.read_rows(name, 0, self.num_frames)
            for rec in self.records:
                mask = rec.masks()[which]
                bad = ~np.isfinite(values[rec.offset : rec.stop][:, mask])
                if bad.any():
                    step = int(np.argwhere(bad)[0][0])
                    raise StoreError(
                        f"{self.path}/{name}: non-finite value in episode {rec.index} ({rec.key}) at step {step}; "
                        "the store is damaged: run `latbot data verify` and re-convert"
                    )

    def set_stats(self, stats: dict[str, Any]) -> None:
        attrs = self.attrs
        attrs["stats"] = stats
        self._group.attrs["latbot"] = attrs

    def iter_records(self) -> Iterator[EpisodeRecord]:
        return iter(self.records)

    def summary(self) -> dict[str, Any]:
        """What `latbot data info` prints."""
        from collections import Counter

        return {
            "path": str(self.path),
            "format_version": self.attrs["format_version"],
            "episodes": self.num_episodes,
            "frames": self.num_frames,
            "cameras": self.cameras,
            "image_size": list(self.image_size),
            "codec": self.attrs["codec"],
            "source_format": self.attrs.get("source_format", ""),
            "embodiments": dict(Counter(r.embodiment for r in self.records)),
            "tasks": dict(Counter(r.task for r in self.records)),
            "instructions": sorted({r.instruction for r in self.records}),
            "with_subtasks": sum(1 for r in self.records if r.subtasks),
            "success": dict(Counter(str(r.success).lower() for r in self.records)),
            "has_stats": self.stats is not None,
            "native_actions": self.array("native_actions").shape[1] if self.has_array("native_actions") else None,
        }


def _write_every_chunk() -> Any:
    """Zarr skips writing chunks equal to the fill value; a store writes them all, so that a missing block
    file always means damage (`missing_blocks`). The setting is read when an array is opened."""
    import zarr

    return zarr.config.set({"array.write_empty_chunks": True})


def _all_empty(group: Any, attrs: dict[str, Any]) -> bool:
    """True when no array of a store holds a frame (nothing was ever written to it)."""
    names = [f"frames/{c}" for c in attrs.get("cameras", [])] + ["actions", "states"]
    try:
        return all(group[n].shape[0] == 0 for n in names)
    except Exception:
        return False


def check_codec(codec: str, chunk_frames: int) -> None:
    """A `StoreError` (one line) unless `codec` is a store codec this installation can write with these chunks."""
    from latbot.data import imagecodec

    if not isinstance(codec, str) or (codec not in BYTE_CODECS and imagecodec.store_config(codec) is None):
        raise StoreError(f"codec must be one of {', '.join(CODECS)} (or jpeg<Q>, Q in 1..100), got {codec!r}")
    if codec in BYTE_CODECS:
        return
    if chunk_frames != 1:
        raise StoreError(f"codec {codec} stores one image per chunk: it needs chunk_frames=1, got {chunk_frames}")
    if not imagecodec.available(codec):
        raise StoreError(f"codec {codec}: this imagecodecs build cannot encode it (pip install -U imagecodecs)")


def _register_codecs() -> None:
    """zarr-python must know the image codec before it parses a frame array's metadata."""
    from latbot.data import imagecodec

    imagecodec.register()


def _frame_codecs(codec: str) -> dict[str, Any]:
    """`zarr.create_array` keywords for a frame array: a byte codec's compressors, or an image codec as the
    serializer (array → bytes), each chunk followed by its crc32c."""
    from zarr.codecs import Crc32cCodec

    from latbot.data.imagecodec import ImageCodec

    if codec in BYTE_CODECS:
        return {"compressors": _compressors(codec)}
    _register_codecs()
    return {"serializer": ImageCodec.from_store_codec(codec), "compressors": [Crc32cCodec()]}


def _compressors(codec: str) -> list[Any]:
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    compressor = {
        "zstd": [ZstdCodec(level=3)],
        "lz4": [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")],
        "none": [],
    }[codec]
    return [*compressor, Crc32cCodec()]


_WRITING: set[str] = set()  # resolved paths of the local stores whose lock a `writing` block of this process holds
os.register_at_fork(after_in_child=_WRITING.clear)  # a forked child holds no lock (latbot.ownership.held)


def _take_lock(path: Path) -> int:
    """Lock `path/.writer.lock` (`latbot.ownership.take_lock`: forked children close it, so the lock dies with
    this process); the descriptor."""
    return take_lock(path / LOCK_NAME, "store", StoreError)


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Hold a local store's writer lock for a whole command (`convert`, `gen-sim`): its checks, the clean-up
    of an interrupted creation and every append run under it, so a second writer is refused before it
    touches anything. `create` and `open(mode="a")` inside the block use this lock. A folder (or lock file)
    the block made for a store that was never created is removed again on exit."""
    path = Path(path)
    made_dir, made_lock = not path.exists(), not (path / LOCK_NAME).exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = _take_lock(path)
    except OSError as e:
        if made_dir:
            with suppress(OSError):
                path.rmdir()
        raise StoreError(f"{path}: cannot write a store here ({e.strerror or e}); choose another --out") from e
    key = str(path.resolve())
    _WRITING.add(key)
    try:
        yield
    finally:
        _WRITING.discard(key)
        with suppress(OSError):  # (a second writer that appeared in the meantime keeps its folder)
            if made_lock and [p.name for p in path.iterdir()] == [LOCK_NAME]:  # nothing was created: tidy up
                (path / LOCK_NAME).unlink()
                if made_dir:
                    path.rmdir()
        release_lock(fd)


def _create_vector_array(group: Any, name: str, dim: int) -> None:
    import zarr

    zarr.create_array(
        group.store,
        name=name,
        shape=(0, dim),
        dtype="float32",
        chunks=(8192, dim),
        compressors=_compressors("zstd"),
        fill_value=float("nan"),
        config={"write_empty_chunks": True},
    )


def _read_log(d: StoreDir, repair: bool) -> list[EpisodeRecord]:
    """Parse the commit log. A torn last line (a kill mid-append) is uncommitted: cut off when `repair`.
    (A log on object storage is never torn, being written whole; one copied there from a disk may be.)"""
    path = d.child(LOG_NAME)
    if not d.is_file(LOG_NAME):
        raise StoreError(f"{path}: the commit log is missing; the store is damaged")
    data = d.read_bytes(LOG_NAME)
    good_end = data.rfind(b"\n") + 1
    records = []
    try:
        text = data[:good_end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise StoreError(f"{path}: the commit log is not UTF-8 at byte {e.start}; the store is damaged") from e
    for lineno, line in enumerate(text.splitlines(), start=1):
        rec = _record_from_json(line, lineno, path)
        expected_offset = records[-1].stop if records else 0
        if rec.index != len(records) or rec.offset != expected_offset:
            raise StoreError(
                f"{path}:{lineno}: episode record {rec.index} at offset {rec.offset}, expected episode "
                f"{len(records)} at offset {expected_offset}; the commit log is damaged"
            )
        records.append(rec)
    if good_end != len(data) and repair:
        if d.is_url:
            d.write_atomic(LOG_NAME, data[:good_end])
        else:
            with path.open("r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
    return records


def _log_line(record: EpisodeRecord) -> bytes:
    return (json.dumps(asdict(record), ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _reach(d: StoreDir, call: Any, *args: Any) -> Any:
    """`call(*args)` on a store's files; a URL that cannot be reached (no backend, no credentials, no bucket,
    no network) is a `StoreError` that says so."""
    try:
        return call(*args)
    except LocationError as e:
        raise StoreError(str(e)) from e
    except (OSError, ValueError) as e:
        if not d.is_url:
            raise
        raise StoreError(
            f"{d}: cannot reach the store ({type(e).__name__}: {e}); check the URL, the credentials and the "
            "endpoint (docs/data.md, 'Stores on object storage')"
        ) from e


def _append_log(path: Path, record: EpisodeRecord) -> None:
    line = _log_line(record)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
