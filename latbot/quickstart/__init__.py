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
    grounding_samples: int = 16  # held-out first frames of the grounding A/B (its intervals are over them)
    pretrain_action_noise: float = 0.0  # σ on the expert's actions in the pretraining demonstrations (gen-sim)
    lam_frame_stride: int = 1  # simulator steps between a LAM / distillation clip's frames
    eval_max_steps: int | None = 250  # MetaWorld's own limit is 500; the experts finish well inside 250


# study 1 (recipes/studies/fewshot_metaworld.yaml) at one seed and a quarter of its pretraining tasks: the
# five held-out tasks are never pretrained on, and pi0.5 without distillation sits mid-range on them
PRETRAIN = (
    "reach",
    "push",
    "pick-place",
    "door-close",
    "drawer-close",
    "window-close",
    "button-press",
    "button-press-topdown",
    "plate-slide-side",
    "plate-slide-back",
)
HELDOUT = ("door-open", "drawer-open", "window-open", "button-press-wall", "plate-slide")

PRESETS: dict[str, Preset] = {
    # pretraining demonstrations with σ = 0.3 noise on the expert's actions and LAM clips 4 steps apart: the
    # action stream has to read the motion (docs/models.md, "Does the action stream read the motion?")
    "tiny": Preset(PRETRAIN, HELDOUT, 6, 10, 10, RECIPES, pretrain_action_noise=0.3, lam_frame_stride=4),
    "small": Preset(
        PRETRAIN,
        HELDOUT,
        20,
        10,
        20,
        RECIPES / "small",
        report_samples=8,
        pretrain_action_noise=0.3,
        lam_frame_stride=4,
    ),
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
        grounding_samples=2,
        pretrain_action_noise=0.3,
        lam_frame_stride=4,
    ),
}


class QuickstartError(LatBotError):
    """The quickstart cannot go on (a stage failed, an artifact under --out is not what it should be)."""


# -- stages (latbot.pipeline's steps, laid out under --out) ------------------------------------------------
def store_stage(out: Path, name: str, tasks: tuple[str, ...], episodes: int, preset: Preset, seed: int) -> Path:
    """MetaWorld demonstrations into `out/stores/<name>`; skipped when the store already holds them."""
    from latbot import pipeline

    noise = preset.pretrain_action_noise if name == "pretrain" else 0.0  # few-shot demonstrations stay clean
    if noise:
        name = f"{name}_noise{noise:g}"  # its own store: one made before (clean) is left as it is
    path = out / "stores" / name
    return pipeline.demonstrations(
        path, "metaworld", list(tasks), episodes, preset.image_size, seed, f"stores/{name}", noise
    )


def train_stage(out: Path, name: str, recipe_path: Path, sets: list[str]) -> Path:
    """One stage's run into `out/runs/<name>`: skipped, resumed or trained (latbot.pipeline.train)."""
    from latbot import pipeline

    return pipeline.train(out / "runs", name, recipe_path, sets, f"runs/{name}")


def eval_stage(out: Path, name: str, policy_run: Path, preset: Preset) -> dict[str, Any]:
    """Closed-loop evaluation of a policy on the held-out tasks into `out/eval/<name>`."""
    from latbot import pipeline

    return pipeline.evaluate(
        out / "eval" / name,
        policy_run,
        "metaworld",
        list(preset.heldout_tasks),
        preset.eval_episodes,
        preset.image_size,
        preset.execute_steps,
        label=f"eval/{name}",
        max_steps=preset.eval_max_steps,
    )


# -- the pipeline --------------------------------------------------------------------------------------------
def run(out: str | Path = "quickstart", preset: str = "tiny", seed: int = 0, parallel: bool = True) -> Path:
    """Run (or finish) the quickstart into `out`; returns the report directory. With `parallel`, the
    independent stages (the two stores, the two finetuning runs, the two evaluations) run side by side,
    one per core; results are the same either way (every stage is seeded on its own)."""
    from latbot import pipeline

    if preset not in PRESETS:
        raise QuickstartError(f"--preset {preset}: choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    out = Path(out)
    from latbot.artifacts import claim_workspace
    from latbot.ownership import writer_lock

    claim_workspace(out, "quickstart", ("stores", "runs", "eval", "cache", "report", "stage_times.json"))
    with writer_lock(out, "quickstart"):
        times_path = out / "stage_times.json"
        times: dict[str, Any] = json.loads(times_path.read_text()) if times_path.exists() else {}

        t_start = time.perf_counter()

        def record(stage: str, seconds: float, began: float) -> None:
            """A stage's time and its span [start, end] in seconds since this run began (wall clock)."""
            if seconds > 1.0 or stage not in times:  # a skipped stage keeps the time it took when it ran
                start = round(began - t_start, 1)
                times[stage] = {"seconds": round(seconds, 1), "start": start, "end": round(start + seconds, 1)}
            times_path.write_text(json.dumps(times, indent=2) + "\n")

        def timed(stage: str, fn: Callable[[], Any]) -> Any:
            t0 = time.perf_counter()
            result = fn()
            record(stage, time.perf_counter() - t0, t0)
            return result

        def pair(jobs: dict[str, tuple[Callable, tuple]]) -> dict[str, Any]:
            """Two independent stages at once, one per core (`parallel`), or one after the other."""
            t0 = time.perf_counter()
            results = pipeline.side_by_side(jobs, workers=2 if parallel else 1)
            offset = 0.0
            for stage, (_, seconds) in results.items():
                record(stage, seconds, t0 + offset)  # side by side: both start at once; else in turn
                offset += 0.0 if parallel else seconds
            return {stage: result for stage, (result, _) in results.items()}

        stores = pair(
            {
                "stores/pretrain": (store_stage, (out, "pretrain", p.pretrain_tasks, p.pretrain_episodes, p, seed)),
                "stores/heldout": (store_stage, (out, "heldout", p.heldout_tasks, p.demos_per_task, p, seed + 500_000)),
            }
        )
        pre, held = stores["stores/pretrain"], stores["stores/heldout"]
        extra = p.overrides
        sources = pipeline.sources_override(pre, p.lam_frame_stride)
        lam = timed(
            "runs/lam",
            lambda: train_stage(out, "lam", p.recipes / "lam.yaml", [sources, *extra.get("lam", ())]),
        )
        distill_sets = [
            sources,
            f"model.teacher={lam}",
            f"model.teacher_cache={out / 'cache' / 'teacher_latents'}",
            *extra.get("distill", ()),
        ]
        pipeline.drop_stale_cache(out / "cache" / "teacher_latents", lam)
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
            lambda: write_report(
                out,
                preset,
                p,
                {"pretrain": pre, "heldout": held},
                lam,
                distill,
                ft,
                evals,
                times,
                wall=time.perf_counter() - t_start,
            ),
        )
        pipeline.say(f"done in {time.perf_counter() - t_start:.0f} s: {report_dir / 'report.md'}")
        return report_dir
