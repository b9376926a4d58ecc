"""`latbot eval sim`: closed-loop rollouts of a policy, success per task with Wilson 95% intervals.

Generic over the simulator (latbot/sim/base.py). Evaluation seeds start at `EVAL_SEED_BASE`, away from
the generation seeds, so a policy is never scored on the exact goal variations it was trained on. A
crash inside one episode is recorded for that episode (with its error) and the evaluation goes on; at the
end, any crash fails the evaluation (`EpisodesCrashedError`, naming the count and the first error) unless
`allow_crashes`, which reports crashed episodes as crashed and counts them as failures. An evaluation of no
episode at all is an error, never a table of 0/0. `evaluate_into` also writes the report as an "eval"
artifact (report.json + latbot.json) into a folder it claims and locks first (latbot/ownership.py).

Every episode's result depends on its own (task, seed) alone: episode i of the t-th task gets seed
`seed + t * 10_007 + i`, the simulator draws the episode from it, and a policy with a `seed_episode(seed)`
method (`random`) is reseeded with it before the episode. So the (task, episode) list can be split: with a
`launcher` (latbot/cluster/launcher.py) it is cut into contiguous ranges, one job each (local processes or
a Slurm array); each job loads the policy itself, evaluates its range with exactly those seeds and writes
`part_<i>_of_<M>.json` atomically into the jobs folder; the parts are merged into the report a single
process gives (`seconds_per_episode`, a timing, aside). A part whose identity (simulator options, policy
content hash, tasks, range and seeds, settings) matches is reused, so a rerun after a failed job submits
only the missing parts.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latbot.cluster.launcher import Launcher
from latbot.config import PluginConfig
from latbot.sim.base import EpisodeResult, Policy, SimulatorError, TaskResult, metric_rates, wilson_interval

EVAL_SEED_BASE = 1_000_000
TASK_SEED_STRIDE = 10_007  # episode i of the t-th task: seed + t * TASK_SEED_STRIDE + i
REPORT_NAME = "report.json"  # the report inside an "eval" artifact (also written by latbot.pipeline.evaluate)
JOBS_DIR = ".jobs"  # evaluate_into's launcher jobs: their parts, logs and record (gone once the report is written)
PART_FORMAT = "latbot-eval-part/1"


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
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.action_dim = action_dim

    def seed_episode(self, seed: int) -> None:
        """Called by the harness before each episode: its actions depend on (policy seed, episode seed) only,
        never on the episodes before it, so a split evaluation gives the same numbers."""
        self.rng = np.random.default_rng([self.seed, seed])

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
    launcher: Launcher | None = None,
    jobs: int | None = None,
    jobs_dir: str | Path | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run `episodes` closed-loop episodes per task; returns the JSON-able report. Videos (with
    `video_dir`) film `video_camera`, by default the simulator's `default_camera`. Raises
    `EpisodesCrashedError` when an episode crashed, unless `allow_crashes`: then crashed episodes count
    as failures (in `episodes`, `success_rate` and `ci95`; `mean_length` is over the others).

    With a `launcher`, the (task, episode) list is split into `jobs` contiguous ranges (default: one per
    task) run as launcher jobs (see the module doc), which keep their parts in `jobs_dir` (reused by a
    rerun; default: a temporary folder, removed afterwards; a Slurm launcher needs one the nodes share);
    `policy` must then be `scripted`, `random` or a checkpoint directory, which each job loads. `say`
    (default: stderr) gets the launcher's one-line messages."""
    if episodes < 1:
        raise SimulatorError(f"episodes per task must be at least 1, got {episodes!r}: nothing would be evaluated")
    if launcher is not None:
        return _evaluate_jobs(
            sim_config, policy, tasks, episodes, seed=seed, image_size=image_size, execute_steps=execute_steps,
            video_dir=video_dir, video_camera=video_camera, allow_crashes=allow_crashes, launcher=launcher,
            jobs=jobs, jobs_dir=jobs_dir, say=say,
        )  # fmt: skip
    from tqdm import tqdm

    from latbot import registry

    sim = registry.build("simulators", sim_config)
    names = sim.task_names(tasks)
    if not names:
        sim.close()
        raise SimulatorError(f"--tasks {tasks!r} selects no task of simulator '{sim_config.type}': nothing to evaluate")
    video_camera = video_camera or sim.default_camera
    factory = load_policy(policy, sim)
    t_start = time.perf_counter()
    bar = tqdm(total=len(names) * episodes, desc=f"eval {sim_config.type}", unit="episode", disable=not progress)
    try:
        plan = episode_plan(names, episodes, seed)
        done = run_plan(sim, factory, plan, image_size, execute_steps, video_dir, video_camera, bar)
        results = _task_results(sim, names, done)
    finally:
        sim.close()
    bar.close()
    report = _report(sim_config.type, sim.embodiment, policy, episodes, execute_steps, seed, results)
    report["seconds_per_episode"] = (time.perf_counter() - t_start) / report["overall"]["episodes"]
    return _check_crashes(report, results, allow_crashes)


def episode_plan(names: list[str], episodes: int, seed: int) -> list[tuple[str, int]]:
    """(task, seed) of every episode, in the order of the report: the seed of episode i of the t-th task is
    `seed + t * TASK_SEED_STRIDE + i`, whichever process runs it."""
    return [(task, seed + t * TASK_SEED_STRIDE + i) for t, task in enumerate(names) for i in range(episodes)]


def run_plan(
    sim,
    factory: Callable[[str], Policy],
    plan: list[tuple[str, int]],
    image_size: int,
    execute_steps: int,
    video_dir: str | Path | None,
    video_camera: str,
    bar=None,
) -> list[EpisodeResult]:
    """The episodes of `plan` ((task, seed) pairs, each task's in one run), in order; `factory(task)` is asked
    once per task, at its first episode."""
    out: list[EpisodeResult] = []
    current, pol, wins = None, None, 0
    for task, s in plan:
        if task != current:
            current, pol, wins = task, factory(task), 0
        result = run_episode(sim, pol, task, s, image_size, execute_steps, video_dir, video_camera)
        out.append(result)
        wins += bool(result.success)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(task=task, ok=wins)
    return out


def _task_results(sim, names: list[str], episodes: list[EpisodeResult]) -> list[TaskResult]:
    results = {task: TaskResult(task, sim.instruction(task)) for task in names}
    for e in episodes:
        results[e.task].episodes.append(e)
    return list(results.values())


def _check_crashes(report: dict[str, Any], results: list[TaskResult], allow_crashes: bool) -> dict[str, Any]:
    crashed = [e for r in results for e in r.episodes if e.error is not None]
    if crashed and not allow_crashes:
        first = crashed[0]
        where = f"task {first.task}, seed {first.seed}, after {first.steps} step(s)"
        raise EpisodesCrashedError(len(crashed), report["overall"]["episodes"], f"{where}: {first.error}", report)
    return report


# -- an evaluation split into launcher jobs -------------------------------------------------------------------
_JOB_NAMES = re.compile(r"(jobs\.json|logs|part_\d+_of_\d+\.json|\.(jobs|part_\d+_of_\d+)\.json\..+\.tmp)")


def _evaluate_jobs(
    sim_config: PluginConfig,
    policy: str | Callable[[str], Policy],
    tasks: list[str],
    episodes: int,
    *,
    seed: int,
    image_size: int,
    execute_steps: int,
    video_dir: str | Path | None,
    video_camera: str | None,
    allow_crashes: bool,
    launcher: Launcher,
    jobs: int | None,
    jobs_dir: str | Path | None,
    say: Callable[[str], None] | None,
) -> dict[str, Any]:
    """`evaluate` through launcher jobs: check everything here, submit the parts not done yet, merge."""
    import shutil
    import sys
    import tempfile

    from latbot import registry
    from latbot.cluster.launcher import LaunchError, run_jobs
    from latbot.errors import LatBotError

    if not isinstance(policy, str):
        raise LatBotError(
            "an evaluation through a launcher needs a policy its jobs can load: 'scripted', 'random' or a policy "
            "checkpoint directory, not a Python object"
        )
    if jobs is not None and jobs < 1:
        raise LatBotError(f"--jobs must be at least 1, got {jobs}")
    if jobs_dir is None and launcher.kind == "slurm":
        raise LaunchError(
            "--launcher slurm needs --out: the jobs write their parts and logs under OUT/.jobs, a folder the "
            "nodes share (a temporary folder of this machine is not)"
        )
    sim = registry.build("simulators", sim_config)
    try:
        names = sim.task_names(tasks)
        if not names:
            raise SimulatorError(
                f"--tasks {tasks!r} selects no task of simulator '{sim_config.type}': nothing to evaluate"
            )
        video_camera = video_camera or sim.default_camera
        policy_id, policy_path = _policy_identity(policy, sim, names[0])
        embodiment, instructions = sim.embodiment, {task: sim.instruction(task) for task in names}
    finally:
        sim.close()
    plan = episode_plan(names, episodes, seed)
    count = min(jobs or len(names), len(plan))
    bounds = [len(plan) * k // count for k in range(count + 1)]
    common = {
        "format": PART_FORMAT,
        "simulator": sim_config.model_dump(mode="json"),
        "policy": policy_id,
        "tasks": names,
        "episodes_per_task": episodes,
        "seed": seed,
        "image_size": image_size,
        "execute_steps": execute_steps,
        "video_dir": str(Path(video_dir).resolve()) if video_dir is not None else None,
        "video_camera": video_camera,
        "jobs": count,
    }
    temporary = jobs_dir is None
    folder = Path(tempfile.mkdtemp(prefix="latbot-eval-jobs-")) if temporary else Path(jobs_dir)
    parts: dict[str, dict[str, Any]] = {}
    for k in range(count):
        a, b = bounds[k], bounds[k + 1]
        identity = {**common, "part": k + 1, "range": [a, b], "episodes": [[t, s] for t, s in plan[a:b]]}
        key = f"part_{k + 1}_of_{count}"
        parts[key] = {
            "identity": json.loads(json.dumps(identity)),  # as it reads back from the part file
            "file": str((folder / f"{key}.json").absolute()),
            "sim_config": sim_config,
            "policy": policy_path,
            "allow_crashes": allow_crashes,
        }
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        results = run_jobs(
            {key: (run_part, (part,)) for key, part in parts.items()},
            launcher,
            folder,
            done=lambda key: read_part(parts[key]) is not None,
            label=f"eval {sim_config.type}",
            say=say,
        )
    except LaunchError as e:
        if not temporary:
            raise
        raise LaunchError(
            f"{e} (the job folder was temporary and is removed, logs included: pass --out to keep the finished "
            "parts and the logs for a rerun)"
        ) from None
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    done: list[EpisodeResult] = []
    for key in parts:
        for e in results[key]["episodes"]:
            result = EpisodeResult(**e)
            if result.video is not None and video_dir is not None:  # as given, like a single process names it
                result.video = str(Path(video_dir) / Path(result.video).name)
            done.append(result)
    by_task = {task: TaskResult(task, instructions[task]) for task in names}
    for e in done:
        by_task[e.task].episodes.append(e)
    results_by_task = list(by_task.values())
    report = _report(sim_config.type, embodiment, policy, episodes, execute_steps, seed, results_by_task)
    report["seconds_per_episode"] = sum(results[key]["seconds"] for key in parts) / len(plan)
    return _check_crashes(report, results_by_task, allow_crashes)


def _policy_identity(policy: str, sim, first_task: str) -> tuple[dict[str, Any], str]:
    """({what the policy is}, what a job loads): a checkpoint by its content hash, checked here as far as
    its manifest tells (a finished finetuning run of the simulator's embodiment), before any job starts."""
    if policy in ("scripted", "random"):
        load_policy(policy, sim)(first_task)  # a simulator without experts says so here, not in every job
        return {"name": policy}, policy
    from latbot import runs
    from latbot.errors import LatBotError

    path = Path(policy)
    if not path.exists():
        raise LatBotError(f"--policy {policy}: expected 'scripted', 'random' or a policy checkpoint directory")
    run = runs.open_run(path, "finetune")
    embodiment = (run.manifest.extra.get("target") or {}).get("embodiment")
    if embodiment != sim.embodiment:
        raise SimulatorError(
            f"--policy {policy} was trained for embodiment '{embodiment}', but simulator "
            f"'{sim.config.type}' runs '{sim.embodiment}'"
        )
    return {"checkpoint": run.manifest.content_hash}, str(path.absolute())


def run_part(part: dict[str, Any]) -> dict[str, Any]:
    """One launcher job: evaluate the part's episodes with the part's seeds and write `part["file"]`
    atomically; returns what it wrote. A part already written with the same identity is returned as it is."""
    from latbot import registry
    from latbot.atomic import replace_file
    from latbot.errors import LatBotError

    existing = read_part(part)
    if existing is not None:
        return existing
    identity = part["identity"]
    sim = registry.build("simulators", part["sim_config"])
    try:
        factory = load_policy(part["policy"], sim)  # latbot.policy.load_policy for a checkpoint, once per job
        if "checkpoint" in identity["policy"]:
            from latbot import runs

            now = runs.open_run(part["policy"], "finetune").manifest.content_hash
            if now != identity["policy"]["checkpoint"]:
                raise LatBotError(
                    f"--policy {part['policy']}: the checkpoint changed since the evaluation was submitted "
                    f"({identity['policy']['checkpoint']} → {now}); run the command again"
                )
        t_start = time.perf_counter()
        plan = [(task, int(s)) for task, s in identity["episodes"]]
        episodes = run_plan(sim, factory, plan, identity["image_size"], identity["execute_steps"],
                            identity["video_dir"], identity["video_camera"])  # fmt: skip
        seconds = time.perf_counter() - t_start
    finally:
        sim.close()
    data = {"identity": identity, "episodes": [vars(e) for e in episodes], "seconds": seconds}
    replace_file(Path(part["file"]), json.dumps(data, indent=1) + "\n")
    return data


def read_part(part: dict[str, Any]) -> dict[str, Any] | None:
    """The part file of `part` if it is done: a regular file of this identity with one well-formed result per
    planned episode (and no crashed one unless crashes are allowed); None otherwise (the job runs again)."""
    path = Path(part["file"])
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 256 << 20:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    identity = part["identity"]
    if not isinstance(data, dict) or data.get("identity") != identity:
        return None
    episodes, seconds = data.get("episodes"), data.get("seconds")
    if not isinstance(seconds, int | float) or not isinstance(episodes, list):
        return None
    if len(episodes) != len(identity["episodes"]):
        return None
    fields = {"task", "seed", "success", "steps", "error", "video"}  # and optionally "metrics"
    for e, (task, s) in zip(episodes, identity["episodes"], strict=True):
        if not isinstance(e, dict) or set(e) - {"metrics"} != fields or e["task"] != task or e["seed"] != s:
            return None
        if not isinstance(e["success"], bool) or not isinstance(e["steps"], int) or isinstance(e["steps"], bool):
            return None
        if not all(e[k] is None or isinstance(e[k], str) for k in ("error", "video")):
            return None
        m = e.get("metrics")
        if m is not None and not (isinstance(m, dict) and all(isinstance(v, bool) for v in m.values())):
            return None
        if e["error"] is not None and not part["allow_crashes"]:
            return None  # crashes are findings to reproduce (the policy or simulator may have been fixed since)
    return data


def is_jobs_folder(path: Path) -> bool:
    """Whether `path` is a real folder holding only what launcher jobs of `eval sim` write there."""
    try:
        return path.is_dir() and not path.is_symlink() and all(_JOB_NAMES.fullmatch(p.name) for p in path.iterdir())
    except OSError:
        return False


def _report(simulator, embodiment, policy, episodes, execute_steps, seed, results) -> dict[str, Any]:
    """The JSON-able report; crashed episodes are in it as failures with their `error`."""
    all_eps = [e for r in results for e in r.episodes]
    wins = sum(e.success for e in all_eps)  # a crashed episode never succeeded
    finished = [e for e in all_eps if e.error is None]
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
            **({"metrics": metric_rates(finished)} if any(e.metrics for e in finished) else {}),
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
    if the evaluation fails.

    With a `launcher` in `options`, the jobs keep their parts in `dest/.jobs/`: a folder holding nothing but
    that (an earlier launcher evaluation into it that failed) is accepted as new, the parts that finished
    are kept when a job fails (so that rerunning the command resubmits only the others), and `.jobs/` is
    removed before the report is written (it is never part of the artifact) or when episodes crashed."""
    from latbot.ownership import LOCK_NAME, MANIFEST_NAME, writer_lock

    dest = Path(dest)
    jobs_dir = dest / JOBS_DIR
    _claim(dest)
    created, locked = not dest.exists(), False
    if options.get("launcher") is not None:
        options = {**options, "jobs_dir": jobs_dir}
    try:
        with writer_lock(dest, "evaluation"):
            locked = True
            _claim(dest)  # again under the lock: another writer may have filled it meanwhile
            report = evaluate(sim_config, policy, tasks, episodes, **options)
            if is_jobs_folder(jobs_dir):  # merged into the report (or left by an earlier launcher evaluation)
                import shutil

                shutil.rmtree(jobs_dir)
            write_report(dest, report, policy)
    except BaseException as e:
        if isinstance(e, EpisodesCrashedError) and "jobs_dir" in options and is_jobs_folder(jobs_dir):
            import shutil  # every job ran: the crashes are the finding, nothing is left to resume

            shutil.rmtree(jobs_dir)
        if created and locked:  # only what this call made: its files, then the folder if nothing else is left
            for name in (REPORT_NAME, MANIFEST_NAME, LOCK_NAME):  # replace_file removes its own temporary file
                (dest / name).unlink(missing_ok=True)
            try:
                dest.rmdir()  # kept while it holds the parts and logs of launcher jobs, for a rerun
            except OSError:
                pass  # something else was put there meanwhile: not ours to remove
        raise
    return report


def _claim(dest: Path) -> bool:
    """`latbot.ownership.claim` for an "eval" artifact, where a folder holding only the `.jobs/` folder of an
    earlier launcher evaluation (and a lock file) counts as new; a `.jobs` holding anything else is refused."""
    from latbot.ownership import LOCK_NAME, OwnershipError, claim

    jobs_dir = dest / JOBS_DIR
    if dest.is_dir() and not dest.is_symlink() and (jobs_dir.exists() or jobs_dir.is_symlink()):
        if not is_jobs_folder(jobs_dir):
            raise OwnershipError(
                f"--out {dest}: its {JOBS_DIR} is not a folder of `eval sim --launcher` jobs (it holds other "
                "files, or is a link); nothing was changed; choose another --out"
            )
        if all(p.name in (LOCK_NAME, JOBS_DIR) for p in dest.iterdir()):
            return False
    return claim(dest, {"eval"})


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
    """One closed-loop episode; any exception becomes this episode's `error`, never the whole run's. A policy
    with a `seed_episode(seed)` method is reseeded with the episode's seed first."""
    env = None
    frames: list[np.ndarray] = []
    steps, solved = 0, False
    try:
        reseed = getattr(policy, "seed_episode", None)
        if callable(reseed):  # a stochastic policy draws from this episode's seed, not from the ones before
            reseed(seed)
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
        metrics = getattr(env, "metrics", None)  # optional further outcomes (latbot/sim/base.py)
        metrics = {str(k): bool(v) for k, v in metrics.items()} if metrics else None
        video = None
        if video_dir and frames:
            from latbot.data.video import encode_video

            Path(video_dir).mkdir(parents=True, exist_ok=True)
            video = str(Path(video_dir) / f"{task}_seed{seed}_{'success' if solved else 'fail'}.mp4")
            encode_video(video, np.stack(frames), fps=20, codec="libx264", gop=12)
        return EpisodeResult(task, seed, solved, steps, video=video, metrics=metrics)
    except Exception as e:  # a simulator or policy crash is this episode's result, the run goes on
        from latbot import registry

        culprit = registry.blame(e)  # name the plugin whose code raised, if one did
        where = f" (in {culprit.kind} plugin '{culprit.name}' from '{culprit.distribution}')" if culprit else ""
        return EpisodeResult(task, seed, False, steps, error=f"{type(e).__name__}: {e}{where}")
    finally:
        if env is not None:
            env.close()
