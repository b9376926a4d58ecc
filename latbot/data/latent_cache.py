"""Teacher cache: the frozen LAM's latents Z = [Z_sce; Z_mot] of every distillation clip, computed once
and stored in Zarr, so distillation reads one frame and a (Ns + Nm, D) array per sample instead of
running the teacher on T frames.

Layout: `latents` (N, Ns + Nm, D) float32|float16, one chunk per sample, and a manifest (kind
`teacher_cache`) whose `extra` names the teacher (content hash), the sources and the clip length. The
cache is written into a temporary directory and renamed when complete: it exists whole or not at all.
A cache whose teacher, sources or clip set differ from the recipe's is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from latbot.data.clips import K_EPISODE, K_FRAMES, K_INSTRUCTION, K_LATENTS, K_STEP, K_SUBTASK
from latbot.errors import LatBotError

SHARD = 256  # samples per shard file


class CacheError(LatBotError):
    """A teacher cache is missing, damaged or belongs to another teacher / data set."""


def cache_identity(teacher_hash: str, sources: list, num_frames: int, cameras: list[str] | None) -> dict:
    """What a teacher cache was computed from: the teacher run's content hash (its manifest's) and the data."""
    return {
        "teacher": teacher_hash,
        "sources": [s.model_dump(mode="json") for s in sources],
        "num_frames": num_frames,
        "cameras": cameras,
    }


def build_cache(
    out: str | Path,
    teacher,
    dataset: Dataset,
    identity: dict,
    *,
    batch_size: int = 16,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Run `teacher.encode` over every clip of `dataset` (a ConcatDataset of ClipDatasets) into `out`."""
    import zarr
    from tqdm import tqdm

    from latbot.artifacts import write_manifest

    out = Path(out)
    if out.exists():
        raise CacheError(f"{out} already exists; delete it or point model.teacher_cache elsewhere")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    arr = None
    written, pending = 0, []
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="teacher cache", unit="batch", disable=not progress):
                z_sce, z_mot = teacher.encode(batch[K_FRAMES].to(device), list(batch[K_INSTRUCTION]))
                z = torch.cat([z_sce, z_mot], 1).float().cpu().numpy().astype(dtype)
                if arr is None:
                    # one chunk per sample (random reads), SHARD samples per file (whole shards are written)
                    group = zarr.open_group(str(tmp), mode="w")
                    shape = (len(dataset), *z.shape[1:])
                    arr = group.create_array(
                        "latents", shape=shape, chunks=(1, *shape[1:]), shards=(SHARD, *shape[1:]), dtype=dtype
                    )
                pending.append(z)
                buffered = sum(len(p) for p in pending)
                if buffered >= SHARD or written + buffered == len(dataset):
                    block = np.concatenate(pending)
                    full = len(block) if written + len(block) == len(dataset) else len(block) // SHARD * SHARD
                    arr[written : written + full] = block[:full]
                    written += full
                    pending = [block[full:]] if full < len(block) else []
        if written != len(dataset):
            raise CacheError(f"wrote {written} of {len(dataset)} latents")
        write_manifest(tmp, "teacher_cache", extra={**identity, "count": written, "shape": list(arr.shape[1:])})
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def open_cache(path: str | Path, identity: dict, count: int) -> Any:
    """The cache's `latents` array after checking it was built for this teacher, these sources and clips."""
    import zarr

    from latbot.artifacts import read_manifest

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
    try:
        return zarr.open_group(str(path), mode="r")["latents"]
    except Exception as e:
        raise CacheError(f"{path}: cannot open the latents array ({e}); delete the cache to rebuild it") from e


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
            K_FRAMES: torch.from_numpy(np.ascontiguousarray(frame.transpose(0, 3, 1, 2))),
            K_LATENTS: torch.from_numpy(np.asarray(self._latents[i], np.float32)),
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
