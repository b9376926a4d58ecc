"""`dot_reach`: a 2-D dot that must reach a coloured square, as an example of a `simulators` plugin, with
its scripted expert (for `latbot data gen-sim`). The robot is the `dot` embodiment (dot.py)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.sim.base import Demonstration, Simulator, SimulatorError, split_names
from latbot_example_plugin.dot import STEP

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 230)}
TASKS = {f"reach-{c}": f"move the dot onto the {c} square" for c in COLOURS}


class DotReachSimulator(Simulator):
    class Config(PluginConfig):
        type: Literal["dot_reach"] = "dot_reach"
        max_steps: int = Field(30, ge=1, description="Step limit of an episode.")
        radius: float = Field(0.1, gt=0, description="Success distance to the square's centre.")

    embodiment = "dot"
    cameras = ("top",)
    default_camera = "top"
    tiny_task = "reach-red"  # what `latbot plugins check` runs

    def task_names(self, spec: list[str]) -> list[str]:
        names = split_names(spec)
        unknown = [n for n in names if n not in TASKS]
        if unknown:
            raise SimulatorError(f"unknown dot_reach task(s) {unknown} (valid: {', '.join(TASKS)})")
        return list(dict.fromkeys(names))

    def instruction(self, task: str) -> str:
        return TASKS[task]

    def episode(self, task: str, seed: int, cameras: list[str], image_size: int) -> DotReachEpisode:
        if set(cameras) - set(self.cameras):
            raise SimulatorError(f"unknown dot_reach camera(s) {cameras} (valid: top)")
        return DotReachEpisode(self, task, seed, image_size)

    def scripted_policy(self, task: str) -> ReachExpert:
        return ReachExpert()

    def applied_action(self, action: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(action, np.float32), -1, 1)

    def subtask_segments(self, task: str, demo: Demonstration) -> list[tuple[int, int, str]]:
        """Two subtasks: moving towards the square until close, then settling on it."""
        colour = task.removeprefix("reach-")
        priv = np.stack(demo.privileged)  # (T, 4): position, goal
        near = np.flatnonzero(np.linalg.norm(priv[:, :2] - priv[:, 2:], axis=1) < 2 * self.config.radius)
        cut = int(near[0]) if near.size else len(demo)
        segments = [(0, cut, f"move towards the {colour} square"), (cut, len(demo), f"stop on the {colour} square")]
        return [(a, b, t) for a, b, t in segments if b > a]


class DotReachEpisode:
    """One reset episode: two squares at seed-drawn places, the dot at a seed-drawn start."""

    def __init__(self, sim: DotReachSimulator, task: str, seed: int, image_size: int):
        rng = np.random.default_rng(seed)
        self.instruction, self.size = sim.instruction(task), image_size
        self.max_steps, self.fps, self.radius = sim.config.max_steps, 10.0, sim.config.radius
        self.squares = {"red": rng.uniform(0.15, 0.85, 2)}
        while "blue" not in self.squares or np.linalg.norm(self.squares["blue"] - self.squares["red"]) < 0.4:
            self.squares["blue"] = rng.uniform(0.15, 0.85, 2)
        self.goal = self.squares[task.removeprefix("reach-")]
        self.pos = rng.uniform(0.05, 0.95, 2)

    def render(self) -> np.ndarray:
        """(S, S, 3) uint8, upright: grey floor, the two squares, the dot as a white disc."""
        s = self.size
        img = np.full((s, s, 3), 90, np.uint8)
        yy, xx = np.mgrid[0:s, 0:s] / s
        for colour, centre in self.squares.items():
            img[(np.abs(xx - centre[0]) < 0.07) & (np.abs(yy - centre[1]) < 0.07)] = COLOURS[colour]
        img[(xx - self.pos[0]) ** 2 + (yy - self.pos[1]) ** 2 < 0.04**2] = 255
        return img

    def observe(self, cameras: list[str]) -> dict[str, Any]:
        return {
            "images": {c: self.render() for c in cameras},
            "state": self.pos.astype(np.float32),  # (S,) = (2,) native
            "instruction": self.instruction,
            "privileged": np.concatenate([self.pos, self.goal]),  # what the expert reads
        }

    def step(self, action: np.ndarray) -> bool:
        self.pos = np.clip(self.pos + STEP * np.clip(np.asarray(action, np.float64)[:2], -1, 1), 0.0, 1.0)
        return bool(np.linalg.norm(self.pos - self.goal) < self.radius)

    def close(self) -> None:
        pass


class ReachExpert:
    """The scripted expert: straight at the goal, read from the privileged state (no images)."""

    cameras = ()  # the expert reads no image

    def reset(self, task: str, instruction: str) -> None:
        pass

    def predict(self, observation: dict[str, Any]) -> np.ndarray:
        """→ (H, A) = (1, 2): gen-sim steps row 0."""
        priv = observation["privileged"]
        return np.clip((priv[2:] - priv[:2]) / STEP, -1, 1).astype(np.float32)[None]
