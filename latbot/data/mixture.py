"""Training mixtures over episode stores: `build_mixture` turns a recipe's `data.sources` (a mixture file
is resolved into sources when the recipe loads, latbot.recipes.mixture) into one dataset plus a
`MixtureSampler` that draws sources by weight; `select_episodes` makes few-shot splits.

A source's `store` may name a SET of stores, e.g. the shards of one conversion (`latbot data convert
--shard I/N`): a glob (`fractal/shard-*`) or a text file listing one store per line. The set is one
source: its clips are ordered by the natural order of their episodes' source keys, which is the order a
single-process conversion writes, so a mixture over the shards samples exactly what it would from one
store holding the same episodes (and resumes exactly, the sampler being a function of its position).
Stores, patterns and list files may be fsspec URLs (`s3://bucket/fractal/shard-*`, latbot.data.location).
"""

from __future__ import annotations

import glob
import itertools
from pathlib import Path

import numpy as np

from latbot.data.sources import DataSource
from latbot.errors import LatBotError

GLOB_CHARS = set("*?[")


def resolve_stores(store: str | Path) -> list[Path | str]:
    """The stores a source names: itself, the sorted matches of a glob, or the lines of a list file."""
    from latbot.data.location import is_url
    from latbot.data.store import StoreError

    text = str(store)
    if is_url(text):
        return _resolve_url(text)
    if GLOB_CHARS & set(text):
        found = sorted(Path(p) for p in glob.glob(text) if (Path(p) / "zarr.json").is_file())
        if not found:
            raise StoreError(f"{text}: no episode store matches this pattern")
        return found
    path = Path(text)
    if path.is_file():
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        listed = [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines if ln and ln[0] != "#"]
        if not listed:
            raise StoreError(f"{path}: lists no store (one store path per line)")
        return listed
    return [path]


def _resolve_url(url: str) -> list[str]:
    """`resolve_stores` for a URL: a store, a pattern (fsspec's glob), or a list file (lines: URLs, or paths
    relative to the list file's own location)."""
    from latbot.data.location import StoreDir, glob, is_url, join, store_location
    from latbot.data.store import StoreError

    if GLOB_CHARS & set(url.split("://", 1)[1]):
        found = [u for u in glob(url) if StoreDir(u).is_file("zarr.json")]
        if not found:
            raise StoreError(f"{url}: no episode store matches this pattern")
        return found
    url = str(store_location(url))
    parent, name = url.rsplit("/", 1) if url.count("/") > 2 else (url, "")
    listing = StoreDir(parent)
    if name and listing.is_file(name):
        lines = [ln.strip() for ln in listing.read_bytes(name).decode("utf-8").splitlines()]
        listed = [ln if is_url(ln) else str(join(parent, ln)) for ln in lines if ln and ln[0] != "#"]
        if not listed:
            raise StoreError(f"{url}: lists no store (one store URL per line)")
        return listed
    return [url]


def stores_exist(store: str | Path) -> bool:
    """True when every store a source names is there (for `latbot recipe validate`)."""
    return check_stores(store) is None


def check_stores(store: str | Path) -> str | None:
    """None when every store a source names is there, else what is wrong: "does not exist", or for a URL
    that cannot be reached, "cannot be checked: <why>" (no backend installed, no credentials, no network)."""
    from latbot.data.location import StoreDir, is_url

    try:
        stores = resolve_stores(store)
    except Exception as e:  # a pattern with no match, an unreadable list file, an unreachable URL
        if is_url(str(store)) and not isinstance(e, LatBotError):
            return f"cannot be checked: {type(e).__name__}: {e}"
        return "does not exist"
    for p in stores:
        try:
            if not StoreDir(p).is_file("zarr.json"):
                return "does not exist"
        except Exception as e:  # fsspec backends raise their own errors (credentials, network)
            return f"cannot be checked: {type(e).__name__}: {e}"
    return None


class StoreSet:
    """Several per-store datasets (one per shard) as one, in the natural order of the episodes' source keys."""

    def __init__(self, parts: list):
        from latbot.data.convert import natural_key

        entries = []  # (key, part, first index in the part, number of samples)
        for p, part in enumerate(parts):
            episodes = np.asarray([e for e, _ in part.starts], np.int64)  # runs: one per episode, in order
            bounds = np.r_[0, np.flatnonzero(np.diff(episodes)) + 1, len(episodes)]
            for lo, hi in itertools.pairwise(bounds):
                entries.append((part.store.records[int(episodes[lo])].key, p, int(lo), int(hi - lo)))
        keys = [e[0] for e in entries]
        if len(set(keys)) != len(keys):
            raise ValueError("the stores of a set hold the same source key twice (overlapping shards?)")
        entries.sort(key=lambda e: natural_key(e[0]))
        self.parts = parts
        self.part = np.array([e[1] for e in entries], np.int64)
        self.first = np.array([e[2] for e in entries], np.int64)
        self.ends = np.cumsum([e[3] for e in entries])

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, i: int):
        j = int(np.searchsorted(self.ends, i, side="right"))
        before = int(self.ends[j - 1]) if j else 0
        return self.parts[self.part[j]][int(self.first[j]) + i - before]


def build_mixture(
    sources: list[DataSource],
    num_frames: int,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    cameras: list[str] | None = None,
    normalize: bool = False,
    action_stats: list[dict] | None = None,
    reverse: float = 0.0,
):
    """(ConcatDataset of ClipDatasets, MixtureSampler) over `sources`, honouring weights and strides;
    `action_stats` (one per source, `interval_action_stats`) normalise each source's clip actions; `reverse`
    plays that fraction of the clips backwards (`ClipDataset`, chosen by `seed`)."""
    from torch.utils.data import ConcatDataset

    from latbot.data.clips import ClipDataset, MixtureSampler

    parts = []
    for k, s in enumerate(sources):
        stats = action_stats[k] if action_stats is not None else None
        clips = [
            ClipDataset(
                store,
                num_frames,
                s.frame_stride,
                episodes=source_episodes(s, store),
                cameras=cameras,
                normalize=normalize,
                action_stats=stats,
                reverse=reverse,
                reverse_seed=seed,
            )
            for store in _non_empty(resolve_stores(s.store))
        ]
        parts.append(clips[0] if len(clips) == 1 else StoreSet(clips))
    sampler = MixtureSampler(
        [len(p) for p in parts], [s.weight for s in sources], seed=seed, rank=rank, world_size=world_size
    )
    return ConcatDataset(parts), sampler


def merged_stats(paths: list[Path | str]) -> dict:
    """Statistics of a set of stores as if they were one: every store's rows, concatenated, through the same
    `compute_stats` (exact quantiles of the union, not an average of per-store quantiles)."""
    from dataclasses import replace

    from latbot.data.normalize import compute_stats
    from latbot.data.store import EpisodeStore

    arrays: dict[str, list] = {"actions": [], "states": []}
    records, offset = [], 0
    for path in paths:
        with EpisodeStore.open(path) as store:
            for name in arrays:
                arrays[name].append(store.read_rows(name, 0, store.num_frames))
            records += [replace(r, offset=r.offset + offset) for r in store.records]
            offset += store.num_frames

    class _Union:  # what compute_stats reads of a store
        num_frames = offset

        def __init__(self):
            self.records = records

        def array(self, name):
            return np.concatenate(arrays[name])

    return compute_stats(_Union())


def _non_empty(stores: list[Path | str]) -> list[Path | str]:
    """The stores of a set that hold episodes (a shard may be empty); a lone store is kept as it is."""
    from latbot.data.store import EpisodeStore

    if len(stores) == 1:
        return stores
    kept = []
    for path in stores:
        with EpisodeStore.open(path) as store:
            if store.num_episodes:
                kept.append(path)
    return kept or stores[:1]


def source_episodes(source: DataSource, store: str | Path | None = None) -> list[int] | None:
    """The episodes a source (or one `store` of its set) contributes after its `tasks` / `exclude_tasks` /
    `demos_per_task` (None: all). On a set, `demos_per_task` counts per store."""
    from latbot.data.store import EpisodeStore

    if source.tasks is None and not source.exclude_tasks and source.demos_per_task is None:
        return None
    with EpisodeStore.open(store if store is not None else source.store) as store:
        return select_episodes(store.records, source.tasks, source.demos_per_task, source.exclude_tasks)


def source_action_stats(source: DataSource) -> dict:
    """The LAM's action statistics of one source (a store or a set of shard stores, taken as one):
    `latbot.data.clips.interval_action_stats` at the source's stride over its selected episodes."""
    from latbot.data.clips import interval_action_stats

    stores = _non_empty(resolve_stores(source.store))
    return interval_action_stats([(p, source_episodes(source, p)) for p in stores], source.frame_stride)


def select_episodes(
    records, tasks: list[str] | None, demos_per_task: int | None, exclude_tasks: list[str] = ()
) -> list[int]:
    """Few-shot splits: episode indices of `tasks` (None = all) minus `exclude_tasks`, at most
    `demos_per_task` per task (the first ones in store order, so a 10-demo subset is inside the 50-demo one)."""
    counts: dict[str, int] = {}
    chosen = []
    for r in records:
        if (tasks is not None and r.task not in tasks) or r.task in exclude_tasks:
            continue
        if demos_per_task is not None and counts.get(r.task, 0) >= demos_per_task:
            continue
        counts[r.task] = counts.get(r.task, 0) + 1
        chosen.append(r.index)
    return chosen
