"""`npz_episodes`: one `.npz` file per episode, as an example of a `datasets` plugin (a source adapter).

Layout read::

    <src>/<name>.npz    frames_<camera> (T, H, W, 3) uint8, actions (T, A) float, states (T, S) float
                        (optional), instruction () str

Native actions and states are mapped into the unified spaces by a registered embodiment (the `embodiment`
option, default `dot`), the same object a policy answers with. `sample_source` writes a tiny source in
this layout, so `latbot plugins check` can run the adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.data import embodiments
from latbot.data.adapters.base import DatasetAdapter, SourceEpisode, SourceError, resized
from latbot.data.store import Episode


class NpzEpisodesDataset(DatasetAdapter):
    class Config(PluginConfig):
        type: Literal["npz_episodes"] = "npz_episodes"
        embodiment: str = Field("dot", description="Registered embodiment the native vectors belong to.")
        fps: float = Field(10.0, gt=0, description="Control frequency of the recordings.")

    config: Config

    def _files(self, src: Path) -> list[Path]:
        files = sorted(src.glob("*.npz")) if src.is_dir() else [src]
        if not files:
            raise SourceError(f"{src}: no .npz files found")
        return files

    def cameras(self, src: Path) -> list[str]:
        with np.load(self._files(src)[0]) as f:
            return sorted(k.removeprefix("frames_") for k in f.files if k.startswith("frames_"))

    def episodes(self, src: Path) -> Iterator[SourceEpisode]:
        for path in self._files(src):
            yield SourceEpisode(key=path.name, source=str(path), load=lambda path=path, **kw: self._load(path, **kw))

    def _load(self, path: Path, image_size: tuple[int, int], resize_mode: str, cameras: list[str]) -> Episode:
        with np.load(path) as f:
            if "actions" not in f.files or "instruction" not in f.files:
                raise SourceError(f"{path}: needs the arrays 'actions' and 'instruction' (has {f.files})")
            actions = f["actions"].astype(np.float32)
            states = f["states"].astype(np.float32) if "states" in f.files else None
            frames = {}
            for cam in cameras:
                if f"frames_{cam}" not in f.files:
                    raise SourceError(f"{path}: no array 'frames_{cam}'")
                frames[cam] = resized(iter(f[f"frames_{cam}"]), image_size, resize_mode)
            instruction = str(f["instruction"])
        traj = embodiments.get(self.config.embodiment).trajectory(states, actions, str(path))
        return Episode(
            key=path.name,
            frames=frames,
            trajectory=traj,
            instruction=instruction,
            task=instruction,
            embodiment=self.config.embodiment,
            fps=self.config.fps,
            source=str(path),
            native_actions=actions,
            native_states=states,  # all episodes of a store have native states, or none does
        )

    @classmethod
    def sample_source(cls, directory: Path, episodes: int = 3, steps: int = 12) -> Path:
        """Write a tiny source in this layout (dot robot moving right, a camera "top"); return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(episodes):
            states = np.cumsum(rng.uniform(-0.05, 0.1, (steps, 2)), 0).astype(np.float32)
            frames = rng.integers(0, 255, (steps, 40, 40, 3), dtype=np.uint8)
            actions = rng.uniform(-1, 1, (steps, 2)).astype(np.float32)
            np.savez(directory / f"ep{i:03d}.npz", frames_top=frames, actions=actions, states=states,
                     instruction=np.array("move the dot to the right"))  # fmt: skip
        return directory
