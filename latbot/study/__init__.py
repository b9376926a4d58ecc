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

    stores/pretrain, stores/heldout_s<seed>
    <variant>/s<seed>/{lam, distill, cache}        (variants with a LAM)
    <variant>/s<seed>/d<demos>/{ft, eval}
    report/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from latbot.config import Section

STAGE_KEYS = ("lam", "distill", "finetune")


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


class Study(Section):
    name: str
    simulator: str = "metaworld"
    image_size: int = Field(64, ge=8, le=1024)
    execute_steps: int = Field(4, ge=1, description="Actions of each predicted chunk executed before re-planning.")
    pretrain_tasks: list[str] = Field(min_length=1)
    pretrain_episodes: int = Field(ge=1, le=10_000)
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
    variants: dict[str, Variant] = Field(min_length=1)
    probe_samples: int = Field(128, ge=8, description="Clips for the held-out linear probes of Z_mot / Z_sce.")
    reconstruction_samples: int = Field(
        8, ge=1, le=64, description="Held-out clips whose generated future frame the report shows next to the truth."
    )
    workers: int = Field(2, ge=1, le=64, description="Independent steps run side by side (one per core).")

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


# -- the steps of one study (module-level: they run in worker processes) ---------------------------------------
def _store(study: Study, out: Path, which: str, seed: int) -> Path:
    from latbot import pipeline

    if which == "pretrain":
        return pipeline.demonstrations(
            out / "stores" / "pretrain", study.simulator, study.pretrain_tasks, study.pretrain_episodes,
            study.image_size, 0, "stores/pretrain",
        )  # fmt: skip
    return pipeline.demonstrations(
        out / "stores" / f"heldout_s{seed}", study.simulator, study.heldout_tasks,
        study.heldout_episodes or max(study.demos),
        study.image_size, 500_000 + 1000 * seed, f"stores/heldout_s{seed}",
    )  # fmt: skip


def _pretrain(study: Study, out: Path, name: str, seed: int, pretrain: Path) -> Path:
    """LAM then distillation of one variant and seed; returns the distillation run."""
    from latbot import pipeline

    v = study.variants[name]
    root = out / name / f"s{seed}"
    source = f"data.sources=[{{store: {pretrain}}}]"
    lam = pipeline.train(
        root, "lam", v.lam, [source, f"train.seed={seed}", *v.sets.get("lam", [])], f"{name}/s{seed}/lam"
    )
    cache = root / "cache"
    pipeline.drop_stale_cache(cache, lam)
    sets = [source, f"model.teacher={lam}", f"model.teacher_cache={cache}", f"train.seed={seed}"]
    return pipeline.train(root, "distill", v.distill, [*sets, *v.sets.get("distill", [])], f"{name}/s{seed}/distill")


def _finetune(study: Study, out: Path, name: str, seed: int, demos: int, heldout: Path, distill: Path | None):
    from latbot import pipeline

    v = study.variants[name]
    sets = [
        f"data.sources=[{{store: {heldout}, demos_per_task: {demos}}}]",
        f"model.student_checkpoint={distill if distill else 'null'}",
        f"train.seed={seed}",
        *v.sets.get("finetune", []),
    ]
    return pipeline.train(out / name / f"s{seed}" / f"d{demos}", "ft", v.finetune, sets, f"{name}/s{seed}/d{demos}/ft")


def _evaluate(study: Study, out: Path, name: str, seed: int, demos: int, policy: Path) -> dict[str, Any]:
    from latbot import pipeline
    from latbot.sim.evaluate import EVAL_SEED_BASE

    return pipeline.evaluate(
        out / name / f"s{seed}" / f"d{demos}" / "eval", policy, study.simulator, study.heldout_tasks,
        study.eval_episodes, study.image_size, study.execute_steps, seed=EVAL_SEED_BASE + 100_000 * seed,
        label=f"{name}/s{seed}/d{demos}/eval", max_steps=study.eval_max_steps,
    )  # fmt: skip


def _probe(study: Study, lam: Path, heldout: Path) -> dict[str, Any]:
    """Held-out linear probes of the true actions from Z_mot and Z_sce (and random features)."""
    from latbot.analysis.diagnostics import diagnose_checkpoint
    from latbot.quickstart.report import lam_reconstructions

    d = diagnose_checkpoint(lam, heldout, samples=study.probe_samples)
    recon = lam_reconstructions(lam, heldout, lam.parent / "lam_reconstructions.png", study.reconstruction_samples)
    return {
        "probe_r2": d["probe_r2"],
        "effective_rank": d["effective_rank"],
        "psnr_db": d["psnr_db"],
        "reconstruction": recon["quality"],
        "reconstruction_image": str(lam.parent / recon["image"]),
    }


def run(path: str | Path, out: str | Path, workers: int | None = None) -> Path:
    """Run (or finish) the study of `path` into `out`; returns the report directory."""
    from latbot import pipeline
    from latbot.study.report import write_report

    study = load_study(path)
    out = Path(out)
    from latbot.artifacts import claim_workspace
    from latbot.ownership import writer_lock

    claim_workspace(out, "study", ("stores", study.report_dir, *study.variants))
    with writer_lock(out, "study"):
        n = workers or study.workers
        pipeline.say(
            f"study {study.name}: {len(study.variants)} variants × {len(study.seeds)} seeds × {len(study.demos)} "
            f"demo counts = {len(cells(study))} cells, {n} worker(s)"
        )

        def step(jobs: dict) -> dict[str, Any]:
            return {k: result for k, (result, _) in pipeline.side_by_side(jobs, n).items()}

        stores = step(
            {"pretrain": (_store, (study, out, "pretrain", 0))}
            | {f"heldout_s{s}": (_store, (study, out, "heldout", s)) for s in study.seeds}
        )
        distilled = [(name, s) for name, v in study.variants.items() if v.lam is not None for s in study.seeds]
        chains = step({f"{name}/s{s}": (_pretrain, (study, out, name, s, stores["pretrain"])) for name, s in distilled})
        finetuned = step(
            {
                f"{name}/s{s}/d{d}": (
                    _finetune,
                    (study, out, name, s, d, stores[f"heldout_s{s}"], chains.get(f"{name}/s{s}")),
                )
                for name, s, d in cells(study)
            }
        )
        evaluations = step(
            {key: (_evaluate, (study, out, *_parse(key), finetuned[key])) for key in finetuned}  # key = name/s/d
        )
        probes = step(
            {
                f"{name}/s{s}": (_probe, (study, out / name / f"s{s}" / "lam", stores[f"heldout_s{s}"]))
                for name, s in distilled
            }
        )
        report = write_report(study, out, evaluations, probes)
        pipeline.say(f"study {study.name}: {report / 'report.md'}")
        return report


def _parse(key: str) -> tuple[str, int, int]:
    name, s, d = key.rsplit("/", 2)
    return name, int(s[1:]), int(d[1:])
