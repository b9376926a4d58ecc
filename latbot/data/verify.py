"""`latbot data verify`: everything that can be wrong with an episode store, found and reported.

Checks: the format version; the commit log (parseable, contiguous, a torn last record); every array's
length against the log; every block file (a shard of frames, a chunk of actions/states) is on disk (Zarr
would read a missing one as fill values; every store chunk is written, so a missing file is damage);
every chunk decodes (zstd/lz4 plus a crc32c checksum per chunk catches corrupted bytes); non-finite
values in valid action/state dimensions; masks and subtask ranges; the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latbot.data.spaces import ACTION_DIM, STATE_DIM, mask_from_str


@dataclass
class Problem:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def verify_store(path: str | Path, progress: bool = False) -> list[Problem]:
    """All problems found in the store at `path` (a directory or an fsspec URL; an empty list means it is sound)."""
    from latbot.artifacts import read_manifest
    from latbot.data.location import store_location
    from latbot.data.store import LOG_NAME, EpisodeStore
    from latbot.errors import LatBotError

    path = store_location(path)
    if not isinstance(path, str) or "://" not in path:
        from latbot.data.integrity import scan

        bad = scan(Path(path))[0]
        if bad:  # never opened: a read of one would hang
            return [Problem(str(p), "not a regular file (a FIFO, socket or device, or a link to one)") for p in bad]
    try:
        store = EpisodeStore.open(path, check=False)
    except LatBotError as e:
        return [Problem(str(path), str(e))]
    path, files = store.path, store.dir
    problems: list[Problem] = []
    log = files.child(LOG_NAME)
    raw = files.read_bytes(LOG_NAME)
    if raw and not raw.endswith(b"\n"):
        problems.append(
            Problem(str(log), "the last record is torn (an interrupted write); reopen for append to repair")
        )
    try:
        read_manifest(path, "episode_store")
    except LatBotError as e:
        problems.append(Problem(str(path), f"{e} (was the conversion interrupted? rerun it to finish)"))
    else:
        if not files.is_url:
            from latbot.data.integrity import check_store
            from latbot.data.store import LOCK_NAME, StoreError

            try:
                check_store(Path(path), LOG_NAME, StoreError, LOCK_NAME)
            except StoreError as e:
                problems.append(Problem(str(path), str(e)))
    n = store.num_frames
    for group in sorted({name.rsplit("/", 1)[0] for name in store._array_names() if "/" in name}):
        problems += _check_group(files, group)
    for name in store._array_names():
        try:
            arr = store.array(name)
        except LatBotError as e:
            problems.append(Problem(str(path), str(e)))
            continue
        if arr.shape[0] != n:
            problems.append(Problem(f"{path}/{name}", f"has {arr.shape[0]} frames, the commit log {n}"))
        for a, b in store.missing_blocks(name, 0, min(n, arr.shape[0])):
            problems.append(Problem(f"{path}/{name}", f"the block file of frames {a}:{b} is missing (deleted?)"))
        problems += _check_chunks(path, name, arr, min(n, arr.shape[0]), store, progress)
    for rec in store.records:
        where = f"{path} episode {rec.index} ({rec.key})"
        try:
            mask_from_str(rec.action_mask, ACTION_DIM), mask_from_str(rec.state_mask, STATE_DIM)
        except ValueError as e:
            problems.append(Problem(where, str(e)))
        for start, end, text in rec.subtasks:
            if not (0 <= start < end <= rec.length and text):
                problems.append(Problem(where, f"subtask ({start}, {end}, {text!r}) outside [0, {rec.length})"))
    store.close()
    return problems


def _check_group(files, name: str) -> list[Problem]:
    """Zarr does not read an intermediate group's metadata to reach its arrays: check it here."""
    import json

    group, meta = files.child(name), files.child(f"{name}/zarr.json")
    try:
        doc = json.loads(files.read_bytes(f"{name}/zarr.json"))
    except FileNotFoundError:
        return [Problem(str(group), "the group's zarr.json is missing (deleted?)")]
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return [Problem(str(meta), f"not readable JSON ({e})")]
    if not isinstance(doc, dict) or doc.get("node_type") != "group" or doc.get("zarr_format") != 3:
        return [Problem(str(meta), "is not Zarr v3 group metadata")]
    return []


def _check_chunks(path: Path | str, name: str, arr, n: int, store, progress: bool) -> list[Problem]:
    from tqdm import tqdm

    problems = []
    width = {"actions": ACTION_DIM, "states": STATE_DIM}.get(name)
    if width is not None and (arr.ndim != 2 or arr.shape[1] != width):
        # damaged array metadata: the rows cannot be read as the unified space (found by the fuzz suite)
        return [Problem(f"{path}/{name}", f"shape {tuple(arr.shape)}, expected (N, {width}); the metadata is damaged")]
    step = arr.shards[0] if arr.shards else arr.chunks[0]
    starts = range(0, n, step)
    for start in tqdm(starts, desc=f"verify {name}", unit="block", disable=not progress, leave=False):
        stop = min(start + step, n)
        if store.missing_blocks(name, start, stop):
            continue  # reported once above
        try:
            block = arr[start:stop]
        except Exception as e:  # any decoding failure is a finding, not a crash
            problems.append(Problem(f"{path}/{name}", f"frames {start}:{stop} cannot be read: {type(e).__name__}: {e}"))
            continue
        if name in ("actions", "states") and not np.isfinite(block).all():
            problems += _nonfinite(path, name, block, start, store)
    return problems


def _nonfinite(path: Path | str, name: str, block: np.ndarray, start: int, store) -> list[Problem]:
    out = []
    for row in np.unique(np.argwhere(~np.isfinite(block))[:, 0]):
        frame = start + int(row)
        ep = store.records[store.episode_of_frame(frame)]
        mask = ep.masks()[0 if name == "actions" else 1]
        dims = np.flatnonzero(~np.isfinite(block[row]) & mask)
        if dims.size:
            out.append(
                Problem(
                    f"{path}/{name}",
                    f"NaN/inf at frame {frame} (episode {ep.index}, step {frame - ep.offset}), dims {dims.tolist()}",
                )
            )
            if len(out) >= 20:
                out.append(Problem(f"{path}/{name}", "… more non-finite values omitted"))
                break
    return out
