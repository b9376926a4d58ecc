"""The pipeline's steps as idempotent functions, shared by `latbot quickstart` and `latbot study`.

Each step writes one artifact directory with its manifest and is skipped when that artifact already holds
what is asked for (same settings, parents unchanged), so a pipeline can be rerun after an interruption and
does only what is left: `demonstrations` (simulated demos into an episode store), `train` (one stage's
run: skipped, resumed from its last checkpoint, or trained), `evaluate` (closed-loop evaluation of a policy
run). `side_by_side` runs independent steps in separate processes, one per core.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latbot.errors import LatBotError


class PipelineError(LatBotError):
    """A pipeline step cannot go on (a stage failed, an artifact on disk is not what it should be)."""


def say(text: str) -> None:
    print(f"[latbot] {text}", flush=True)


def parents_current(manifest) -> bool:
    """Every parent artifact still has the content hash recorded when this artifact was made."""
    from latbot.artifacts import ArtifactError, read_manifest

    for p in manifest.parents:
        try:
            if read_manifest(p.path).content_hash != p.content_hash:
                return False
        except ArtifactError:
            return False
    return True


def demonstrations(
    path: Path,
    simulator: str,
    tasks: list[str],
    episodes: int,
    image_size: int,
    seed: int,
    label: str = "",
    action_noise: float = 0.0,
) -> Path:
    """Scripted demonstrations of `tasks` into the store `path` (with `action_noise`: see
    `latbot.sim.generate.rollout_expert`); skipped when it already holds them (`holds_demonstrations`)."""
    from latbot import registry
    from latbot.sim.generate import generate

    label = label or str(path)
    if holds_demonstrations(path, tasks, episodes, seed, action_noise):
        say(f"{label}: up to date, skipped")
        return path
    say(f"{label}: {episodes} demonstrations × {len(tasks)} tasks ({', '.join(tasks)})")
    sim = registry.get("simulators", simulator).Config()
    generate(
        sim, list(tasks), episodes, path, image_size=image_size, seed=seed, progress=True, action_noise=action_noise
    )
    return path


def sources_override(store: Path, frame_stride: int = 1) -> str:
    """The `--set` override that makes `store` a recipe's only data source, read with clips `frame_stride`
    simulator steps apart (the LAM and distillation stages of the quickstart and of studies)."""
    stride = f", frame_stride: {frame_stride}" if frame_stride != 1 else ""
    return f"data.sources=[{{store: {store}{stride}}}]"


def holds_demonstrations(path: Path, tasks: list[str], episodes: int, seed: int, action_noise: float = 0.0) -> bool:
    """Whether the store at `path` was generated for exactly these `tasks`, `seed` and `action_noise` and holds
    at least `episodes` of each task: `demonstrations` then skips it (False for no store or a broken one)."""
    from collections import Counter

    from latbot.artifacts import ArtifactError, read_manifest
    from latbot.data.store import EpisodeStore

    try:
        m = read_manifest(path, kind="episode_store")
        if m.extra.get("tasks") != list(tasks) or m.extra.get("seed") != seed:
            return False
        if float(m.extra.get("action_noise", 0.0)) != action_noise:
            return False
        with EpisodeStore.open(path) as store:
            counts = Counter(r.task for r in store.records)
    except ArtifactError:
        return False
    return all(counts[t] >= episodes for t in tasks)


def train(root: Path, name: str, recipe_path: Path, sets: list[str], label: str = "") -> Path:
    """`latbot train` of one recipe into `root/<name>`: skipped when the finished run's recipe matches and
    its parents are current, resumed from the last checkpoint when interrupted, retrained when anything
    changed."""
    from latbot import runs, stages
    from latbot.artifacts import ArtifactError
    from latbot.recipes import load_recipe, to_dict
    from latbot.train import checkpoint

    label = label or f"{root.name}/{name}"
    recipe = load_recipe(recipe_path, [*sets, f"log.out_dir={root}", f"log.run_name={name}"])
    run_dir = root / name
    intended = to_dict(recipe)
    try:
        run = runs.open_run(run_dir, recipe.stage, complete=False)
    except ArtifactError:
        run = None
    if run is not None and run.complete:
        if run.manifest.recipe == intended and parents_current(run.manifest):
            say(f"{label}: up to date, skipped")
            return run_dir
        say(f"{label}: its recipe or inputs changed, training again")
    elif run is not None and run.manifest.recipe == intended and checkpoint.latest(run_dir) is not None:
        say(f"{label}: resuming from {checkpoint.latest(run_dir).name}")
        return stages.run(recipe, resume=run_dir)
    if run is not None:  # a run of this stage that the pipeline replaces; anything else is refused
        _not_being_written(run_dir, label)
        shutil.rmtree(run_dir)
    say(f"{label}: training ({recipe.stage}, {recipe.train.steps} steps)")
    return stages.run(recipe, recipe_path=recipe_path)


def evaluate(
    path: Path,
    policy_run: Path,
    simulator: str,
    tasks: list[str],
    episodes: int,
    image_size: int,
    execute_steps: int,
    seed: int | None = None,
    label: str = "",
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Closed-loop evaluation of a finetuned policy into `path` (report.json + manifest kind "eval");
    `max_steps` overrides the simulator's episode step limit."""
    from latbot import registry
    from latbot.artifacts import ArtifactError, parent_ref, read_manifest, write_manifest
    from latbot.sim.evaluate import EVAL_SEED_BASE, EpisodesCrashedError
    from latbot.sim.evaluate import evaluate as run_episodes

    label = label or str(path)
    seed = EVAL_SEED_BASE if seed is None else seed
    settings = {"tasks": list(tasks), "episodes": episodes, "image_size": image_size, "execute_steps": execute_steps}
    if seed != EVAL_SEED_BASE:
        settings["seed"] = seed
    if max_steps is not None:
        settings["max_steps"] = max_steps
    from latbot.ownership import claim

    if claim(path, {"eval"}, option="evaluation folder"):  # an evaluation made before: reuse or replace it
        try:
            m = read_manifest(path, kind="eval")
            if m.extra.get("settings") == settings and parents_current(m):
                say(f"{label}: up to date, skipped")
                return json.loads((path / "report.json").read_text())
        except (ArtifactError, OSError, ValueError):
            pass
    say(f"{label}: {episodes} episodes × {len(tasks)} tasks")
    config = registry.get("simulators", simulator).Config
    if max_steps is not None and "max_steps" not in config.model_fields:
        raise PipelineError(f"{label}: simulator '{simulator}' has no `max_steps` option to limit its episodes")
    sim = config(**({} if max_steps is None else {"max_steps": max_steps}))
    try:
        report = run_episodes(
            sim, str(policy_run), list(tasks), episodes, seed=seed, image_size=image_size, execute_steps=execute_steps
        )
    except EpisodesCrashedError as e:  # a study or quickstart never scores a policy that crashed
        raise PipelineError(f"{label}: {e.crashed} of {e.total} episode(s) crashed, e.g. {e.first}") from e
    _not_being_written(path, label)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_manifest(path, "eval", parents=[parent_ref(policy_run, "finetune")], extra={"settings": settings})
    return report


def _not_being_written(path: Path, label: str) -> None:
    """Refuse to replace an artifact another process is writing (it holds the folder's writer lock)."""
    from latbot.ownership import held_by_other

    holder = held_by_other(path)
    if holder is not None:
        raise PipelineError(f"{label}: {path} is being written by another LatBot process (pid {holder}); wait for it")


def drop_stale_cache(cache: Path, lam: Path) -> None:
    """A teacher cache built by an earlier LAM would be refused by the distillation stage: rebuild it."""
    from latbot import runs
    from latbot.artifacts import ArtifactError, read_manifest

    if not cache.exists():
        return
    try:
        stale = read_manifest(cache).extra.get("teacher") != runs.open_run(lam, "lam").manifest.content_hash
    except ArtifactError:
        stale = True
    if stale:
        from latbot.ownership import claim

        claim(cache, {"teacher_cache"}, option="teacher cache")  # never remove what is not a cache
        say(f"{cache}: built by another teacher, rebuilding")
        shutil.rmtree(cache)


# -- running independent steps side by side ----------------------------------------------------------------
def timed_call(fn: Callable, args: tuple) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


def side_by_side(jobs: dict[str, tuple[Callable, tuple]], workers: int = 2) -> dict[str, tuple[Any, float]]:
    """Run independent steps in separate processes (spawned: no state shared with this one), each with one
    compute thread; returns {name: (result, seconds)}. `workers` ≤ 1 runs them here, one after the other.
    A failing step's error is raised here after the others finish."""
    if workers <= 1 or len(jobs) <= 1:
        return {name: timed_call(fn, args) for name, (fn, args) in jobs.items()}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_one_thread) as pool:
        futures = {name: pool.submit(timed_call, fn, args) for name, (fn, args) in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
