"""`latbot study STUDY.yaml`: a declared grid of variants × seeds × demonstration counts through the whole
pipeline (demonstrations → LAM → distillation → finetuning → closed-loop evaluation), resumable, then
aggregated into report.md / report.json / PNGs (latbot/study/report.py).

A study file (recipes/studies/*.yaml)::

    name: fewshot_metaworld
    simulator: metaworld
    pretrain_tasks: [reach, push, ...]        # demonstrations for the LAM and distillation
    pretrain_episodes: 6
    heldout_tasks: [pick-place, ...]           # never in pretraining; finetuned and evaluated
    demos: [3, 5, 10]                          # finetuning demonstrations per held-out task
    seeds: [0, 1, 2]
    eval_episodes: 30                          # closed-loop episodes per held-out task, per cell
    baseline: baseline                         # the variant paired differences are taken against
    variants:
      latbot:
        lam: ../quickstart/lam.yaml
        distill: ../quickstart/distill.yaml
        finetune: ../quickstart/finetune.yaml
      baseline: {finetune: ../quickstart/baseline.yaml}

Recipe paths are relative to the study file. A seed changes every model's initialisation and data order
(`train.seed`), the held-out demonstrations and the evaluation episodes; the pretraining demonstrations
are shared by all cells. Layout under --out::

    stores/pretrain (stores/pretrain_noise<σ> with pretrain_action_noise), stores/heldout_s<seed>
    <variant>/s<seed>/{lam, distill, cache}        (variants with a LAM)
    <variant>/s<seed>/probes.json                   (its held-out probes, reused while the LAM and store match)
    <variant>/s<seed>/d<demos>/{ft, eval}
    .jobs/<step>/                                   (with a launcher: jobs.json and the jobs' logs)
    report/

The steps run in order: stores → pretrain (LAM + distillation per variant and seed) → finetune → evaluate
→ probes → the report. Without a launcher (`launcher: null`, the default) each step's jobs run side by side
in `workers` local processes. With one (a `launcher:` block, or `latbot study --launcher local|slurm`) they
go through `latbot.cluster.launcher.run_jobs`: a job whose output already verifies (the test `_done` of its
step: the same checks the pipeline makes before skipping it) runs here and returns at once, the rest are
submitted (local subprocesses or one Slurm array per step), and a failed job fails the study with one line
naming its key and log; rerunning resubmits only what is missing. `status` reports every step's keys.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from latbot.cluster.launcher import Launcher
from latbot.config import Section

STAGE_KEYS = ("lam", "distill", "finetune")
STEPS = ("stores", "pretrain", "finetune", "evaluate", "probes", "grounding")
JOBS_DIR = ".jobs"  # under --out: one folder per step with a launcher's jobs.json and logs
PROBES_FILE = "probes.json"
GROUNDING_FILE = "grounding.json"


class Variant(Section):
    """One arm of the study: the recipes of its stages, and extra `--set` overrides per stage."""

    lam: Path | None = Field(None, description="LAM recipe; none: the variant is not distilled (a baseline).")
    distill: Path | None = Field(None, description="Distillation recipe (needs `lam`).")
    finetune: Path = Field(description="Finetuning recipe; with `distill` it starts from the distilled student.")
    sets: dict[str, list[str]] = Field(default_factory=dict, description="stage → extra `--set a.b=VALUE`.")

    @model_validator(mode="after")
    def _chain(self) -> Variant:
        if (self.lam is None) != (self.distill is None):
            raise ValueError("give both `lam` and `distill`, or neither (a variant without distillation)")
        unknown = set(self.sets) - set(STAGE_KEYS)
        if unknown:
            raise ValueError(f"sets: unknown stage(s) {sorted(unknown)}; use {', '.join(STAGE_KEYS)}")
        return self


class Primary(Section):
    """The one comparison a study is run to make, fixed in the file before it runs (the file's commit is its
    registration): `variant` against the study's baseline at `demos` demonstrations."""

    variant: str = Field(description="The variant compared with the baseline.")
    demos: int = Field(ge=1, description="The demonstration count of the comparison.")


class Study(Section):
    name: str
    simulator: str = "metaworld"
    image_size: int = Field(64, ge=8, le=1024)
    execute_steps: int = Field(4, ge=1, description="Actions of each predicted chunk executed before re-planning.")
    pretrain_tasks: list[str] = Field(min_length=1)
    pretrain_episodes: int = Field(ge=1, le=10_000)
    pretrain_action_noise: float = Field(
        0.0,
        ge=0,
        description="σ of the noise on the scripted expert's actions in the pretraining demonstrations (LAM and "
        "distillation; `latbot data gen-sim --action-noise`); the held-out demonstrations stay clean.",
    )
    lam_frame_stride: int = Field(
        1, ge=1, description="Simulator steps between the frames of a LAM / distillation clip (the source's stride)."
    )
    heldout_tasks: list[str] = Field(min_length=1)
    demos: list[int] = Field(min_length=1, description="Finetuning demonstrations per held-out task.")
    seeds: list[int] = Field(min_length=1)
    eval_episodes: int = Field(ge=1, le=10_000)
    eval_max_steps: int | None = Field(
        None, ge=1, description="Episode step limit of the evaluations (default: the simulator's own)."
    )
    heldout_episodes: int | None = Field(
        None, ge=1, description="Demonstrations per held-out task in its store (default: the largest of `demos`)."
    )
    report_dir: str = Field(
        "report", description="Where the report goes under --out (studies sharing an --out share their runs)."
    )
    baseline: str = Field(description="The variant the others are compared with (paired differences).")
    primary: Primary | None = Field(
        None,
        description="The primary comparison, declared before the study runs: {variant, demos} against the "
        "baseline. Its interval and p-value are reported as they are; every other comparison is secondary, "
        "with Holm-corrected p-values. Required when the study compares anything (a variant besides the baseline).",
    )
    variants: dict[str, Variant] = Field(min_length=1)
    probe_samples: int = Field(128, ge=8, description="Clips for the held-out linear probes of Z_mot / Z_sce.")
    grounding_samples: int = Field(
        16, ge=2, le=256, description="Held-out first frames of the grounding A/B (each variant's finetuned VLM "
        "against the baseline's, per seed and demo count; docs/studies.md)."
    )  # fmt: skip
    reconstruction_samples: int = Field(
        8, ge=1, le=64, description="Held-out clips whose generated future frame the report shows next to the truth."
    )
    workers: int = Field(
        2, ge=1, le=64, description="Independent steps run side by side (one per core), without a launcher."
    )
    launcher: Launcher | None = Field(
        None,
        description="Where each step's jobs run through submitit (local subprocesses or a Slurm array); "
        "null: side by side in `workers` local processes.",
    )

    @field_validator("demos")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(d < 1 for d in v):
            raise ValueError("demos must be ≥ 1")
        return sorted(set(v))

    @field_validator("report_dir")
    @classmethod
    def _plain_dir(cls, v: str) -> str:
        if not v or Path(v).is_absolute() or any(part in ("", ".", "..") for part in v.split("/")):
            raise ValueError(f"report_dir '{v}' must be a folder name under --out, e.g. report_table5")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Study:
        overlap = sorted(set(self.pretrain_tasks) & set(self.heldout_tasks))
        if overlap:
            raise ValueError(f"held-out tasks must never be pretrained on: {overlap}")
        if self.heldout_episodes is not None and self.heldout_episodes < max(self.demos):
            raise ValueError(f"heldout_episodes ({self.heldout_episodes}) is below the largest demo count")
        if self.baseline not in self.variants:
            raise ValueError(f"baseline '{self.baseline}' is not one of the variants {sorted(self.variants)}")
        others = sorted(set(self.variants) - {self.baseline})
        if self.primary is None:
            if others:
                raise ValueError(
                    "primary: declare the comparison this study is run for, before it runs (e.g. primary: "
                    f"{{variant: {others[0]}, demos: {self.demos[-1]}}}); the file's commit is its registration"
                )
            return self
        if self.primary.variant not in others:
            raise ValueError(
                f"primary.variant '{self.primary.variant}' must be a variant other than the baseline: {others}"
            )
        if self.primary.demos not in self.demos:
            raise ValueError(f"primary.demos ({self.primary.demos}) is not one of demos {self.demos}")
        return self


def load_study(path: str | Path) -> Study:
    """Read a study file; recipe paths become relative to it; errors name file:line and the field."""
    from latbot.yamlio import load_yaml_model

    path = Path(path)
    study = load_yaml_model(path, Study)
    for v in study.variants.values():
        for key in STAGE_KEYS:
            recipe = getattr(v, key)
            if recipe is not None and not recipe.is_absolute():
                setattr(v, key, (path.parent / recipe).resolve())
    return study


def cells(study: Study) -> list[tuple[str, int, int]]:
    """Every (variant, seed, demos) of the grid."""
    return [(v, s, d) for v in study.variants for s in study.seeds for d in study.demos]


# -- the steps of one study (module-level: they run in worker processes or submitted jobs) ---------------------
def pretrain_store(study: Study, out: Path) -> Path:
    """stores/pretrain, or stores/pretrain_noise<σ> for noisy demonstrations: studies with different σ can
    share an --out (each finds its own store) and a σ never meets a store of another."""
    noise = study.pretrain_action_noise
    return out / "stores" / ("pretrain" if noise == 0 else f"pretrain_noise{noise:g}")


def _store_args(study: Study, out: Path, which: str, seed: int) -> tuple:
    """`pipeline.demonstrations`'s arguments for the pretraining store, or the held-out store of `seed`."""
    if which == "pretrain":
        return (
            pretrain_store(study, out), study.simulator, study.pretrain_tasks, study.pretrain_episodes,
            study.image_size, 0, f"stores/{pretrain_store(study, out).name}", study.pretrain_action_noise,
        )  # fmt: skip
    return (
        out / "stores" / f"heldout_s{seed}", study.simulator, study.heldout_tasks,
        study.heldout_episodes or max(study.demos),
        study.image_size, 500_000 + 1000 * seed, f"stores/heldout_s{seed}", 0.0,
    )  # fmt: skip


def _store(study: Study, out: Path, which: str, seed: int) -> Path:
    from latbot import pipeline

    return pipeline.demonstrations(*_store_args(study, out, which, seed))


def _sources(study: Study, pretrain: Path) -> str:
    """The `data.sources` of the LAM and the distillation: the pretraining store, at the study's clip stride."""
    from latbot import pipeline

    return pipeline.sources_override(pretrain, study.lam_frame_stride)


def _lam_args(study: Study, out: Path, name: str, seed: int, pretrain: Path) -> tuple:
    """`pipeline.train`'s arguments for the LAM of one variant and seed."""
    v = study.variants[name]
    sets = [_sources(study, pretrain), f"train.seed={seed}", *v.sets.get("lam", [])]
    return out / name / f"s{seed}", "lam", v.lam, sets, f"{name}/s{seed}/lam"


def _distill_args(study: Study, out: Path, name: str, seed: int, pretrain: Path) -> tuple:
    """`pipeline.train`'s arguments for the distillation of one variant and seed (its teacher: the LAM)."""
    v = study.variants[name]
    root = out / name / f"s{seed}"
    sets = [
        _sources(study, pretrain),
        f"model.teacher={root / 'lam'}",
        f"model.teacher_cache={root / 'cache'}",
        f"train.seed={seed}",
        *v.sets.get("distill", []),
    ]
    return root, "distill", v.distill, sets, f"{name}/s{seed}/distill"


def _pretrain(study: Study, out: Path, name: str, seed: int, pretrain: Path) -> Path:
    """LAM then distillation of one variant and seed; returns the distillation run."""
    from latbot import pipeline

    root = out / name / f"s{seed}"
    lam = pipeline.train(*_lam_args(study, out, name, seed, pretrain))
    pipeline.drop_stale_cache(root / "cache", lam)
    return pipeline.train(*_distill_args(study, out, name, seed, pretrain))


def _finetune_args(
    study: Study, out: Path, name: str, seed: int, demos: int, heldout: Path, distill: Path | None
) -> tuple:
    """`pipeline.train`'s arguments for the finetuning of one cell (from `distill`'s student, when given)."""
    v = study.variants[name]
    sets = [
        f"data.sources=[{{store: {heldout}, demos_per_task: {demos}}}]",
        f"model.student_checkpoint={distill if distill else 'null'}",
        f"train.seed={seed}",
        *v.sets.get("finetune", []),
    ]
    return out / name / f"s{seed}" / f"d{demos}", "ft", v.finetune, sets, f"{name}/s{seed}/d{demos}/ft"


def _finetune(study: Study, out: Path, name: str, seed: int, demos: int, heldout: Path, distill: Path | None):
    from latbot import pipeline

    return pipeline.train(*_finetune_args(study, out, name, seed, demos, heldout, distill))


def _evaluation_args(study: Study, out: Path, name: str, seed: int, demos: int, policy: Path) -> dict[str, Any]:
    """`pipeline.evaluate`'s arguments for the closed-loop evaluation of one cell's policy."""
    from latbot.sim.evaluate import EVAL_SEED_BASE

    return {
        "path": out / name / f"s{seed}" / f"d{demos}" / "eval",
        "policy_run": policy,
        "simulator": study.simulator,
        "tasks": study.heldout_tasks,
        "episodes": study.eval_episodes,
        "image_size": study.image_size,
        "execute_steps": study.execute_steps,
        "seed": EVAL_SEED_BASE + 100_000 * seed,
        "label": f"{name}/s{seed}/d{demos}/eval",
        "max_steps": study.eval_max_steps,
    }


def _evaluate(study: Study, out: Path, name: str, seed: int, demos: int, policy: Path) -> dict[str, Any]:
    from latbot import pipeline

    return pipeline.evaluate(**_evaluation_args(study, out, name, seed, demos, policy))


def _probe_inputs(study: Study, lam: Path, heldout: Path, pretrain: Path) -> dict[str, Any]:
    """What the probes of one LAM depend on: its weights, the held-out and pretraining stores, the sample
    counts."""
    from latbot import runs
    from latbot.artifacts import read_manifest

    return {
        "lam": runs.open_run(lam, "lam").manifest.content_hash,
        "heldout": read_manifest(heldout, "episode_store").content_hash,
        "pretrain": read_manifest(pretrain, "episode_store").content_hash,
        "probe_samples": study.probe_samples,
        "reconstruction_samples": study.reconstruction_samples,
        # 2: with the action stream's R² and its counterfactuals; 3: with the pixel reference; 4: both per unified
        # slice, and the instruction-dropped counterfactual (older are redone)
        "version": 4,
    }


def _probed(study: Study, lam: Path, heldout: Path, pretrain: Path) -> dict[str, Any] | None:
    """The probes saved next to `lam` (<variant>/s<seed>/probes.json) when made from the same inputs."""
    import json

    from latbot.errors import LatBotError

    try:
        saved = json.loads((lam.parent / PROBES_FILE).read_text())
        if saved["inputs"] != _probe_inputs(study, lam, heldout, pretrain):
            return None
        result = saved["result"]
        return result if Path(result["reconstruction_image"]).is_file() else None
    except (LatBotError, OSError, ValueError, KeyError, TypeError):
        return None


def _probe(study: Study, lam: Path, heldout: Path, pretrain: Path) -> dict[str, Any]:
    """Held-out linear probes of the true actions from Z_mot and Z_sce (and random features), the action
    stream's R², and what a ridge on the pixels reads (fit on the pretraining clips); saved next to the LAM
    and reused while the LAM, the stores and the sample counts are the same."""
    import json

    from latbot.analysis.diagnostics import diagnose_checkpoint, pixel_motion_reference
    from latbot.atomic import replace_file
    from latbot.quickstart.report import lam_reconstructions

    saved = _probed(study, lam, heldout, pretrain)
    if saved is not None:
        return saved
    inputs = _probe_inputs(study, lam, heldout, pretrain)
    d = diagnose_checkpoint(lam, heldout, samples=study.probe_samples)
    pixels = pixel_motion_reference(lam, pretrain, heldout, test_clips=study.probe_samples)
    recon = lam_reconstructions(lam, heldout, lam.parent / "lam_reconstructions.png", study.reconstruction_samples)
    result = {
        "probe_r2": d["probe_r2"],
        "action_stream_r2": d["action_stream_r2"],  # None for a LAM without an action stream
        "pixel_reference": {k: pixels[k]["r2"] for k in ("motion", "scene_and_motion")},
        "pixel_reference_per_slice": {k: pixels[k].get("per_group", {}) for k in ("motion", "scene_and_motion")},
        "effective_rank": d["effective_rank"],
        "psnr_db": d["psnr_db"],
        "reconstruction": recon["quality"],
        "reconstruction_image": str(lam.parent / recon["image"]),
    }
    saved = {"inputs": inputs, "result": result}
    replace_file(lam.parent / PROBES_FILE, (json.dumps(saved, indent=1) + "\n").encode())
    return json.loads(json.dumps(result))  # what a rerun reads back (tuples as lists)


# -- whether a step's output for one key already verifies (its job would skip) ---------------------------------
def _trained(root: Path, name: str, recipe_path: Path, sets: list[str], label: str) -> bool:
    """`pipeline.train`'s test for skipping: the run is complete, made by the same resolved recipe, and its
    parents still have the hashes it was made from."""
    from latbot import pipeline, runs
    from latbot.recipes import load_recipe, to_dict

    recipe = load_recipe(recipe_path, [*sets, f"log.out_dir={root}", f"log.run_name={name}"])
    run = runs.open_run(root / name, recipe.stage, complete=False)
    return run.complete and run.manifest.recipe == to_dict(recipe) and pipeline.parents_current(run.manifest)


def _store_done(study: Study, out: Path, which: str, seed: int) -> bool:
    """`pipeline.demonstrations`'s test for skipping (`pipeline.holds_demonstrations`)."""
    from latbot import pipeline

    path, _, tasks, episodes, _, store_seed, _, noise = _store_args(study, out, which, seed)
    return pipeline.holds_demonstrations(path, tasks, episodes, store_seed, noise)


def _pretrain_done(study: Study, out: Path, name: str, seed: int, pretrain: Path) -> bool:
    return _trained(*_lam_args(study, out, name, seed, pretrain)) and _trained(
        *_distill_args(study, out, name, seed, pretrain)
    )


def _finetune_done(*args) -> bool:
    return _trained(*_finetune_args(*args))


def _evaluate_done(study: Study, out: Path, name: str, seed: int, demos: int, policy: Path) -> bool:
    """`pipeline.evaluate`'s test for skipping: an evaluation of these settings whose policy is unchanged."""
    import json

    from latbot import pipeline
    from latbot.artifacts import read_manifest
    from latbot.sim.evaluate import EVAL_SEED_BASE

    a = _evaluation_args(study, out, name, seed, demos, policy)
    settings = {
        "tasks": list(a["tasks"]), "episodes": a["episodes"], "image_size": a["image_size"],
        "execute_steps": a["execute_steps"],
    }  # fmt: skip
    if a["seed"] != EVAL_SEED_BASE:
        settings["seed"] = a["seed"]
    if a["max_steps"] is not None:
        settings["max_steps"] = a["max_steps"]
    m = read_manifest(a["path"], kind="eval")
    if m.extra.get("settings") != settings or not pipeline.parents_current(m):
        return False
    return isinstance(json.loads((a["path"] / "report.json").read_text()), dict)


def _probe_done(study: Study, lam: Path, heldout: Path, pretrain: Path) -> bool:
    return _probed(study, lam, heldout, pretrain) is not None


def _ground_inputs(study: Study, baseline_ft: Path, ft: Path, heldout: Path) -> dict[str, Any]:
    """What one grounding A/B depends on: both finetuned runs' weights, the held-out store, the sample count."""
    from latbot import runs
    from latbot.artifacts import read_manifest

    return {
        "A": runs.open_run(baseline_ft).manifest.content_hash,
        "B": runs.open_run(ft).manifest.content_hash,
        "heldout": read_manifest(heldout, "episode_store").content_hash,
        "samples": study.grounding_samples,
    }


def _grounded(study: Study, baseline_ft: Path, ft: Path, heldout: Path) -> dict[str, Any] | None:
    import json

    from latbot.errors import LatBotError

    try:
        saved = json.loads((ft.parent / GROUNDING_FILE).read_text())
        return saved["result"] if saved["inputs"] == _ground_inputs(study, baseline_ft, ft, heldout) else None
    except (LatBotError, OSError, ValueError, KeyError, TypeError):
        return None


def _ground(study: Study, baseline_ft: Path, ft: Path, heldout: Path) -> dict[str, Any]:
    """The grounding A/B of one cell: the baseline's finetuned VLM (A) and this cell's (B) on the same held-out
    first frames; per frame, the mean attention entropy and the mean spatial entropy of the 10% lowest-entropy
    heads (latbot.analysis.grounding). Saved next to the cell's run and reused while its inputs are the same;
    the report averages each seed's frames and compares seeds."""
    import json

    from latbot.analysis.grounding import analyze_checkpoints, first_frames, k_lowest
    from latbot.atomic import replace_file
    from latbot.errors import LatBotError

    saved = _grounded(study, baseline_ft, ft, heldout)
    if saved is not None:
        return saved
    inputs = _ground_inputs(study, baseline_ft, ft, heldout)
    _, frames, texts = first_frames(heldout, study.grounding_samples)
    try:
        both = analyze_checkpoints([baseline_ft, ft], frames, texts)
    except LatBotError as e:  # a VLM without image_attention (a plugin's): the report says so, the study goes on
        result: dict[str, Any] = {"error": str(e)}
    else:
        result = {
            label: {
                "attention_entropy": [float(v) for v in k_lowest(r["attention_entropy"])],
                "spatial_entropy": [float(v) for v in k_lowest(r["entropy"])],
            }
            for label, r in both.items()
        }
    saved = {"inputs": inputs, "result": result}
    replace_file(ft.parent / GROUNDING_FILE, (json.dumps(saved, indent=1) + "\n").encode())
    return result


def _ground_done(study: Study, baseline_ft: Path, ft: Path, heldout: Path) -> bool:
    return _grounded(study, baseline_ft, ft, heldout) is not None


DONE: dict[str, Callable[..., bool]] = {
    "stores": _store_done,
    "pretrain": _pretrain_done,
    "finetune": _finetune_done,
    "evaluate": _evaluate_done,
    "probes": _probe_done,
    "grounding": _ground_done,
}


def _verifies(step: str, args: tuple) -> bool:
    """Whether the job of `step` with `args` would find its output made already (any doubt: not done)."""
    from latbot.errors import LatBotError

    try:
        return bool(DONE[step](*args))
    except (LatBotError, OSError, ValueError, KeyError):
        return False


# -- the plan and its execution -----------------------------------------------------------------------------
def plan(study: Study, out: Path) -> dict[str, dict[str, tuple[Callable, tuple]]]:
    """Every step's jobs, in the order they run: {step: {key: (fn, args)}}. Each job's arguments are paths
    fixed by the layout under `out`, so the plan (and `status`) needs nothing from the steps before."""
    pretrain = pretrain_store(study, out)
    heldout = {s: out / "stores" / f"heldout_s{s}" for s in study.seeds}
    distilled = [(name, s) for name, v in study.variants.items() if v.lam is not None for s in study.seeds]

    def student(name: str, seed: int) -> Path | None:
        return out / name / f"s{seed}" / "distill" if study.variants[name].lam is not None else None

    def ft(name: str, seed: int, demos: int) -> Path:
        return out / name / f"s{seed}" / f"d{demos}" / "ft"

    return {
        "stores": {"pretrain": (_store, (study, out, "pretrain", 0))}
        | {f"heldout_s{s}": (_store, (study, out, "heldout", s)) for s in study.seeds},
        "pretrain": {f"{name}/s{s}": (_pretrain, (study, out, name, s, pretrain)) for name, s in distilled},
        "finetune": {
            f"{name}/s{s}/d{d}": (_finetune, (study, out, name, s, d, heldout[s], student(name, s)))
            for name, s, d in cells(study)
        },
        "evaluate": {
            f"{name}/s{s}/d{d}": (_evaluate, (study, out, name, s, d, out / name / f"s{s}" / f"d{d}" / "ft"))
            for name, s, d in cells(study)
        },
        "probes": {
            f"{name}/s{s}": (_probe, (study, out / name / f"s{s}" / "lam", heldout[s], pretrain))
            for name, s in distilled
        },
        "grounding": {
            f"{name}/s{s}/d{d}": (_ground, (study, ft(study.baseline, s, d), ft(name, s, d), heldout[s]))
            for name, s, d in cells(study)
            if name != study.baseline
        },
    }


def _threaded(threads: int, fn: Callable, args: tuple) -> Any:
    """One launcher job: `fn(*args)` with `threads` compute threads (the job's cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(before)


def resolve_launcher(launcher: Launcher | None, overrides: dict[str, Any] | None = None) -> Launcher | None:
    """The study file's `launcher:` block with the command line's options over it (None values: not given).
    No block and no `kind` given: no launcher (the steps run side by side in local processes)."""
    from pydantic import ValidationError

    from latbot.cluster.launcher import LaunchError

    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return launcher
    if launcher is None and "kind" not in given:
        option = "--" + next(iter(given)).replace("_", "-")
        raise LaunchError(f"{option} needs --launcher local|slurm, or a `launcher:` block in the study file")
    try:
        return Launcher.model_validate((launcher.model_dump() if launcher else {}) | given)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(map(str, first["loc"]))
        raise LaunchError(
            f"launcher.{field} (--{field.replace('_', '-')}): {first['msg']}".replace("--kind", "--launcher")
        ) from None


def _run_step(
    step: str, jobs: dict[str, tuple[Callable, tuple]], out: Path, workers: int, launcher: Launcher | None
) -> dict[str, Any]:
    from latbot import pipeline

    if launcher is None:
        return {k: result for k, (result, _) in pipeline.side_by_side(jobs, workers).items()}
    from latbot.cluster.launcher import run_jobs

    def done(key: str) -> bool:
        return _verifies(step, jobs[key][1])

    threaded = {key: (_threaded, (launcher.cpus_per_job, fn, args)) for key, (fn, args) in jobs.items()}
    return run_jobs(threaded, launcher, out / JOBS_DIR / step, done=done, label=step, say=pipeline.say)


def run(path: str | Path, out: str | Path, workers: int | None = None, launcher: dict[str, Any] | None = None) -> Path:
    """Run (or finish) the study of `path` into `out`; returns the report directory. `launcher`: options
    over the file's `launcher:` block (`resolve_launcher`)."""
    from latbot import pipeline
    from latbot.study.report import write_report

    study = load_study(path)
    out = Path(out)
    chosen = resolve_launcher(study.launcher, launcher)
    from latbot.artifacts import claim_workspace
    from latbot.ownership import writer_lock

    claim_workspace(out, "study", ("stores", study.report_dir, JOBS_DIR, *study.variants))
    with writer_lock(out, "study"):
        n = workers or study.workers
        where = f"{n} worker(s)" if chosen is None else f"{chosen.kind} launcher, {chosen.parallelism} job(s) at once"
        pipeline.say(
            f"study {study.name}: {len(study.variants)} variants × {len(study.seeds)} seeds × {len(study.demos)} "
            f"demo counts = {len(cells(study))} cells, {where}"
        )
        results = {}
        for step, jobs in plan(study, out).items():
            results[step] = _run_step(step, jobs, out, n, chosen)
        report = write_report(
            study, out, results["evaluate"], results["probes"], source=Path(path), grounding=results["grounding"]
        )
        pipeline.say(f"study {study.name}: {report / 'report.md'}")
        return report


def status(path: str | Path, out: str | Path) -> dict[str, dict[str, dict[str, str]]]:
    """{step: {key: {"state": pending|running|done|failed, "job": id, "log": path}}}: done when the key's
    output verifies, otherwise what the launcher's record of submissions (out/.jobs/<step>/jobs.json) says."""
    from latbot.cluster import launcher

    study = load_study(path)
    out = Path(out)
    states = {}
    for step, jobs in plan(study, out).items():

        def done(key: str, step: str = step, jobs: dict = jobs) -> bool:
            return _verifies(step, jobs[key][1])

        states[step] = launcher.status(out / JOBS_DIR / step, list(jobs), done)
    return states


def check_intervals(path: str | Path, out: str | Path | None = None, reps: int = 1000) -> dict[str, Any]:
    """`latbot study --check-intervals`: how often the report's intervals of a paired difference cover the truth,
    in simulated studies with this study's design (tasks, evaluation episodes, seeds; and 5 and 10 seeds).
    Success rates and the seed-to-seed spread come from the study's report under `out` when it exists (the
    baseline's per-task rates; the spread of its per-seed rates on the logit scale), else 0.5 and 0.5. Both
    arms get independent seed effects and no true difference, so "above 0" should happen 2.5% of the time."""
    import json

    import numpy as np

    from latbot.analysis import stats

    study = load_study(path)
    rates, spread, source = [0.5] * len(study.heldout_tasks), 0.5, "defaults (no report under --out)"
    report = Path(out) / study.report_dir / "report.json" if out is not None else None
    if report is not None and report.is_file():
        result = json.loads(report.read_text())
        base = [r for r in result["pooled"].values() if r["variant"] == study.baseline]
        if base:
            tasks = np.array([[r["tasks"][t] for t in study.heldout_tasks] for r in base]).mean(axis=0)
            rates = list(np.clip(tasks, 0.05, 0.95))
            per_seed = np.clip(np.concatenate([r["per_seed"] for r in base]), 0.05, 0.95)
            logits = np.log(per_seed / (1 - per_seed))
            spread = float(max(0.1, logits.std(ddof=1))) if len(logits) > 1 else spread
            source = f"{report} (the baseline's rates; seed spread {spread:.2f} on the logit scale)"
    rows = {}
    for seeds in sorted({len(study.seeds), 5, 10}):
        design = stats.Design(tuple(rates), 0.0, spread, study.eval_episodes, seeds)
        rows[seeds] = stats.coverage(design, reps=reps, boot_draws=500)
    return {"design_from": source, "reps": reps, "nominal": stats.LEVEL, "by_seeds": rows}
