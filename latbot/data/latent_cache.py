"""Teacher cache: the frozen LAM's latents Z = [Z_sce; Z_mot] of every distillation clip, computed once
and stored on disk, so distillation reads one frame and a (Ns + Nm, D) array per sample instead of running
the teacher on T frames. An option for small data sets: at Table 6 scale the online teacher is the default
(docs/distillation.md), since the cache would hold samples × tokens × D × bytes (~170 TB there).

Layout (`DIR/`):

    latents/shard-00000.npy     (n, Ns + Nm, D) float32|float16: clips [k·S, k·S + n) of the data (S = SHARD)
    latents/shard-00000.json    its completion marker (written after the .npy is renamed into place)
    latbot.json                 the manifest (kind `teacher_cache`), written last, once every shard is done

Shard k is computed and written by rank k mod world_size, from the clips that rank reads; every rank reads
every shard. A build is resumable shard by shard: a shard with a marker of the same identity is skipped,
so a restarted (or killed) build computes only the missing shards; an error removes only the shard being
written. The total size is estimated before anything is written and a destination without the space is
refused. The manifest names the teacher (content hash), the sources, the clip length and the cameras; a
cache built for anything else is refused, and its files are verified against the manifest's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from latbot.data.clips import K_EPISODE, K_FRAMES, K_INSTRUCTION, K_LATENTS, K_STEP, K_SUBTASK, frames_chw
from latbot.errors import LatBotError

SHARD = 256  # samples per shard file (the unit of work, of resumption and of verification)
LATENTS = "latents"


class CacheError(LatBotError):
    """A teacher cache is missing, damaged, too large for its disk, or belongs to another teacher / data set."""


def cache_identity(teacher_hash: str, sources: list, num_frames: int, cameras: list[str] | None) -> dict:
    """What a teacher cache was computed from: the teacher run's content hash (its manifest's) and the data."""
    return {
        "teacher": teacher_hash,
        "sources": [s.model_dump(mode="json") for s in sources],
        "num_frames": num_frames,
        "cameras": cameras,
    }


def _digest(identity: dict, shape: tuple[int, int], dtype: str, shard_size: int) -> str:
    blob = json.dumps({**identity, "shape": list(shape), "dtype": dtype, "shard": shard_size}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _shard_paths(out: Path, k: int) -> tuple[Path, Path]:
    return out / LATENTS / f"shard-{k:05d}.npy", out / LATENTS / f"shard-{k:05d}.json"


def num_shards(count: int, shard_size: int | None = None) -> int:
    return -(-count // (shard_size or SHARD))


def is_complete(out: str | Path) -> bool:
    """Whether the cache at `out` has its manifest (all shards written)."""
    from latbot.artifacts import MANIFEST_NAME

    return (Path(out) / MANIFEST_NAME).is_file()


def _shard_done(out: Path, k: int, digest: str) -> bool:
    """Shard k is complete (its marker says so, for this identity); a marker of another identity is refused."""
    data, marker = _shard_paths(out, k)
    if not marker.is_file():
        return False
    got = json.loads(marker.read_text()).get("identity")
    if got != digest:
        raise CacheError(
            f"{out}: shard {k} was built for another teacher, data set, shape or cache_dtype; delete the cache "
            "to rebuild it, or point model.teacher_cache elsewhere"
        )
    return data.is_file()


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def estimate_bytes(count: int, tokens: int, width: int, dtype: str) -> int:
    """The cache's size: samples × tokens × width × bytes of `dtype` (the .npy headers and markers aside)."""
    return count * tokens * width * np.dtype(dtype).itemsize


def check_space(out: str | Path, count: int, tokens: int, width: int, dtype: str, shard_size: int | None = None) -> int:
    """Refuse (one line) a cache the destination's file system has no room for; returns the bytes still to
    write (the shards already complete are not counted). Writes nothing."""
    out, shard_size = Path(out), shard_size or SHARD
    total = estimate_bytes(count, tokens, width, dtype)
    if is_complete(out):
        return 0
    per_sample = tokens * width * np.dtype(dtype).itemsize
    done = 0
    for k in range(num_shards(count, shard_size)):
        data, marker = _shard_paths(out, k)
        if marker.is_file() and data.is_file():
            done += per_sample * min(shard_size, count - k * shard_size)
    needed = total - done
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise CacheError(
            f"{out}: the teacher cache needs {_human(needed)} ({count} clips × {tokens} tokens × {width} × "
            f"{np.dtype(dtype).itemsize} B of {dtype}), {probe} has {_human(free)} free; use another disk, "
            "cache_dtype: float16, fewer clips, or the online teacher (model.teacher_cache: null)"
        )
    return needed


def build_cache(
    out: str | Path,
    teacher,
    dataset: Dataset,
    identity: dict,
    *,
    shape: tuple[int, int],
    batch_size: int = 16,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    rank: int = 0,
    world_size: int = 1,
    shard_size: int | None = None,
    progress: bool = True,
) -> list[int]:
    """Write this rank's shards (k ≡ rank mod world_size) of `teacher.encode` over `dataset` (a ConcatDataset
    of ClipDatasets), `shape` = (tokens, width) per clip; shards already complete are skipped. Returns the
    shards this call wrote. The teacher runs under bf16 autocast when `precision` is bf16, as it does online.
    Call `finish_cache` (one process) once every rank has returned."""
    from tqdm import tqdm

    out, shard_size = Path(out), shard_size or SHARD
    count = len(dataset)
    digest = _digest(identity, shape, dtype, shard_size)
    mine = [k for k in range(num_shards(count, shard_size)) if k % world_size == rank]
    todo = [k for k in mine if not _shard_done(out, k, digest)]
    (out / LATENTS).mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    written = []
    for k in tqdm(todo, desc=f"teacher cache (rank {rank})", unit="shard", disable=not progress):
        data, marker = _shard_paths(out, k)
        partial = data.with_name(f".{data.name}.partial")
        lo, hi = k * shard_size, min((k + 1) * shard_size, count)
        part = torch.utils.data.Subset(dataset, range(lo, hi))
        loader = torch.utils.data.DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=0)
        try:
            blocks = []
            with torch.no_grad(), autocast:
                for batch in loader:
                    z_sce, z_mot = teacher.encode(batch[K_FRAMES].to(device), list(batch[K_INSTRUCTION]))
                    blocks.append(torch.cat([z_sce, z_mot], 1).float().cpu().numpy().astype(dtype))
            block = np.concatenate(blocks)
            if block.shape != (hi - lo, *shape):
                raise CacheError(f"{out}: shard {k} has latents {block.shape}, expected {(hi - lo, *shape)}")
            with partial.open("wb") as f:
                np.save(f, block)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, data)
            tmp = marker.with_name(f".{marker.name}.partial")
            tmp.write_text(json.dumps({"identity": digest, "shard": k, "start": lo, "count": hi - lo}))
            os.replace(tmp, marker)
        except BaseException:
            partial.unlink(missing_ok=True)  # only the shard being written; completed shards stay
            raise
        written.append(k)
    return written


def finish_cache(
    out: str | Path, identity: dict, count: int, shape: tuple[int, int], dtype: str, shard_size: int | None = None
) -> None:
    """Check that every shard is complete and write the manifest (the cache is usable from then on)."""
    from latbot.artifacts import write_manifest

    out, shard_size = Path(out), shard_size or SHARD
    digest = _digest(identity, shape, dtype, shard_size)
    missing = [k for k in range(num_shards(count, shard_size)) if not _shard_done(out, k, digest)]
    if missing:
        raise CacheError(f"{out}: shards {missing} are missing; run again to compute them (the others are kept)")
    extra = {**identity, "count": count, "shape": list(shape), "dtype": dtype, "shard_size": shard_size}
    write_manifest(out, "teacher_cache", extra=extra)


class ShardedLatents:
    """The cache's latents, `[i]` → the (tokens, D) array of clip i, read from its shard (memory-mapped)."""

    def __init__(self, path: Path, count: int, shape: tuple[int, int], shard_size: int):
        self.path, self.count, self.shard_size = path, count, shard_size
        self.shape = (count, *shape)
        self._open: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        k, j = divmod(int(i), self.shard_size)
        if k not in self._open:
            self._open[k] = np.load(_shard_paths(self.path, k)[0], mmap_mode="r")
        return self._open[k][j]


def open_cache(path: str | Path, identity: dict, count: int) -> ShardedLatents:
    """The cache's latents after checking it was built for this teacher, these sources and clips."""
    from latbot.artifacts import read_manifest

    path = Path(path)
    manifest = read_manifest(path, kind="teacher_cache")
    for key in ("teacher", "sources", "num_frames", "cameras"):
        if manifest.extra.get(key) != identity[key]:
            raise CacheError(
                f"{path}: built for another {key} ({manifest.extra.get(key)!r} ≠ {identity[key]!r}); "
                "delete it to rebuild it, or point model.teacher_cache elsewhere"
            )
    if manifest.extra.get("count") != count:
        raise CacheError(f"{path}: holds {manifest.extra.get('count')} latents, the data has {count} clips; rebuild it")
    from latbot.ownership import verification_enabled

    if verification_enabled():
        from latbot.artifacts import hash_directory

        if hash_directory(path) != manifest.content_hash:
            raise CacheError(
                f"{path}: the latents differ from the cache's manifest (edited or damaged); delete the cache to "
                "rebuild it, or use it anyway with `latbot --no-verify ...`"
            )
    shard_size = manifest.extra.get("shard_size", SHARD)
    shape = tuple(manifest.extra["shape"])
    missing = [k for k in range(num_shards(count, shard_size)) if not _shard_paths(path, k)[0].is_file()]
    if missing:
        raise CacheError(f"{path}: shard files {missing} are missing; delete the cache to rebuild it")
    return ShardedLatents(path, count, shape, shard_size)


class CachedLatentDataset(Dataset):
    """The clips of `clips` (a ConcatDataset of ClipDatasets) with the teacher's latents from the cache:
    only the first frame is read. Same indices as `clips`, so the same sampler drives both."""

    def __init__(self, clips, cache_path: str | Path, identity: dict):
        self.clips = clips
        self.path = Path(cache_path)
        self.identity = identity
        self.count = len(clips)
        open_cache(self.path, identity, self.count)  # fail early, in the main process
        self._latents = None

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_latents": None}

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._latents is None:
            self._latents = open_cache(self.path, self.identity, self.count)
        part, local = _locate(self.clips, i)
        episode, t = part.starts[local]
        rec = part.store.records[episode]
        frame = part.store.read(episode, np.array([t]), part.cameras[:1])[f"frames/{part.cameras[0]}"]
        subtask = rec.subtask_at(t)
        return {
            K_FRAMES: frames_chw(frame),
            K_LATENTS: torch.from_numpy(np.array(self._latents[i], np.float32)),
            K_INSTRUCTION: rec.instruction,
            K_SUBTASK: subtask or "",  # "": the episode has no subtask here (distillation decides what to do)
            K_EPISODE: episode,
            K_STEP: t,
        }


def _locate(concat, i: int):
    import bisect

    k = bisect.bisect_right(concat.cumulative_sizes, i)
    start = concat.cumulative_sizes[k - 1] if k else 0
    return concat.datasets[k], i - start
