"""A pre-registered action-stream study: does a LAM recipe's action stream predict the actions of held-out tasks
better than a fixed reference (the constant predictor, or the same stream with its frames frozen)?

The study file (e.g. recipes/studies/prereg3_action_stream.yaml) names a LAM recipe with `--set` overrides, the
seeds, and the comparisons: one primary, fixed before anything runs (the file's commit is the registration),
and secondary ones shown with a Holm correction. The runner

1. trains one LAM per seed on the given pretraining store (`latbot train`, the recipe with the file's
   overrides; a finished run of the same settings is kept, an unfinished one resumed);
2. scores each LAM's action stream on its held-out store (seeds and stores pair by order) with
   `latbot.analysis.diagnostics.diagnose_checkpoint` (R² of the mean of the draws, the constant, the
   counterfactual inputs, per unified slice);
3. reports each comparison over seeds: the per-seed differences, their mean with a t-interval, the exact
   sign-flip p, and the claim `latbot.analysis.stats.claim` allows (none from fewer than 5 seeds).

    latbot study STUDY.yaml --out DIR --pretrain STORE --heldout STORE [--heldout STORE ...]

DIR gets lams/seed<k>/ (the runs), scores/seed<k>.json, report.md and report.json (with the study file's sha256
and the git commit the code ran at).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from latbot.config import Section
from latbot.errors import ArtifactError, RecipeError

PREDICTIONS = ("mean_of_samples", "frames_frozen", "instruction_swapped", "instruction_dropped", "copy_first")
REFERENCES = ("constant", *PREDICTIONS)


class Comparison(Section):
    """One comparison: per seed, R²(`prediction`) − R²(`against`) within `slice` (a unified slice such as
    right_pos, or `all` for every valid dimension pooled)."""

    slice: str = Field(description="A unified action slice (right_pos, right_gripper, …) or `all`.")
    prediction: Literal[PREDICTIONS] = "mean_of_samples"  # type: ignore[valid-type]
    against: Literal[REFERENCES] = "constant"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _differs(self) -> Comparison:
        if self.prediction == self.against:
            raise ValueError(f"`prediction` and `against` are both {self.prediction!r}: the difference is 0")
        return self

    @property
    def label(self) -> str:
        return f"{self.slice}: {self.prediction} − {self.against}"


class ActionStreamStudy(Section):
    name: str
    lam: Path = Field(description="The LAM recipe (relative to the study file).")
    set: dict[str, Any] = Field(default_factory=dict, description="`--set` overrides of the LAM recipe: a.b → value.")
    frame_stride: int = Field(1, ge=1, description="Steps between the clip frames of the pretraining store.")
    seeds: list[int] = Field(min_length=2, description="One LAM per seed; seed i is scored on the i-th --heldout.")
    samples: int = Field(128, ge=8, description="Held-out clips scored per LAM.")
    primary: Comparison
    secondary: list[Comparison] = Field(default_factory=list)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds} repeat a seed: each seed is one replicate")
        return seeds

    @field_validator("set")
    @classmethod
    def _not_runner_owned(cls, sets: dict[str, Any]) -> dict[str, Any]:
        owned = {"train.seed", "data.sources", "log.out_dir", "log.run_name"} & set(sets)
        if owned:
            raise ValueError(f"set: {sorted(owned)} are the runner's (seeds, --pretrain, --out); remove them")
        return sets


def load_action_stream_study(path: str | Path) -> ActionStreamStudy:
    """Read an action-stream study file; `lam` becomes relative to it; errors name file:line and the field."""
    from latbot.yamlio import load_yaml_model

    path = Path(path)
    study = load_yaml_model(path, ActionStreamStudy, what="action-stream study file")
    if not study.lam.is_absolute():
        study.lam = (path.parent / study.lam).resolve()
    if not study.lam.is_file():
        raise RecipeError(f"{path}: lam: {study.lam} is not a file; give the LAM recipe's path relative to the file")
    return study


def is_action_stream_study(path: str | Path) -> bool:
    """Whether a YAML file under recipes/studies is an action-stream study (it names `lam` at the top) rather
    than a `latbot study` file (which names `variants`)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the study loader reports it, with file:line
    return isinstance(data, dict) and "lam" in data and "variants" not in data


# -- 1. training ------------------------------------------------------------------------------------------------
def run_dir(out: Path, seed: int) -> Path:
    return Path(out) / "lams" / f"seed{seed}"


def train_command(study: ActionStreamStudy, out: Path, pretrain: Path, seed: int) -> list[str]:
    """The `latbot train` command of one seed's LAM."""
    sets = {
        "data.sources": f"[{{store: {Path(pretrain).resolve()}, frame_stride: {study.frame_stride}}}]",
        "log.out_dir": str((Path(out) / "lams").resolve()),
        "log.run_name": f"seed{seed}",
        "train.seed": seed,
        **study.set,
    }
    cmd = [sys.executable, "-m", "latbot", "train", str(study.lam)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def _dotted(recipe: dict, key: str) -> Any:
    node: Any = recipe
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_run_matches(study: ActionStreamStudy, path: Path, seed: int, pretrain: Path):
    """The run at `path` (a `latbot.runs.Run`, finished or not), refused if its recipe is not this study's for
    this seed (another study's output, or the file edited after the run): its scores would be reported under the
    wrong settings."""
    from latbot.runs import open_run

    run = open_run(path, "lam", complete=False)
    wrong = _mismatches(study, run.manifest.recipe or {}, seed, pretrain)
    if wrong:
        raise ArtifactError(f"{path}: not this study's run ({wrong}); give another --out")
    return run


def _mismatches(study: ActionStreamStudy, recipe: dict, seed: int, pretrain: Path | None) -> str:
    """What in a run's recipe differs from what the study sets for this seed ("" when nothing does); the
    pretraining store is compared only when `pretrain` is given."""
    expected = {"train.seed": seed, **study.set}
    wrong = {k: (_dotted(recipe, k), v) for k, v in expected.items() if _dotted(recipe, k) != v}
    sources = _dotted(recipe, "data.sources") or [{}]
    if pretrain is not None and Path(str(sources[0].get("store", ""))).resolve() != Path(pretrain).resolve():
        wrong["data.sources[0].store"] = (sources[0].get("store"), str(pretrain))
    return "; ".join(f"{k} is {have!r}, the study sets {want!r}" for k, (have, want) in wrong.items())


def status(source: str | Path, out: str | Path) -> list[dict[str, Any]]:
    """`latbot study FILE --out DIR --status` for an action-stream file: per seed, its LAM run's state, read
    without writing or taking a lock. state: pending (no run yet), training (another process holds the run's
    lock; pid), stopped (unfinished and not running: the next `latbot study` resumes it), failed, trained, or
    foreign (a run whose recipe is not this study's for the seed); step: the last logged step of `steps`;
    scored: whether scores/seed<k>.json exists."""
    from latbot.ownership import held_by_other
    from latbot.runs import open_run

    study = load_action_stream_study(source)
    rows = []
    for seed in study.seeds:
        path = run_dir(Path(out), seed)
        scored = (Path(out) / "scores" / f"seed{seed}.json").is_file()
        row: dict[str, Any] = {"seed": seed, "run": str(path), "state": "pending", "step": None, "steps": None,
                               "pid": None, "detail": "", "scored": scored}  # fmt: skip
        if (path / "latbot.json").is_file():
            run = open_run(path, "lam", complete=False)
            recipe = run.manifest.recipe or {}
            logged = run.metrics()
            row["step"] = logged[-1].get("step") if logged else 0
            row["steps"] = _dotted(recipe, "train.steps")
            row["pid"] = held_by_other(path)
            row["detail"] = _mismatches(study, recipe, seed, None)
            if row["detail"]:
                row["state"] = "foreign"
            elif run.complete:
                row["state"], row["step"] = "trained", row["steps"]
            elif run.manifest.status == "failed":
                row["state"], row["detail"] = "failed", str(run.manifest.extra.get("error", ""))
            else:
                row["state"] = "training" if row["pid"] is not None else "stopped"
        rows.append(row)
    return rows


def train(study: ActionStreamStudy, out: Path, pretrain: Path) -> None:
    """Train (or resume) each seed's LAM; finished runs with the study's settings are kept as they are."""
    for seed in study.seeds:
        path = run_dir(out, seed)
        if (path / "latbot.json").is_file():
            if check_run_matches(study, path, seed, pretrain).complete:
                continue
            cmd = [sys.executable, "-m", "latbot", "train", "--resume", str(path)]
        else:
            cmd = train_command(study, out, pretrain, seed)
        print(f"seed {seed}: {' '.join(cmd[1:])}", flush=True)
        done = subprocess.run(cmd)
        if done.returncode != 0:
            raise ArtifactError(f"{path}: training seed {seed} failed (exit {done.returncode}); see its output above")


def check_pairing(study: ActionStreamStudy, heldout: list[Path]) -> None:
    if len(heldout) != len(study.seeds):
        raise RecipeError(
            f"--heldout: {len(heldout)} store(s) for {len(study.seeds)} seeds; give one held-out store per seed, "
            f"in the order of the study file's `seeds`"
        )


# -- 2. scoring -------------------------------------------------------------------------------------------------
def score(study: ActionStreamStudy, out: Path, heldout: list[Path]) -> dict[int, dict]:
    """{seed: the action stream's R²s on its held-out store}, cached in scores/seed<k>.json (a cached score
    of another store or sample count is recomputed)."""
    from latbot.analysis.diagnostics import diagnose_checkpoint
    from latbot.atomic import replace_file

    check_pairing(study, heldout)
    scores = {}
    for seed, store in zip(study.seeds, heldout, strict=True):
        cache = Path(out) / "scores" / f"seed{seed}.json"
        key = {"store": str(Path(store).resolve()), "samples": study.samples, "run": str(run_dir(out, seed).resolve())}
        if cache.is_file():
            cached = json.loads(cache.read_text())
            if cached.get("key") == key:
                scores[seed] = cached["action_stream_r2"]
                continue
        r2 = diagnose_checkpoint(run_dir(out, seed), store, samples=study.samples)["action_stream_r2"]
        if r2 is None:
            raise ArtifactError(f"{run_dir(out, seed)}: the LAM has no action stream (model.unified_decoder: false)")
        cache.parent.mkdir(parents=True, exist_ok=True)
        replace_file(cache, json.dumps({"key": key, "action_stream_r2": r2}, indent=1))
        scores[seed] = r2
    return scores


# -- 3. the comparisons over seeds ------------------------------------------------------------------------------
def values(r2: dict, comparison: Comparison) -> tuple[float, float]:
    """(R² of the prediction, R² of the reference) of one seed's scores for a comparison."""
    if comparison.slice == "all":
        row = r2
    else:
        per_slice = r2.get("per_slice", {})
        if comparison.slice not in per_slice:
            raise RecipeError(
                f"slice {comparison.slice!r}: not among the scored slices ({', '.join(per_slice) or 'none'}); "
                f"name one of them or `all`"
            )
        row = per_slice[comparison.slice]
    return float(row[comparison.prediction]), float(row[comparison.against])


def summarise(study: ActionStreamStudy, scores: dict[int, dict]) -> dict[str, Any]:
    """Each comparison's per-seed values and differences, t-interval, t-test and sign-flip p, Holm-adjusted p
    (secondary only) and claim."""
    from latbot.analysis.stats import LEVEL, claim, holm, sign_flip_p, t_interval, t_test_p

    rows = []
    for role, comparison in [("primary", study.primary)] + [("secondary", c) for c in study.secondary]:
        per_seed = []
        for seed in study.seeds:
            value, reference = values(scores[seed], comparison)
            per_seed.append({"seed": seed, "value": value, "reference": reference, "difference": value - reference})
        diffs = [r["difference"] for r in per_seed]
        mean, low, high = t_interval(diffs, LEVEL)
        rows.append({
            "role": role, "comparison": comparison.model_dump(), "label": comparison.label, "per_seed": per_seed,
            "mean": mean, "low": low, "high": high, "p_t": t_test_p(diffs), "p_sign_flip": sign_flip_p(diffs),
            "above_in": sum(d > 0 for d in diffs),
        })  # fmt: skip
    adjusted = holm({str(i): r["p_t"] for i, r in enumerate(rows) if r["role"] == "secondary"})
    for i, r in enumerate(rows):
        r["p_holm"] = adjusted.get(str(i))
        r["claim"] = claim(r["low"], r["high"], len(study.seeds), r["p_holm"])
    return {"level": LEVEL, "seeds": study.seeds, "comparisons": rows}


def _fmt(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"


def render(study: ActionStreamStudy, summary: dict, provenance: dict, heldout: list[Path]) -> str:
    level, rows = round(100 * summary["level"]), summary["comparisons"]
    dirty = " (with uncommitted changes)" if provenance.get("git_dirty") else ""
    overrides = ", ".join(f"`{k}={v}`" for k, v in study.set.items()) or "no overrides"
    lines = [
        f"# {study.name}",
        "",
        f"Study file `{provenance.get('study_file')}`, sha256 `{provenance.get('study_sha256')}`; code at commit "
        f"`{provenance.get('git_commit')}`{dirty}. LAM recipe `{study.lam.name}` with {overrides}; "
        f"{len(study.seeds)} seeds, {study.samples} held-out clips each. R² in the LAM's normalised units; the "
        "constant predicts the pretraining mean.",
        "",
        "## Comparisons over seeds",
        "",
        f"| role | comparison | mean difference | {level}% t-interval | t-test p | sign-flip p | Holm p "
        "| seeds above 0 | claim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        holm_p = "—" if r["p_holm"] is None else f"{r['p_holm']:.3f}"
        interval = f"[{_fmt(r['low'])}, {_fmt(r['high'])}]"
        above = f"{r['above_in']}/{len(r['per_seed'])}"
        lines.append(
            f"| {r['role']} | {r['label']} | {_fmt(r['mean'])} | {interval} | {r['p_t']:.3f} | "
            f"{r['p_sign_flip']:.3f} | {holm_p} | {above} | {r['claim']} |"
        )
    lines += ["", "## Per seed (value vs reference)", ""]
    lines += ["| seed | held-out store | " + " | ".join(r["label"] for r in rows) + " |"]
    lines += ["|---|---|" + "---|" * len(rows)]
    for i, seed in enumerate(study.seeds):
        cells = [f"{_fmt(r['per_seed'][i]['value'])} vs {_fmt(r['per_seed'][i]['reference'])}" for r in rows]
        lines.append(f"| {seed} | `{Path(heldout[i]).name}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Intervals are over seeds (t with {len(study.seeds) - 1} degrees of freedom on the per-seed differences); "
        "the sign-flip p is exact over all sign flips of those differences. The primary comparison was fixed in "
        "the study file before it ran; secondary ones make a claim only if their Holm-adjusted p is below "
        f"{1 - summary['level']:.2f} as well.",
    ]
    return "\n".join(lines) + "\n"


def write_report(
    study: ActionStreamStudy, out: Path, scores: dict[int, dict], source: Path | None, heldout: list[Path]
) -> Path:
    """report.md and report.json under `out`; returns report.md."""
    from latbot.atomic import replace_file
    from latbot.study.report import provenance

    summary = summarise(study, scores)
    prov = provenance(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    replace_file(out / "report.json", json.dumps({"provenance": prov, **summary}, indent=1))
    path = out / "report.md"
    replace_file(path, render(study, summary, prov, heldout))
    return path


def run_study(source: Path, out: Path, pretrain: Path, heldout: list[Path]) -> Path:
    """All three steps; returns report.md."""
    study = load_action_stream_study(source)
    for store in (pretrain, *heldout):
        if not Path(store).is_dir():
            raise RecipeError(f"{store}: no such episode store; build it first (see the study file's header)")
    check_pairing(study, heldout)
    train(study, out, pretrain)
    return write_report(study, out, score(study, out, heldout), source, heldout)
