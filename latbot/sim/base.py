"""The simulator and policy contracts shared by `latbot data gen-sim` and `latbot eval sim`.

A *policy* maps an observation to an action chunk in the simulator's native action space:

    observation = {
        "images": {camera: (H, W, 3) uint8, upright},   # the cameras the policy asked for
        "state": (S,) float32,                           # the simulator's native proprioceptive state
        "instruction": str,
        "privileged": (P,) float64,                      # the full simulator observation (scripted experts only)
    }
    policy.reset(task, instruction) ; policy.predict(observation) -> (H, A) float array

The harness executes `execute_steps` actions of each chunk open-loop, then asks again. A *simulator*
plugin builds episodes for named tasks and runs them through that interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from latbot.config import PluginConfig
from latbot.errors import LatBotError


class SimulatorError(LatBotError):
    """A simulator is missing, a task name is unknown, or an environment failed."""


class Policy(Protocol):
    cameras: list[str]

    def reset(self, task: str, instruction: str) -> None: ...

    def predict(self, observation: dict[str, Any]) -> np.ndarray: ...


class SimEpisode(Protocol):
    """One live episode of a task: a reset environment, stepped by the harness."""

    task: str
    instruction: str
    max_steps: int

    def observe(self, cameras: list[str]) -> dict[str, Any]: ...

    def step(self, action: np.ndarray) -> bool:
        """Apply one native action; returns whether the task is solved now."""
        ...

    def close(self) -> None: ...


class Simulator:
    """Base of `simulators` plugins."""

    class Config(PluginConfig):
        pass

    def __init__(self, config: PluginConfig):
        self.config = config

    def task_names(self, spec: list[str]) -> list[str]:
        """Expand task names and suites (e.g. "MT10") into task names; unknown names are errors."""
        raise NotImplementedError

    def episode(self, task: str, seed: int, cameras: list[str], image_size: int) -> SimEpisode:
        raise NotImplementedError

    def scripted_policy(self, task: str) -> Policy:
        raise NotImplementedError(f"{type(self).__name__} has no scripted experts")

    @property
    def action_dim(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release environments and renderers held between episodes."""


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well-behaved at 0 and 1 and for few trials)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    steps: int
    error: str | None = None
    video: str | None = None


@dataclass
class TaskResult:
    task: str
    instruction: str
    episodes: list[EpisodeResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ok = [e for e in self.episodes if e.error is None]
        wins = sum(e.success for e in ok)
        low, high = wilson_interval(wins, len(ok))
        return {
            "task": self.task,
            "instruction": self.instruction,
            "episodes": len(self.episodes),
            "errors": len(self.episodes) - len(ok),
            "successes": wins,
            "success_rate": wins / len(ok) if ok else None,
            "ci95": [low, high],
            "mean_length": float(np.mean([e.steps for e in ok])) if ok else None,
        }
