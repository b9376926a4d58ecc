"""Training mixtures over episode stores: `build_mixture` turns a recipe's `data.sources` (a mixture file
is resolved into sources when the recipe loads, latbot.recipes.mixture) into one dataset plus a
`MixtureSampler` that draws sources by weight; `select_episodes` makes few-shot splits.
"""

from __future__ import annotations

from latbot.recipes.schema import DataSource


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
):
    """(ConcatDataset of ClipDatasets, MixtureSampler) over `sources`, honouring weights and strides;
    `action_stats` (one per source, `interval_action_stats`) normalise each source's clip actions."""
    from torch.utils.data import ConcatDataset

    from latbot.data.clips import ClipDataset, MixtureSampler

    parts = []
    for k, s in enumerate(sources):
        episodes = source_episodes(s)
        stats = action_stats[k] if action_stats is not None else None
        parts.append(
            ClipDataset(
                s.store,
                num_frames,
                s.frame_stride,
                episodes=episodes,
                cameras=cameras,
                normalize=normalize,
                action_stats=stats,
            )
        )
    sampler = MixtureSampler(
        [len(p) for p in parts], [s.weight for s in sources], seed=seed, rank=rank, world_size=world_size
    )
    return ConcatDataset(parts), sampler


def source_episodes(source: DataSource) -> list[int] | None:
    """The episodes a source contributes after its `tasks` / `exclude_tasks` / `demos_per_task` (None: all)."""
    from latbot.data.store import EpisodeStore

    if source.tasks is None and not source.exclude_tasks and source.demos_per_task is None:
        return None
    with EpisodeStore.open(source.store) as store:
        return select_episodes(store.records, source.tasks, source.demos_per_task, source.exclude_tasks)


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
