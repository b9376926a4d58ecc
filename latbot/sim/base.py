"""The simulator contract: everything simulator-specific lives behind it, so `latbot data gen-sim` and
`latbot eval sim` are generic over the simulator.

A *simulator* plugin (registry kind `simulators`) owns its task list and instructions, its scripted
expert and the subtask segments of the expert's demonstrations, its robot (a registered `embodiments`
name), reset/step/render of one episode and the success signal, and its cameras. Its pieces::

    sim = registry.build("simulators", config)
    sim.task_names(["MT10"]) -> ["reach", ...]            # expand names and suites; unknown → error
    sim.instruction(task) -> str
    env = sim.episode(task, seed, cameras, image_size)    # a reset episode (SimEpisode below)
    sim.scripted_policy(task) -> Policy                   # the expert gen-sim records (optional)
    sim.subtask_segments(task, demo) -> [(start, end, text)]   # of a recorded Demonstration (optional)
    sim.embodiment, sim.action_dim, sim.state_dim, sim.cameras, sim.default_camera, sim.hold_steps

A *policy* maps an observation to an action chunk in the simulator's native action space::

    observation = env.observe(cameras) = {
        "images": {camera: (H, W, 3) uint8, upright},   # the cameras asked for (rendering happens here)
        "state": (S,) float32,                           # native proprioceptive state (the embodiment's)
        "instruction": str,
        "privileged": anything,                          # the full simulator state (scripted experts only)
    }
    policy.reset(task, instruction) ; policy.predict(observation) -> (H, A) float array

`env.step(action (A,))` applies one native action and says whether the task is solved now. The
evaluation harness executes `execute_steps` actions of each chunk open-loop, then asks again; gen-sim
executes the expert's first action per step and records every step (see latbot/sim/generate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

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
    max_steps: int  # the harness stops here (an unsolved episode is a failure)
    fps: float  # control frequency, recorded with demonstrations

    def observe(self, cameras: list[str]) -> dict[str, Any]:
        """The observation dict above, with a rendered (H, W, 3) uint8 frame per camera."""
        ...

    def step(self, action: np.ndarray) -> bool:
        """Apply one native action (A,); returns whether the task is solved now."""
        ...

    # Optional: `metrics` -> {name: bool}, further outcomes of the episode read when it ends (SIMPLER: success
    # at the end and at any step); the report gives their rates per task and overall.

    def close(self) -> None: ...


@dataclass
class Demonstration:
    """One scripted-expert rollout as gen-sim recorded it, before it is written into a store."""

    task: str
    instruction: str
    frames: dict[str, np.ndarray]  # camera → (T, H, W, 3) uint8
    states: np.ndarray  # (T, S) native states, the observation before each action
    actions: np.ndarray  # (T, A) native actions as applied (`Simulator.applied_action`)
    privileged: list[Any]  # T × the observation's "privileged" entry
    success: bool
    fps: float

    def __len__(self) -> int:
        return len(self.actions)


def split_names(spec: list[str]) -> list[str]:
    """`--tasks a,b --tasks c` → ["a", "b", "c"] (stripped, empties dropped); for `task_names`."""
    return [name.strip() for item in spec for name in item.split(",") if name.strip()]


class Simulator:
    """Base of `simulators` plugins; subclasses set the class attributes and implement the methods that
    raise NotImplementedError. Built by the registry as ``cls(config)``."""

    class Config(PluginConfig):
        pass

    embodiment: ClassVar[str]  # the registered `embodiments` plugin of the simulated robot
    cameras: ClassVar[tuple[str, ...]]  # every camera `observe` can render
    default_camera: ClassVar[str]  # recorded by gen-sim and filmed by eval --video-dir unless told otherwise
    default_episodes: ClassVar[int] = 10  # `latbot eval sim` episodes per task unless --episodes (SIMPLER: 24)

    def __init__(self, config: PluginConfig):
        self.config = config

    # -- tasks ------------------------------------------------------------------------------------------
    def task_names(self, spec: list[str]) -> list[str]:
        """Expand task names and suites (e.g. "MT10") into task names; unknown names are errors."""
        raise NotImplementedError

    def instruction(self, task: str) -> str:
        """The language instruction of a task (what the policy is told)."""
        raise NotImplementedError

    # -- episodes ---------------------------------------------------------------------------------------
    def episode(self, task: str, seed: int, cameras: list[str], image_size: int) -> SimEpisode:
        """A reset episode of `task` whose variation (goal, initial state) is drawn from `seed`, rendering
        `cameras` as (image_size, image_size, 3) frames. Unknown cameras are errors."""
        raise NotImplementedError

    def applied_action(self, action: np.ndarray) -> np.ndarray:
        """The native action (A,) as the simulator applies it (e.g. clipped): what demonstrations record."""
        return np.asarray(action, np.float32)

    # -- demonstrations (gen-sim) -----------------------------------------------------------------------
    def scripted_policy(self, task: str) -> Policy:
        """The expert whose rollouts `latbot data gen-sim` records."""
        raise SimulatorError(
            f"simulator '{self.config.type}' has no scripted experts (so no `latbot data gen-sim`): "
            "evaluate 'random' or a policy checkpoint"
        )

    def subtask_segments(self, task: str, demo: Demonstration) -> list[tuple[int, int, str]]:
        """Subtasks of a recorded demonstration as (start, end, text), end exclusive, covering [0, T);
        none by default (the distillation's reasoning loss then reads the instruction)."""
        return []

    @property
    def hold_steps(self) -> int:
        """Steps a demonstration keeps recording after the task is first solved (so it ends at rest)."""
        return 0

    # -- the robot --------------------------------------------------------------------------------------
    @property
    def action_dim(self) -> int:
        """A, the native action width (the embodiment's)."""
        from latbot.data import embodiments

        return embodiments.get(self.embodiment).native_action_dim

    @property
    def state_dim(self) -> int:
        """S, the native state width (the embodiment's)."""
        from latbot.data import embodiments

        return embodiments.get(self.embodiment).native_state_dim

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
    metrics: dict[str, bool] | None = None  # the episode's own further outcomes (`SimEpisode.metrics`, e.g. SIMPLER's)


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
            **({"metrics": metric_rates(ok)} if any(e.metrics for e in ok) else {}),
        }


def metric_rates(episodes: list[EpisodeResult]) -> dict[str, float]:
    """The rate of each further outcome (`EpisodeResult.metrics`) over the episodes that report it."""
    names = list(dict.fromkeys(name for e in episodes for name in (e.metrics or {})))
    rates = {}
    for name in names:
        values = [bool(e.metrics[name]) for e in episodes if e.metrics and name in e.metrics]
        rates[name] = sum(values) / len(values)
    return rates
