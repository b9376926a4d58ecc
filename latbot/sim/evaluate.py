"""`latbot eval sim`: closed-loop rollouts of a policy, success per task with Wilson 95% intervals.

Generic over the simulator (latbot/sim/base.py). Evaluation seeds start at `EVAL_SEED_BASE`, away from
the generation seeds, so a policy is never scored on the exact goal variations it was trained on. A
crash inside one episode is recorded for that episode (with its error) and the evaluation goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latbot.config import PluginConfig
from latbot.sim.base import EpisodeResult, Policy, SimulatorError, TaskResult

EVAL_SEED_BASE = 1_000_000


class RandomPolicy:
    """Uniform random actions in [−1, 1]: the floor any learned policy must beat."""

    def __init__(self, action_dim: int, seed: int = 0):
        self.cameras: list[str] = []
        self.rng = np.random.default_rng(seed)
        self.action_dim = action_dim

    def reset(self, task: str, instruction: str) -> None:
        pass

    def predict(self, observation: dict[str, Any]) -> np.ndarray:
        return self.rng.uniform(-1, 1, (1, self.action_dim)).astype(np.float32)


def load_policy(spec: str | Callable[[str], Policy], sim) -> Callable[[str], Policy]:
    """`scripted`, `random`, a policy checkpoint directory, or already a factory → a factory per task."""
    if callable(spec):
        return spec
    if spec == "scripted":
        return sim.scripted_policy
    if spec == "random":
        return lambda task: RandomPolicy(sim.action_dim, seed=0)
    from latbot import runs
    from latbot.errors import LatBotError

    path = Path(spec)
    if not path.exists():
        raise LatBotError(f"--policy {spec}: expected 'scripted', 'random' or a policy checkpoint directory")
    policy = runs.load_policy(path)  # a clear error for anything that is not a finished finetuning run
    if policy.embodiment != sim.embodiment:
        raise SimulatorError(
            f"--policy {spec} was trained for embodiment '{policy.embodiment}', but simulator "
            f"'{sim.config.type}' runs '{sim.embodiment}'"
        )
    return lambda task: policy


def evaluate(
    sim_config: PluginConfig,
    policy: str | Callable[[str], Policy],
    tasks: list[str],
    episodes: int,
    *,
    seed: int = EVAL_SEED_BASE,
    image_size: int = 128,
    execute_steps: int = 4,
    video_dir: str | Path | None = None,
    video_camera: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `episodes` closed-loop episodes per task; returns the JSON-able report. Videos (with
    `video_dir`) film `video_camera`, by default the simulator's `default_camera`."""
    from tqdm import tqdm

    from latbot import registry

    sim = registry.build("simulators", sim_config)
    names = sim.task_names(tasks)
    video_camera = video_camera or sim.default_camera
    factory = load_policy(policy, sim)
    results: list[TaskResult] = []
    t_start = time.perf_counter()
    bar = tqdm(total=len(names) * episodes, desc=f"eval {sim_config.type}", unit="episode", disable=not progress)
    try:
        for ti, task in enumerate(names):
            pol = factory(task)
            task_result = TaskResult(task, sim.instruction(task))
            for i in range(episodes):
                s = seed + ti * 10_007 + i
                result = run_episode(sim, pol, task, s, image_size, execute_steps, video_dir, video_camera)
                task_result.episodes.append(result)
                bar.update(1)
                bar.set_postfix(task=task, ok=sum(e.success for e in task_result.episodes))
            results.append(task_result)
    finally:
        sim.close()
    bar.close()
    per_task = [r.summary() for r in results]
    all_eps = [e for r in results for e in r.episodes if e.error is None]
    from latbot.sim.base import wilson_interval

    wins = sum(e.success for e in all_eps)
    elapsed = time.perf_counter() - t_start
    return {
        "simulator": sim_config.type,
        "embodiment": sim.embodiment,
        "policy": policy if isinstance(policy, str) else getattr(policy, "__name__", "custom"),
        "episodes_per_task": episodes,
        "execute_steps": execute_steps,
        "seed": seed,
        "tasks": per_task,
        "overall": {
            "successes": wins,
            "episodes": len(all_eps),
            "success_rate": wins / len(all_eps) if all_eps else None,
            "ci95": list(wilson_interval(wins, len(all_eps))),
            "errors": sum(1 for r in results for e in r.episodes if e.error is not None),
        },
        "seconds_per_episode": elapsed / max(1, len(names) * episodes),
        "episodes": [vars(e) for r in results for e in r.episodes],
    }


def run_episode(
    sim,
    policy: Policy,
    task: str,
    seed: int,
    image_size: int,
    execute_steps: int,
    video_dir: str | Path | None,
    video_camera: str,
) -> EpisodeResult:
    """One closed-loop episode; any exception becomes this episode's `error`, never the whole run's."""
    env = None
    frames: list[np.ndarray] = []
    steps, solved = 0, False
    try:
        cameras = list(dict.fromkeys([*policy.cameras, *([video_camera] if video_dir else [])]))
        env = sim.episode(task, seed, cameras, image_size)
        policy.reset(task, env.instruction)
        while steps < env.max_steps and not solved:
            obs = env.observe(cameras)
            if video_dir:
                frames.append(obs["images"][video_camera])
            chunk = np.asarray(policy.predict(obs))
            for action in chunk[:execute_steps]:
                solved = env.step(action)
                steps += 1
                if solved or steps >= env.max_steps:
                    break
        video = None
        if video_dir and frames:
            from latbot.data.video import encode_video

            Path(video_dir).mkdir(parents=True, exist_ok=True)
            video = str(Path(video_dir) / f"{task}_seed{seed}_{'success' if solved else 'fail'}.mp4")
            encode_video(video, np.stack(frames), fps=20, codec="libx264", gop=12)
        return EpisodeResult(task, seed, solved, steps, video=video)
    except Exception as e:  # a simulator or policy crash is this episode's result, the run goes on
        from latbot import registry

        culprit = registry.blame(e)  # name the plugin whose code raised, if one did
        where = f" (in {culprit.kind} plugin '{culprit.name}' from '{culprit.distribution}')" if culprit else ""
        return EpisodeResult(task, seed, False, steps, error=f"{type(e).__name__}: {e}{where}")
    finally:
        if env is not None:
            env.close()
