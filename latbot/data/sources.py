"""Where training data comes from, as recipe vocabulary: one episode store (`DataSource`) and the type of a
store's location (`StoreLocation`). Recipes (`latbot.recipes.schema.DataConfig.sources`) and mixture files
(`latbot.recipes.mixture`) are lists of these; `latbot.data.mixture` builds datasets from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from latbot.config import Section


def _store_location(value: Any) -> Any:
    """A store written as an fsspec URL stays a string (`Path` would collapse `s3://bucket` to `s3:/bucket`);
    any other string is a `Path` (relative ones are resolved against the recipe file by the loader)."""
    if isinstance(value, str):
        from latbot.data.location import store_location

        return store_location(value)
    return value


StoreLocation = Annotated[Path | str, BeforeValidator(_store_location)]
"""An episode store (or a set of them): a local path, or an fsspec URL such as `s3://bucket/stores/x`."""


class DataSource(Section):
    """One episode store in the training mixture."""

    name: str | None = Field(None, description="Dataset name, for logs (set by mixture files).")
    store: StoreLocation = Field(
        description="Episode store (written by `latbot data convert` / `gen-sim`): a directory, an fsspec URL "
        "(s3://bucket/path, gs://..., file://...), or a set of shard stores (a glob or a list file)."
    )
    weight: float = Field(1.0, gt=0, le=1e6, description="Sampling weight in the mixture (normalised over sources).")
    frame_stride: int = Field(
        1,
        ge=1,
        le=1000,
        description="Frames skipped between clip frames, so clips of every source span a similar time.",
    )
    tasks: list[str] | None = Field(None, description="Keep only episodes of these tasks (None = all).")
    exclude_tasks: list[str] = Field(
        default_factory=list, description="Drop these tasks (e.g. the held-out tasks when pretraining)."
    )
    demos_per_task: int | None = Field(
        None, ge=1, le=10**9, description="Few-shot subset: the first k episodes of each task (10, 50; None = all)."
    )
