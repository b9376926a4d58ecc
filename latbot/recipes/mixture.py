"""Mixture files (recipes/mixtures/*.yaml): named, weighted episode stores, e.g. the paper's Table 6.

    name: table6
    root: data/stores           # store paths are relative to this (itself relative to the file)
    sources:
      - {name: fractal, store: fractal, weight: 12.8, frame_stride: 1}

A recipe names one with `data.mixture`; the loader replaces it by the file's sources, so a run's saved
recipe lists every source explicitly (latbot.recipes.loader).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from latbot.config import Section
from latbot.recipes.schema import DataSource, StoreLocation


class MixtureSource(DataSource):
    name: str = Field(description="Dataset name, for logs and per-source metrics.")


class Mixture(Section):
    name: str
    description: str = ""
    root: StoreLocation | None = Field(
        None, description="Directory (or fsspec URL, e.g. s3://bucket/stores) the stores' paths are relative to."
    )
    sources: list[MixtureSource] = Field(min_length=1)


def load_mixture(path: str | Path) -> Mixture:
    """Read and validate a mixture file; errors name the file, line and dotted field (exit code 2)."""
    from latbot.data.location import is_url, join
    from latbot.yamlio import load_yaml_model

    mixture = load_yaml_model(path, Mixture, "mixture file")
    if is_url(mixture.root):
        for s in mixture.sources:  # relative stores under a root on object storage
            s.store = s.store if is_url(s.store) or s.store.is_absolute() else join(mixture.root, s.store.as_posix())
        return mixture
    root = Path(path).parent / (mixture.root or ".")
    for s in mixture.sources:
        s.store = s.store if is_url(s.store) or s.store.is_absolute() else Path(os.path.normpath(root / s.store))
    return mixture
