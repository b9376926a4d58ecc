"""`latbot quickstart`: the whole method end to end on CPU, in one command, resumable.

    MetaWorld demonstrations (pretraining tasks, held-out tasks)
      → LAM pretraining on the pretraining tasks                         recipes/quickstart/lam.yaml
      → distillation into the tiny pi0.5 student on the pretraining tasks  recipes/quickstart/distill.yaml
      → finetuning on k demos per held-out task: the distilled pi0.5 student + pi0.5's expert (LatBot,
        recipes/quickstart/finetune.yaml), and pi0.5 without distillation (the paper's baseline,
        recipes/quickstart/baseline.yaml)
      → closed-loop evaluation of both on the held-out tasks
      → report (report.md, report.json, PNG plots, episode.rrd)

Every stage is the same code path as the real-size recipes (`latbot train`, `latbot eval sim`, ...);
only the recipes differ. Each stage's artifact keeps its manifest under `--out`; a rerun skips a stage
whose manifest matches (same recipe, same parents), resumes a training run that was interrupted from
its last checkpoint, and recomputes what changed (and everything after it).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latbot.errors import LatBotError

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "quickstart"


@dataclass(frozen=True)
class Preset:
    pretrain_tasks: tuple[str, ...]
    heldout_tasks: tuple[str, ...]
    pretrain_episodes: int  # demonstrations per pretraining task
    demos_per_task: int  # few-shot finetuning: demonstrations per held-out task
    eval_episodes: int  # closed-loop episodes per held-out task and policy
    recipes: Path
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage → extra --set
    image_size: int = 64
    execute_steps: int = 4
    report_samples: int = 4


PRETRAIN = ("reach", "push", "pick-place", "door-open", "drawer-open", "window-open", "button-press")
HELDOUT = ("drawer-close", "window-close", "button-press-topdown")

PRESETS: dict[str, Preset] = {
    "tiny": Preset(PRETRAIN, HELDOUT, 6, 10, 10, RECIPES),
    "small": Preset(PRETRAIN, HELDOUT, 20, 10, 20, RECIPES / "small", report_samples=8),
    # the test suite's variant: the same command and code path, minutes instead of a quarter hour
    "smoke": Preset(
        ("reach", "drawer-open"),
        ("drawer-close",),
        2,
        2,
        1,
        RECIPES,
        overrides={
            "lam": ("train.steps=60", "train.checkpoint_every=10", "train.warmup_steps=2"),
            "distill": ("train.steps=6", "train.checkpoint_every=3", "train.warmup_steps=2"),
            "finetune": ("train.steps=6", "train.checkpoint_every=3", "train.warmup_steps=2"),
        },
        report_samples=2,
    ),
}


class QuickstartError(LatBotError):
    """The quickstart cannot go on (a stage failed, an artifact under --out is not what it should be)."""


def _say(text: str) -> None:
    print(f"[quickstart] {text}", flush=True)


# -- stages ------------------------------------------------------------------------------------------------
def _parents_current(manifest) -> bool:
    from latbot.artifacts import ArtifactError, read_manifest

    for p in manifest.parents:
        try:
            if read_manifest(p.path).content_hash != p.content_hash:
                return False
        except ArtifactError:
            return False
    return True


def store_stage(out: Path, name: str, tasks: tuple[str, ...], episodes: int, preset: Preset, seed: int) -> Path:
    """MetaWorld demonstrations into `out/stores/<name>`; skipped when the store already holds them."""
    from latbot import registry
    from latbot.artifacts import ArtifactError, read_manifest
    from latbot.sim.generate import generate

    path = out / "stores" / name
    try:
        m = read_manifest(path, kind="episode_store")
        if m.extra.get("tasks") == list(tasks) and m.extra.get("seed") == seed and _has(path, tasks, episodes):
            _say(f"stores/{name}: up to date, skipped")
            return path
    except ArtifactError:
        pass
    _say(f"stores/{name}: {episodes} demonstrations × {len(tasks)} tasks ({', '.join(tasks)})")
    sim = registry.get("simulators", "metaworld").Config()
    generate(sim, list(tasks), episodes, path, image_size=preset.image_size, seed=seed, progress=True)
    return path


def _has(path: Path, tasks: tuple[str, ...], episodes: int) -> bool:
    from collections import Counter

    from latbot.data.store import EpisodeStore

    with EpisodeStore.open(path) as store:
        counts = Counter(r.task for r in store.records)
    return all(counts[t] >= episodes for t in tasks)


def train_stage(out: Path, name: str, recipe_path: Path, sets: list[str]) -> Path:
    """`latbot train` of one recipe into `out/runs/<name>`: skipped when the finished run's recipe matches
    and its parents are current, resumed from the last checkpoint when interrupted, retrained when anything
    changed."""
    from latbot import runs, stages
    from latbot.artifacts import ArtifactError
    from latbot.recipes import load_recipe, to_dict
    from latbot.train import checkpoint

    root = out / "runs"
    recipe = load_recipe(recipe_path, [*sets, f"log.out_dir={root}", f"log.run_name={name}"])
    run_dir = root / name
    intended = to_dict(recipe)
    try:
        run = runs.open_run(run_dir, recipe.stage, complete=False)
    except ArtifactError:
        run = None
    if run is not None and run.complete:
        if run.manifest.recipe == intended and _parents_current(run.manifest):
            _say(f"runs/{name}: up to date, skipped")
            return run_dir
        _say(f"runs/{name}: its recipe or inputs changed, training again")
    elif run is not None and run.manifest.recipe == intended and checkpoint.latest(run_dir) is not None:
        _say(f"runs/{name}: resuming from {checkpoint.latest(run_dir).name}")
        return stages.run(recipe, resume=run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    _say(f"runs/{name}: training ({recipe.stage}, {recipe.train.steps} steps)")
    return stages.run(recipe, recipe_path=recipe_path)


def eval_stage(out: Path, name: str, policy_run: Path, preset: Preset) -> dict[str, Any]:
    """Closed-loop evaluation of a policy on the held-out tasks into `out/eval/<name>`."""
    from latbot import registry
    from latbot.artifacts import ArtifactError, parent_ref, read_manifest, write_manifest
    from latbot.sim.evaluate import evaluate

    path = out / "eval" / name
    settings = {"tasks": list(preset.heldout_tasks), "episodes": preset.eval_episodes}
    settings |= {"image_size": preset.image_size, "execute_steps": preset.execute_steps}
    try:
        m = read_manifest(path, kind="eval")
        if m.extra.get("settings") == settings and _parents_current(m):
            _say(f"eval/{name}: up to date, skipped")
            return json.loads((path / "report.json").read_text())
    except ArtifactError:
        pass
    _say(f"eval/{name}: {preset.eval_episodes} episodes × {len(preset.heldout_tasks)} held-out tasks")
    sim = registry.get("simulators", "metaworld").Config()
    report = evaluate(
        sim,
        str(policy_run),
        list(preset.heldout_tasks),
        preset.eval_episodes,
        image_size=preset.image_size,
        execute_steps=preset.execute_steps,
    )
    if report["overall"]["errors"]:
        first = next(e["error"] for e in report["episodes"] if e["error"])
        raise QuickstartError(f"eval/{name}: {report['overall']['errors']} episode(s) crashed, e.g. {first}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_manifest(path, "eval", parents=[parent_ref(policy_run, "finetune")], extra={"settings": settings})
    return report


def _drop_stale_cache(cache: Path, lam: Path) -> None:
    """A teacher cache built by an earlier LAM would be refused by the distillation stage: rebuild it."""
    from latbot.artifacts import ArtifactError, read_manifest

    if not cache.exists():
        return
    try:
        stale = read_manifest(cache).extra.get("teacher") != read_manifest(lam).content_hash
    except ArtifactError:
        stale = True
    if stale:
        _say("cache/teacher_latents: built by another teacher, rebuilding")
        shutil.rmtree(cache)


# -- the pipeline --------------------------------------------------------------------------------------------
def _timed_call(fn: Callable, args: tuple) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


def _run_side_by_side(jobs: dict[str, tuple[Callable, tuple]]) -> dict[str, tuple[Any, float]]:
    """Run independent stages in separate processes (spawned: no state shared with this one), each with
    one compute thread; results come back by value. A failing stage's error is raised here."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn"), initializer=_one_thread) as pool:
        futures = {stage: pool.submit(_timed_call, fn, args) for stage, (fn, args) in jobs.items()}
        return {stage: f.result() for stage, f in futures.items()}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run(out: str | Path = "quickstart", preset: str = "tiny", seed: int = 0, parallel: bool = True) -> Path:
    """Run (or finish) the quickstart into `out`; returns the report directory. With `parallel`, the
    independent stages (the two stores, the two finetuning runs, the two evaluations) run side by side,
    one per core; results are the same either way (every stage is seeded on its own)."""
    if preset not in PRESETS:
        raise QuickstartError(f"--preset {preset}: choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times_path = out / "stage_times.json"
    times: dict[str, Any] = json.loads(times_path.read_text()) if times_path.exists() else {}

    def record(stage: str, seconds: float) -> None:
        if seconds > 1.0 or stage not in times:  # a skipped stage keeps the time it took when it ran
            times[stage] = {"seconds": round(seconds, 1)}
        times_path.write_text(json.dumps(times, indent=2) + "\n")

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        record(stage, time.perf_counter() - t0)
        return result

    def pair(jobs: dict[str, tuple[Callable, tuple]]) -> dict[str, Any]:
        """Two independent stages at once, one per core (`parallel`), or one after the other."""
        results = _run_side_by_side(jobs) if parallel else {k: _timed_call(f, a) for k, (f, a) in jobs.items()}
        for stage, (_, seconds) in results.items():
            record(stage, seconds)
        return {stage: result for stage, (result, _) in results.items()}

    t_start = time.perf_counter()
    stores = pair(
        {
            "stores/pretrain": (store_stage, (out, "pretrain", p.pretrain_tasks, p.pretrain_episodes, p, seed)),
            "stores/heldout": (store_stage, (out, "heldout", p.heldout_tasks, p.demos_per_task, p, seed + 500_000)),
        }
    )
    pre, held = stores["stores/pretrain"], stores["stores/heldout"]
    extra = p.overrides
    lam = timed(
        "runs/lam",
        lambda: train_stage(
            out, "lam", p.recipes / "lam.yaml", [f"data.sources=[{{store: {pre}}}]", *extra.get("lam", ())]
        ),
    )
    distill_sets = [
        f"data.sources=[{{store: {pre}}}]",
        f"model.teacher={lam}",
        f"model.teacher_cache={out / 'cache' / 'teacher_latents'}",
        *extra.get("distill", ()),
    ]
    _drop_stale_cache(out / "cache" / "teacher_latents", lam)
    distill = timed("runs/distill", lambda: train_stage(out, "distill", p.recipes / "distill.yaml", distill_sets))
    few_shot = f"data.sources=[{{store: {held}, demos_per_task: {p.demos_per_task}}}]"
    jobs = {}
    for name, recipe, parent in (("distilled", "finetune.yaml", distill), ("baseline", "baseline.yaml", None)):
        sets = [few_shot, f"model.student_checkpoint={parent if parent else 'null'}", *extra.get("finetune", ())]
        jobs[f"runs/ft_{name}"] = (train_stage, (out, f"ft_{name}", p.recipes / recipe, sets))
    trained = pair(jobs)
    ft = {name: trained[f"runs/ft_{name}"] for name in ("distilled", "baseline")}
    evaluated = pair({f"eval/{name}": (eval_stage, (out, name, ft[name], p)) for name in ft})
    evals = {name: evaluated[f"eval/{name}"] for name in ft}
    from latbot.quickstart.report import write_report

    report_dir = timed(
        "report",
        lambda: write_report(out, preset, p, {"pretrain": pre, "heldout": held}, lam, distill, ft, evals, times),
    )
    _say(f"done in {time.perf_counter() - t_start:.0f} s: {report_dir / 'report.md'}")
    return report_dir
