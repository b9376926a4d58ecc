"""Source → episode store, resumable: `latbot data convert` and the Python API behind it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latbot.config import PluginConfig
from latbot.data.location import LocationError, StoreDir
from latbot.data.store import (
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_CODEC,
    LOCK_NAMES,
    LOG_NAME,
    MAX_IMAGE_SIDE,
    EpisodeStore,
    StoreError,
    check_codec,
)


@dataclass
class ConvertResult:
    store: Path | str  # a path, or a URL (latbot.data.location)
    added: int
    skipped: int
    failed: list[str] = field(default_factory=list)
    total_episodes: int = 0
    notes: list[str] = field(default_factory=list)  # what a default layout assumed or could not place
    other_shards: int = 0  # episodes of the source left to the other shards


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`"I/N"` → (I, N) with 0 ≤ I < N (the `--shard` option); None stays None."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise StoreError(f"--shard: expected I/N (e.g. 0/8), got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise StoreError(f"--shard: I/N needs 0 <= I < N, got {text!r}")
    return index, count


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) an episode belongs to, from its source key alone: stable across machines,
    processes and Python versions (sha1, not `hash`), so N processes split a source without talking."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % count


def natural_key(key: str) -> list:
    """Sort key for source keys: digit runs compare as numbers ("ep_2" < "ep_10"). A store holds its episodes
    in this order, so a set of shard stores merged in this order equals the single-process store."""
    import re

    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", key) if t]


def convert(
    adapter_config: PluginConfig,
    src: str | Path,
    out: str | Path,
    *,
    image_size: int = 224,
    resize_mode: str = "pad",
    cameras: list[str] | None = None,
    codec: str = DEFAULT_CODEC,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    shard_frames: int = 256,
    limit: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    manifest_extra: dict[str, Any] | None = None,
) -> ConvertResult:
    """Convert every episode of `src` into the store at `out` (created, or resumed if it exists).

    Episodes already in the store (same source key) are skipped, so rerunning after an interruption
    continues where it stopped. A malformed source episode stops the conversion with a `SourceError`
    naming the file and key (or, with `skip_bad`, is reported and skipped); committed episodes stay.
    A conversion that fails before its first episode is committed removes the store it created, so
    nothing is left behind and a retry starts clean; with `skip_bad`, a run where every episode it tried
    failed is an error too.

    Episodes are written in the natural order of their source keys (`natural_key`). With `shard=(i, n)`
    only the episodes with `shard_of(key, n) == i` are converted, so n processes, each with its own
    `out`, together write exactly the single-process store, split n ways. `out` may be an fsspec URL
    (`s3://bucket/stores/x`); the source is a local path."""
    from latbot.data.adapters.base import SourceError
    from latbot.data.video import RESIZE_MODES

    src, store_dir = Path(src), StoreDir(out)
    out = store_dir.location
    if not src.exists():
        raise SourceError(f"{src}: source not found")
    if resize_mode not in RESIZE_MODES:
        raise StoreError(f"--resize: must be one of {', '.join(RESIZE_MODES)}, got {resize_mode!r}")
    _check_int("--image-size", image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIDE)
    _check_int("--limit", limit, 1, 10**9, optional=True)
    _check_int("chunk_frames", chunk_frames, 1, 65536)
    _check_int("shard_frames", shard_frames, chunk_frames, 65536)
    check_codec(codec, chunk_frames)
    try:
        if store_dir.exists() and not store_dir.is_dir():
            raise StoreError(f"--out {out}: exists and is not a directory; choose another --out")
        has_store = store_dir.exists("zarr.json")
    except (LocationError, OSError) as e:
        raise StoreError(f"--out {out}: cannot reach it ({e}); see docs/data.md, 'Stores on object storage'") from e
    claim_store(store_dir, out)  # before anything is touched: --out is new, empty, or a store LatBot wrote
    if has_store:  # checked before the lock too (and again under it), so that a refusal changes nothing
        _check_same_source(store_dir, src, adapter_config.type)
    args = (adapter_config, src, out, image_size, resize_mode, cameras, codec, chunk_frames, shard_frames, limit)
    args += (skip_bad, progress, shard, manifest_extra)
    if store_dir.is_url:  # object stores have no lock: one writer per store is the user's job (docs/data.md)
        return _convert_cleaning_up(store_dir, args)
    from latbot.data.store import writing

    with writing(out):  # the whole command: a second writer is refused before it touches anything
        return _convert_cleaning_up(store_dir, args)


def _convert_cleaning_up(store_dir: StoreDir, args: tuple) -> ConvertResult:
    """`_convert(*args)`; a store whose creation was interrupted is started again, and one this conversion
    created but could not commit an episode to is removed (only the store's own files)."""
    if _never_written(store_dir):
        _remove_store(store_dir, keep_dir=True)  # a store whose creation was interrupted: start it again
    created = not store_dir.exists("zarr.json")
    leftover = store_dir.exists()
    try:
        return _convert(*args)
    except BaseException:
        if created and _uncommitted(store_dir):
            _remove_store(store_dir, keep_dir=leftover)
        raise


def _convert(
    adapter_config,
    src,
    out,
    image_size,
    resize_mode,
    cameras,
    codec,
    chunk_frames,
    shard_frames,
    limit,
    skip_bad,
    progress,
    shard,
    manifest_extra,
) -> ConvertResult:
    from tqdm import tqdm

    from latbot import registry
    from latbot.data.adapters.base import SourceError
    from latbot.data.video import VideoError

    adapter = registry.build("datasets", adapter_config)
    available = adapter.cameras(src)
    cams = cameras or available
    unknown = [c for c in cams if c not in available]
    if unknown:
        raise SourceError(f"{src}: camera(s) {unknown} not in this source (it has {', '.join(available)})")
    size = (image_size, image_size)
    if StoreDir(out).exists("zarr.json"):
        _check_same_source(StoreDir(out), src, adapter_config.type)
        store = EpisodeStore.open(out, mode="a")
        if store.cameras != cams or store.image_size != size:
            store.close()
            raise StoreError(
                f"{out}: existing store has cameras {store.cameras} at {list(store.image_size)}, this conversion "
                f"asks for {cams} at {list(size)}; choose another --out or matching options"
            )
    else:
        store = EpisodeStore.create(
            out,
            cameras=cams,
            image_size=size,
            chunk_frames=chunk_frames,
            shard_frames=shard_frames,
            codec=codec,
            source_format=adapter_config.type,
            source=str(src.resolve()),
        )
    result = ConvertResult(store=out, added=0, skipped=0)
    try:
        items = sorted(adapter.episodes(src), key=lambda item: natural_key(item.key))
        result.notes = list(getattr(adapter, "notes", []))
        if shard is not None:
            mine = [item for item in items if shard_of(item.key, shard[1]) == shard[0]]
            result.other_shards = len(items) - len(mine)
            items = mine
        if limit is not None:
            items = items[:limit]
        bar = tqdm(items, desc=f"convert {src.name}", unit="episode", disable=not progress)
        for item in bar:
            if store.has_key(item.key):
                result.skipped += 1
                continue
            try:
                episode = item.load(image_size=size, resize_mode=resize_mode, cameras=cams)
                store.append(episode)
            except (SourceError, VideoError, StoreError) as e:
                if not skip_bad:
                    raise
                result.failed.append(str(e))
                continue
            result.added += 1
            bar.set_postfix(frames=store.num_frames)
        if result.failed and not result.added:
            raise SourceError(
                f"{src}: every episode tried failed ({len(result.failed)}); the first: {result.failed[0]}"
            )
        extra = {"source": str(src.resolve()), "adapter": adapter_config.model_dump(mode="json")}
        if shard is not None:
            extra["shard"] = {"index": shard[0], "count": shard[1], "by": "sha1(source key) mod count"}
        if result.notes:
            extra["layout_notes"] = result.notes
        finalize(store, extra={**extra, **(manifest_extra or {})})
        result.total_episodes = store.num_episodes
    finally:
        store.close()
    return result


MIN_IMAGE_SIZE = 8  # pixels; the recipes' data.image_size has the same bounds


def _check_int(name: str, value: Any, lo: int, hi: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise StoreError(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")


# What a store directory may hold (LatBot's files); anything else in an --out without a store manifest is a
# user's, and the conversion refuses to touch the folder.
STORE_FILES = ("zarr.json", LOG_NAME, "latbot.json")
STORE_ARRAYS = ("frames", "actions", "states", "native_actions", "native_states", "frame_motion")
STORE_NAMES = frozenset({*STORE_FILES, *STORE_ARRAYS, *LOCK_NAMES})


def claim_store(d: StoreDir, out) -> None:
    """Refuse an --out that LatBot did not make as an episode store (local paths; at a URL the bucket's
    layout is the user's business): another artifact, or a folder of other files."""
    from latbot.ownership import manifest_kind

    if d.is_url or not Path(d.location).is_dir():
        return
    path = Path(d.location)
    kind = manifest_kind(path)
    if kind == "episode_store":
        return
    if kind is not None:
        raise StoreError(
            f"--out {out}: holds a '{kind}' artifact, not an episode store; nothing was changed; choose another --out"
        )
    names = sorted(p.name for p in path.iterdir() if p.name not in LOCK_NAMES)
    if not names:
        return
    foreign = [n for n in names if n not in STORE_NAMES]
    if foreign or not _latbot_group(path):
        shown = ", ".join((foreign or names)[:3]) + (", …" if len(foreign or names) > 3 else "")
        raise StoreError(
            f"--out {out}: holds files that are not a LatBot episode store ({shown}); nothing was changed; "
            "choose another --out (an empty or new folder)"
        )


def _latbot_group(path: Path) -> bool:
    """True when `path/zarr.json` is the group metadata of a LatBot store (its creation was interrupted)."""
    return "format_version" in _group_attrs(StoreDir(path))


def _group_attrs(d: StoreDir) -> dict[str, Any]:
    """The LatBot attributes in a store's group `zarr.json`, read without opening the store (its log may not
    exist yet); {} when there are none or the file is not readable JSON (opening the store then says why)."""
    import json

    try:
        size = d.size("zarr.json")  # None: no regular file (a FIFO would block the read)
        if size is None or size > 1 << 20:
            return {}
        attrs = json.loads(d.read_bytes("zarr.json").decode("utf-8")).get("attributes", {}).get("latbot")
    except (OSError, ValueError, AttributeError, LocationError):
        return {}
    return attrs if isinstance(attrs, dict) else {}


def _check_same_source(d: StoreDir, src: Path, adapter: str) -> None:
    """A store holds one source: refuse to add another source's episodes to it, naming both. The source is
    recorded in the store's attributes when it is created (`source`, `source_format`) and in its manifest
    when a conversion finishes; a store that recorded neither (an older LatBot) is resumed as before."""
    from latbot.artifacts import read_manifest
    from latbot.errors import ArtifactError

    attrs = _group_attrs(d)
    made_from, made_by = attrs.get("source"), attrs.get("source_format") or None
    try:
        extra = read_manifest(d.location, "episode_store").extra
    except ArtifactError:
        extra = {}  # a store whose first conversion did not finish: no manifest yet
    made_from = made_from or extra.get("source")
    made_by = made_by or (extra.get("adapter") or {}).get("type")
    this = str(src.resolve())
    if (made_from is not None and made_from != this) or (made_by is not None and made_by != adapter):
        recorded = " ".join(x for x in (made_from, f"({made_by})" if made_by else None) if x)
        raise StoreError(
            f"--out {d.location}: this store was made from {recorded}; this conversion reads {this} ({adapter}); "
            "a store holds one source: choose another --out and combine the stores in a mixture"
        )


def _uncommitted(out: StoreDir) -> bool:
    """True when `out` holds a store (or the start of one) without a single committed episode."""
    try:
        return out.is_dir() and not out.size(LOG_NAME)
    except OSError:
        return False


def _never_written(out: StoreDir) -> bool:
    """A store directory with group metadata but no commit log and no array data (creation was cut short)."""
    return out.is_file("zarr.json") and not out.exists(LOG_NAME) and not out.has_block_files()


def _remove_store(out: StoreDir, keep_dir: bool) -> None:
    """Remove what a failed first conversion wrote: only the files the store layout defines, never a user's
    other files, nor the folders that hold them (a local store's lock stays with its `writing` block)."""
    if not out.is_url:
        for name in STORE_FILES:
            path = Path(out.location) / name
            if path.is_file() and not path.is_symlink():
                path.unlink()
        for name in STORE_ARRAYS:
            _prune_zarr(Path(out.location) / name)
        return
    for name in (*STORE_FILES, *STORE_ARRAYS):
        out.remove(name)
    if not keep_dir:
        out.remove_root_if_empty()  # something else is in there: leave it


def _prune_zarr(folder: Path, chunks: bool = False) -> None:
    """Remove a local Zarr array or group's own files under `folder` (every `zarr.json`, and the numbered
    chunk and shard files under `c/`), then each folder left empty; anything else stays, with its folders."""
    import contextlib

    if folder.is_symlink() or not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_symlink():
            continue
        if path.is_dir():
            _prune_zarr(path, chunks or path.name == "c")
        elif path.name == "zarr.json" or (chunks and path.name.isdigit()):
            path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def finalize(store: EpisodeStore, extra: dict[str, Any] | None = None) -> None:
    """Recompute normalisation statistics and write the store's manifest (after any change). What the previous
    manifest recorded (the source, the adapter, a simulator's settings) is kept unless `extra` replaces it."""
    from latbot.artifacts import read_manifest, write_manifest
    from latbot.data.normalize import compute_stats
    from latbot.errors import ArtifactError

    try:
        kept = read_manifest(store.path, "episode_store").extra
    except ArtifactError:
        kept = {}

    store.check_vectors()
    store.set_stats(compute_stats(store))
    digest = hashlib.sha256(store.log_bytes()).hexdigest()
    summary = {k: v for k, v in store.summary().items() if k in ("episodes", "frames", "cameras", "image_size")}
    if not StoreDir(store.path).is_url:  # the Zarr metadata too (latbot.data.integrity); local stores only
        from latbot.data.integrity import metadata_digest

        summary["metadata_hash"] = metadata_digest(Path(store.path))
    extra = {**kept, **summary, **(extra or {})}
    write_manifest(store.path, "episode_store", content_hash=f"sha256:{digest}", extra=extra)
