"""`latbot eval sim`: closed-loop rollouts of a policy, success per task with Wilson 95% intervals.

Generic over the simulator (latbot/sim/base.py). Evaluation seeds start at `EVAL_SEED_BASE`, away from
the generation seeds, so a policy is never scored on the exact goal variations it was trained on. A
crash inside one episode is recorded for that episode (with its error) and the evaluation goes on; at the
end, any crash fails the evaluation (`EpisodesCrashedError`, naming the count and the first error) unless
`allow_crashes`, which reports crashed episodes as crashed and counts them as failures. An evaluation of no
episode at all is an error, never a table of 0/0. `evaluate_into` also writes the report as an "eval"
artifact (report.json + latbot.json) into a folder it claims and locks first (latbot/ownership.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latbot.config import PluginConfig
from latbot.sim.base import EpisodeResult, Policy, SimulatorError, TaskResult, wilson_interval

EVAL_SEED_BASE = 1_000_000
REPORT_NAME = "report.json"  # the report inside an "eval" artifact (also written by latbot.pipeline.evaluate)


class EpisodesCrashedError(SimulatorError):
    """Episodes crashed (the policy or the simulator raised) and crashes were not allowed: the success rate
    of the others would silently be a wrong answer. A finding about the policy or simulator, like a
    `verify` finding, so the CLI exits 1."""

    exit_code = 1

    def __init__(self, crashed: int, total: int, first: str, report: dict[str, Any]):
        super().__init__(
            f"{crashed} of {total} episode(s) crashed; the first: {first}; fix the policy or the simulator, or "
            "pass --allow-crashes (allow_crashes=True) to report crashed episodes as failures"
        )
        self.crashed, self.total, self.first, self.report = crashed, total, first, report


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
    from latbot import policy as policies
    from latbot.errors import LatBotError

    path = Path(spec)
    if not path.exists():
        raise LatBotError(f"--policy {spec}: expected 'scripted', 'random' or a policy checkpoint directory")
    policy = policies.load_policy(path)  # a clear error for anything that is not a finished finetuning run
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
    allow_crashes: bool = False,
) -> dict[str, Any]:
    """Run `episodes` closed-loop episodes per task; returns the JSON-able report. Videos (with
    `video_dir`) film `video_camera`, by default the simulator's `default_camera`. Raises
    `EpisodesCrashedError` when an episode crashed, unless `allow_crashes`: then crashed episodes count
    as failures (in `episodes`, `success_rate` and `ci95`; `mean_length` is over the others)."""
    from tqdm import tqdm

    from latbot import registry

    if episodes < 1:
        raise SimulatorError(f"episodes per task must be at least 1, got {episodes!r}: nothing would be evaluated")
    sim = registry.build("simulators", sim_config)
    names = sim.task_names(tasks)
    if not names:
        sim.close()
        raise SimulatorError(f"--tasks {tasks!r} selects no task of simulator '{sim_config.type}': nothing to evaluate")
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
    report = _report(sim_config.type, sim.embodiment, policy, episodes, execute_steps, seed, results)
    report["seconds_per_episode"] = (time.perf_counter() - t_start) / report["overall"]["episodes"]
    crashed = [e for r in results for e in r.episodes if e.error is not None]
    if crashed and not allow_crashes:
        first = crashed[0]
        where = f"task {first.task}, seed {first.seed}, after {first.steps} step(s)"
        raise EpisodesCrashedError(len(crashed), report["overall"]["episodes"], f"{where}: {first.error}", report)
    return report


def _report(simulator, embodiment, policy, episodes, execute_steps, seed, results) -> dict[str, Any]:
    """The JSON-able report; crashed episodes are in it as failures with their `error`."""
    all_eps = [e for r in results for e in r.episodes]
    wins = sum(e.success for e in all_eps)  # a crashed episode never succeeded
    return {
        "simulator": simulator,
        "embodiment": embodiment,
        "policy": policy if isinstance(policy, str) else getattr(policy, "__name__", "custom"),
        "episodes_per_task": episodes,
        "execute_steps": execute_steps,
        "seed": seed,
        "tasks": [_task_summary(r) for r in results],
        "overall": {
            "successes": wins,
            "episodes": len(all_eps),
            "success_rate": wins / len(all_eps),
            "ci95": list(wilson_interval(wins, len(all_eps))),
            "errors": sum(e.error is not None for e in all_eps),
        },
        "seconds_per_episode": None,
        "episodes": [vars(e) for e in all_eps],
    }


def _task_summary(result: TaskResult) -> dict[str, Any]:
    """`TaskResult.summary` with crashed episodes counted as failures (they reach a report only when
    crashes are allowed; without crashes the numbers are the same)."""
    summary = result.summary()
    n = len(result.episodes)
    summary["success_rate"] = summary["successes"] / n if n else None
    summary["ci95"] = list(wilson_interval(summary["successes"], n))
    return summary


def evaluate_into(
    dest: str | Path,
    sim_config: PluginConfig,
    policy: str | Callable[[str], Policy],
    tasks: list[str],
    episodes: int,
    **options: Any,
) -> dict[str, Any]:
    """`evaluate`, then write the report into the folder `dest` as an "eval" artifact (report.json and
    latbot.json). `dest` must be new, empty or an earlier evaluation: anything else (an episode store, a
    run, someone's files) is refused before anything runs or is written. The folder's writer lock is held
    from before the first episode to the last byte written; a folder this call created is removed again
    if the evaluation fails."""
    from latbot.ownership import LOCK_NAME, MANIFEST_NAME, claim, writer_lock

    dest = Path(dest)
    claim(dest, {"eval"})
    created, locked = not dest.exists(), False
    try:
        with writer_lock(dest, "evaluation"):
            locked = True
            claim(dest, {"eval"})  # again under the lock: another writer may have filled it meanwhile
            report = evaluate(sim_config, policy, tasks, episodes, **options)
            write_report(dest, report, policy)
    except BaseException:
        if created and locked:  # only what this call made: its files, then the folder if nothing else is left
            for name in (REPORT_NAME, MANIFEST_NAME, LOCK_NAME):  # replace_file removes its own temporary file
                (dest / name).unlink(missing_ok=True)
            try:
                dest.rmdir()
            except OSError:
                pass  # something else was put there meanwhile: not ours to remove
        raise
    return report


def write_report(dest: Path, report: dict[str, Any], policy: str | Callable[[str], Policy]) -> None:
    """report.json, then the manifest (kind "eval"; a policy checkpoint is its parent), each atomically."""
    from latbot.artifacts import parent_ref, write_manifest
    from latbot.atomic import replace_file

    replace_file(dest / REPORT_NAME, json.dumps(report, indent=2) + "\n")
    parents = [] if not isinstance(policy, str) or policy in ("scripted", "random") else [parent_ref(policy)]
    settings = {k: report[k] for k in ("simulator", "policy", "episodes_per_task", "execute_steps", "seed")}
    settings["tasks"] = [t["task"] for t in report["tasks"]]
    write_manifest(dest, "eval", parents=parents, extra={"settings": settings})


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
