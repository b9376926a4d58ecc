"""Mixture files (recipes/mixtures/*.yaml): named, weighted episode stores, e.g. the paper's Table 6.

    name: table6
    root: data/stores           # store paths are relative to this (itself relative to the file)
    sources:
      - {name: fractal, store: fractal, weight: 12.8, frame_stride: 1}

`build_mixture` turns sources (from a mixture file or a recipe's `data.sources`) into one dataset
plus a `MixtureSampler` that draws sources by weight.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from latbot.config import Section
from latbot.recipes.schema import DataSource


class MixtureSource(DataSource):
    name: str = Field(description="Dataset name, for logs and per-source metrics.")


class Mixture(Section):
    name: str
    description: str = ""
    root: Path | None = Field(None, description="Directory the stores' paths are relative to.")
    sources: list[MixtureSource] = Field(min_length=1)


def load_mixture(path: str | Path) -> Mixture:
    """Read and validate a mixture file; errors name the file, line and dotted field (exit code 2)."""
    from pydantic import ValidationError

    from latbot.errors import RecipeError
    from latbot.recipes.loader import RecipeSource, _compose, _format

    data, origins = _compose(Path(path))
    source = RecipeSource(data, origins, str(path))
    try:
        mixture = Mixture.model_validate(data)
    except ValidationError as e:
        raise RecipeError("\n".join(_format(e, source, Mixture))) from None
    root = Path(path).parent / (mixture.root or ".")
    for s in mixture.sources:
        s.store = (root / s.store) if not s.store.is_absolute() else s.store
    return mixture


def build_mixture(
    sources: list[DataSource],
    num_frames: int,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    cameras: list[str] | None = None,
    normalize: bool = False,
):
    """(ConcatDataset of ClipDatasets, MixtureSampler) over `sources`, honouring weights and strides."""
    from torch.utils.data import ConcatDataset

    from latbot.data.clips import ClipDataset, MixtureSampler
    from latbot.data.store import EpisodeStore

    parts = []
    for s in sources:
        episodes = None
        if s.tasks is not None or s.exclude_tasks or s.demos_per_task is not None:
            with EpisodeStore.open(s.store) as store:
                episodes = select_episodes(store.records, s.tasks, s.demos_per_task, s.exclude_tasks)
        parts.append(
            ClipDataset(s.store, num_frames, s.frame_stride, episodes=episodes, cameras=cameras, normalize=normalize)
        )
    sampler = MixtureSampler(
        [len(p) for p in parts], [s.weight for s in sources], seed=seed, rank=rank, world_size=world_size
    )
    return ConcatDataset(parts), sampler


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
