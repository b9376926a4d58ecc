"""A study's numbers: success per cell with Wilson intervals, seed-level intervals for each variant and for
each paired difference against the baseline, the pre-registered primary comparison, held-out probe R²,
plots, report.md/json.

Intervals, stated in the report:
- a cell (variant, seed, demos): Wilson 95% over its episodes;
- a variant at a demo count: the mean over seeds of each seed's task-averaged success rate, with a 95%
  t-interval over seeds (the seed is the unit the study replicates);
- a paired difference (variant − baseline) at a demo count: the mean over seeds of the per-seed difference,
  a 95% t-interval over those differences and the exact sign-flip permutation p-value (two-sided; its
  smallest possible value is 2 / 2^seeds). The study file's `primary` comparison is reported as it is; every
  other difference is secondary, its p-value Holm-corrected over the secondary ones. "Above 0" / "below 0"
  is said only from at least 5 seeds (latbot/analysis/stats.py: MIN_SEEDS);
- secondary view, labelled: the hierarchical bootstrap (resample seeds with replacement, then each seed's
  episodes within each task; the two arms of a resampled seed together). With 3 seeds it covers the truth
  only ~86% of the time at a nominal 95% (`latbot study --check-intervals`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

BOOTSTRAP = 2000
MIN_SEEDS_TEXT = "5"  # latbot.analysis.stats.MIN_SEEDS, as the report says it


def _outcomes(evaluation: dict[str, Any]) -> dict[str, np.ndarray]:
    """task → (episodes,) 0/1 successes of one evaluation report."""
    out: dict[str, list[float]] = {}
    for e in evaluation["episodes"]:
        if e.get("error") is None:
            out.setdefault(e["task"], []).append(float(e["success"]))
    return {task: np.asarray(v) for task, v in out.items()}


def _rate(outcomes: dict[str, np.ndarray]) -> float:
    """Mean over tasks of each task's success rate (tasks weigh the same)."""
    return float(np.mean([v.mean() for v in outcomes.values()]))


def _bootstrap(per_seed: list[dict[str, np.ndarray]], rng: np.random.Generator, other=None) -> np.ndarray:
    """BOOTSTRAP draws of the seed-mean success (or, with `other`, of the paired difference per seed)."""
    n = len(per_seed)
    draws = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        seeds = rng.integers(0, n, n)
        values = []
        for s in seeds:
            value = np.mean([rng.choice(v, len(v)).mean() for v in per_seed[s].values()])
            if other is not None:
                value -= np.mean([rng.choice(v, len(v)).mean() for v in other[s].values()])
            values.append(value)
        draws[b] = np.mean(values)
    return draws


def grounding_by_seed(study, grounding: dict[str, dict]) -> dict[str, Any]:
    """The grounding A/Bs per variant and demo count, compared over seeds: each seed's value is the mean over
    its held-out frames of the 10% lowest heads' entropy (attention and spatial), and the difference B − A
    (the variant's finetuned VLM minus the baseline's) gets a t-interval over seeds and an exact sign-flip p."""
    from latbot.analysis import stats

    out: dict[str, Any] = {}
    for name in study.variants:
        for d in study.demos:
            keys = [f"{name}/s{s}/d{d}" for s in study.seeds]
            if name == study.baseline or not all(k in grounding for k in keys):
                continue
            errors = [grounding[k]["error"] for k in keys if "error" in grounding[k]]
            if errors:
                out[f"{name}/d{d}"] = {"error": errors[0]}
                continue
            row = {}
            for statistic in ("attention_entropy", "spatial_entropy"):
                a, b = [], []
                for k in keys:  # per seed: the frames both models could be scored on
                    x, y = np.asarray(grounding[k]["A"][statistic]), np.asarray(grounding[k]["B"][statistic])
                    both = np.isfinite(x) & np.isfinite(y)
                    a.append(float(x[both].mean()) if both.any() else float("nan"))
                    b.append(float(y[both].mean()) if both.any() else float("nan"))
                diffs = [y - x for x, y in zip(a, b, strict=True)]
                mean, lo, hi = stats.t_interval(diffs)
                row[statistic] = {
                    "baseline_per_seed": a,
                    "variant_per_seed": b,
                    "difference": {
                        "mean": mean,
                        "ci95": [lo, hi],
                        "per_seed": diffs,
                        "p_sign_flip": stats.sign_flip_p(diffs),
                    },
                    "degenerate": bool(np.ptp(a + b) == 0),
                }
            out[f"{name}/d{d}"] = row
    return out


def aggregate(study, evaluations: dict[str, dict], probes: dict[str, dict], seed: int = 0) -> dict[str, Any]:
    from latbot.analysis import stats
    from latbot.sim.base import wilson_interval

    rng = np.random.default_rng(seed)
    cells, pooled, paired = [], {}, {}
    outcomes = {key: _outcomes(ev) for key, ev in evaluations.items()}
    for name in study.variants:
        for d in study.demos:
            per_seed = [outcomes[f"{name}/s{s}/d{d}"] for s in study.seeds]
            for s, o in zip(study.seeds, per_seed, strict=True):
                wins, eps = int(sum(v.sum() for v in o.values())), int(sum(len(v) for v in o.values()))
                cells.append(
                    {
                        "variant": name,
                        "seed": s,
                        "demos": d,
                        "successes": wins,
                        "episodes": eps,
                        "success_rate": _rate(o),
                        "ci95": list(wilson_interval(wins, eps)),
                        "tasks": {t: float(v.mean()) for t, v in o.items()},
                    }
                )
            rates = [_rate(o) for o in per_seed]
            draws = _bootstrap(per_seed, rng)
            tasks = {t: float(np.mean([o[t].mean() for o in per_seed])) for t in study.heldout_tasks}
            mean, lo, hi = stats.t_interval(rates)
            pooled[f"{name}/d{d}"] = {
                "variant": name,
                "demos": d,
                "mean": mean,
                "per_seed": rates,
                "ci95": [lo, hi],
                "bootstrap_ci95": [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))],
                "tasks": tasks,
            }
    primary = getattr(study, "primary", None)
    primary_key = f"{primary.variant}/d{primary.demos}" if primary is not None else None
    for name in study.variants:
        if name == study.baseline:
            continue
        for d in study.demos:
            ours = [outcomes[f"{name}/s{s}/d{d}"] for s in study.seeds]
            base = [outcomes[f"{study.baseline}/s{s}/d{d}"] for s in study.seeds]
            diffs = [_rate(a) - _rate(b) for a, b in zip(ours, base, strict=True)]
            draws = _bootstrap(ours, rng, other=base)
            mean, lo, hi = stats.t_interval(diffs)
            verdict = stats.claim(lo, hi, len(diffs))
            paired[f"{name}/d{d}"] = {
                "variant": name,
                "against": study.baseline,
                "demos": d,
                "primary": f"{name}/d{d}" == primary_key,
                "mean": mean,
                "per_seed": diffs,
                "seeds": len(diffs),
                "ci95": [lo, hi],
                "p_sign_flip": stats.sign_flip_p(diffs),
                "p_t": stats.t_test_p(diffs),
                "claim": verdict,
                "above_zero": verdict == "above 0",
                "bootstrap_ci95": [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))],
            }
    secondary = [k for k, r in paired.items() if not r["primary"]]
    for key, p_holm in stats.holm({k: paired[k]["p_sign_flip"] for k in secondary}).items():
        paired[key]["p_holm"] = p_holm
    for key, p_holm in stats.holm({k: paired[k]["p_t"] for k in secondary}).items():
        r = paired[key]  # a secondary row's claim survives the correction or says it did not
        r["p_t_holm"] = p_holm
        r["claim"] = stats.claim(*r["ci95"], r["seeds"], p_adjusted=p_holm)
        r["above_zero"] = r["claim"] == "above 0"
    probe = {}
    for key, p in probes.items():
        name, s = key.split("/")
        probe.setdefault(name, {})[s] = p
    probe_summary = {
        name: {
            group: float(np.mean([p["probe_r2"][group] for p in by_seed.values()]))
            for group in ("z_mot", "z_sce", "random")
        }
        | {"z_mot_above_z_sce": sum(p["probe_r2"]["z_mot"] > p["probe_r2"]["z_sce"] for p in by_seed.values())}
        for name, by_seed in probe.items()
    }
    stream_keys = ("mean_of_samples", "constant", "copy_first", "frames_frozen", "instruction_swapped")
    action_stream = {
        name: {
            k: [float(by_seed[sd]["action_stream_r2"][k]) for sd in sorted(by_seed, key=lambda x: int(x[1:]))]
            for k in stream_keys
        }
        for name, by_seed in probe.items()
        if all(set(stream_keys) <= set(p.get("action_stream_r2") or {}) for p in by_seed.values())
    }  # per seed, in seed order: the held-out R² of the LAM's action stream and its references
    for name, stream in action_stream.items():  # what a ridge on the pixels reads (probes of version 3 on)
        by_seed = probe[name]
        if all("pixel_reference" in p for p in by_seed.values()):
            order = sorted(by_seed, key=lambda x: int(x[1:]))
            for k in ("motion", "scene_and_motion"):
                stream[f"pixel_{k}"] = [float(by_seed[sd]["pixel_reference"][k]) for sd in order]
    slices = {}  # per unified slice (right_pos, right_gripper, …), per seed: probes of version 4 on
    for name, by_seed in probe.items():
        order = sorted(by_seed, key=lambda x: int(x[1:]))
        found = [(by_seed[sd].get("action_stream_r2") or {}).get("per_slice") for sd in order]
        pixels = [by_seed[sd].get("pixel_reference_per_slice", {}).get("motion", {}) for sd in order]
        if not found or not all(found):
            continue
        for sl in sorted(set.intersection(*(set(f) for f in found))):
            keys = set.intersection(*(set(f[sl]) for f in found))
            row = {k: [float(f[sl][k]) for f in found] for k in sorted(keys)}
            if all(sl in px for px in pixels):
                row["pixel_motion"] = [float(px[sl]) for px in pixels]
            slices.setdefault(name, {})[sl] = row
    quality_keys = ("psnr_moving_db", "copy_psnr_moving_db", "ssim_moving", "copy_ssim_moving", "psnr_db")
    reconstruction = {
        name: {k: float(np.mean([p["reconstruction"][k] for p in by_seed.values()])) for k in quality_keys}
        for name, by_seed in probe.items()
        if all("reconstruction" in p for p in by_seed.values())
    }
    return {
        "study": study.name,
        "variants": list(study.variants),
        "baseline": study.baseline,
        "seeds": study.seeds,
        "demos": study.demos,
        "heldout_tasks": study.heldout_tasks,
        "eval_episodes_per_task": study.eval_episodes,
        "cells": cells,
        "pooled": pooled,
        "paired_differences": paired,
        "primary": primary_key,
        "probes": probe,
        "probe_means": probe_summary,
        "action_stream_r2": action_stream,
        "action_stream_r2_per_slice": slices,
        "reconstruction_means": reconstruction,
        "interval_method": __doc__.split("Intervals, stated in the report:")[1].strip(),
    }


def _plots(result: dict, rdir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for k, name in enumerate(result["variants"]):
        rows = [result["pooled"][f"{name}/d{d}"] for d in result["demos"]]
        x = np.asarray(result["demos"], float) * (1 + 0.03 * (k - (len(result["variants"]) - 1) / 2))
        mean = np.array([r["mean"] for r in rows])
        err = np.clip(np.array([[r["mean"] - r["ci95"][0], r["ci95"][1] - r["mean"]] for r in rows]).T, 0, None)
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(result["demos"], [str(d) for d in result["demos"]])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("finetuning demonstrations per held-out task")
    ax.set_ylabel("success (mean over seeds, 95%)")
    ax.set_title(f"{result['study']}: held-out tasks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(rdir / "success_vs_demos.png", dpi=110)
    plt.close(fig)
    names.append("success_vs_demos.png")
    if result["paired_differences"]:
        fig, ax = plt.subplots(figsize=(5.2, 3.2))
        for name in result["variants"]:
            rows = [result["paired_differences"].get(f"{name}/d{d}") for d in result["demos"]]
            if rows[0] is None:
                continue
            mean = np.array([r["mean"] for r in rows])
            err = np.clip(np.array([[r["mean"] - r["ci95"][0], r["ci95"][1] - r["mean"]] for r in rows]).T, 0, None)
            ax.errorbar(result["demos"], mean, yerr=err, marker="o", capsize=3, label=f"{name} − {result['baseline']}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(result["demos"], [str(d) for d in result["demos"]])
        ax.set_ylabel("paired difference in success")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(rdir / "paired_difference.png", dpi=110)
        plt.close(fig)
        names.append("paired_difference.png")
    return names


def training_summary(out: Path, keys: list[str], rdir: Path) -> tuple[dict[str, Any], str | None]:
    """Loss curves of every run behind the evaluated cells: the finetuning loss per variant and demo count
    (mean over seeds, one panel per demo count) and the final losses of each LAM and distillation.
    Returns (summary, the figure's file name or None when no run logged metrics)."""
    from latbot import runs
    from latbot.artifacts import ArtifactError

    def losses(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            rows = [r for r in runs.open_run(path).metrics() if "loss" in r]
        except ArtifactError:
            return None
        if not rows:
            return None
        return np.array([r["step"] for r in rows]), np.array([r["loss"] for r in rows], float)

    def final(curve: tuple[np.ndarray, np.ndarray]) -> float:
        return float(np.mean(curve[1][-5:]))  # the last five logged steps: one logged step is noisy

    finetune: dict[str, dict[str, Any]] = {}
    pretrain: dict[str, dict[str, list[float]]] = {}
    for key in keys:
        name, s, d = key.rsplit("/", 2)
        curve = losses(out / key / "ft")
        if curve is not None:
            cell = finetune.setdefault(f"{name}/{d}", {"variant": name, "demos": int(d[1:]), "curves": []})
            cell["curves"].append(curve)
        for stage in ("lam", "distill"):
            c = losses(out / name / s / stage)
            if c is not None and s not in pretrain.setdefault(name, {}).setdefault(f"{stage}_seeds", []):
                pretrain[name][f"{stage}_seeds"].append(s)
                pretrain[name].setdefault(f"{stage}_final_loss", []).append(final(c))
    summary = {
        "finetune_final_loss": {
            k: {"variant": v["variant"], "demos": v["demos"], "mean": float(np.mean([final(c) for c in v["curves"]]))}
            for k, v in finetune.items()
        },
        "pretrain_final_loss": {
            name: {k: float(np.mean(v)) for k, v in p.items() if k.endswith("final_loss")}
            for name, p in pretrain.items()
        },
    }
    if not finetune:
        return summary, None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    demos = sorted({v["demos"] for v in finetune.values()})
    fig, axes = plt.subplots(1, len(demos), figsize=(3.6 * len(demos), 3.0), squeeze=False, sharey=True)
    for ax, d in zip(axes[0], demos, strict=True):
        for v in finetune.values():
            if v["demos"] != d:
                continue
            n = min(len(c[0]) for c in v["curves"])
            mean = np.mean([c[1][:n] for c in v["curves"]], axis=0)
            ax.plot(v["curves"][0][0][:n], mean, lw=1.2, label=v["variant"])
        ax.set_yscale("log")
        ax.set_title(f"finetuning, {d} demos")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss (mean over seeds)")
    fig.tight_layout()
    fig.savefig(rdir / "finetune_loss.png", dpi=110)
    plt.close(fig)
    return summary, "finetune_loss.png"


def _fmt(r: dict, key: str = "ci95") -> str:
    lo, hi = r[key]
    if lo is None or hi is None or lo != lo or hi != hi:  # nan: one seed
        return f"{r['mean']:.2f} (no interval: 1 seed)"
    return f"{r['mean']:.2f} [{lo:.2f}, {hi:.2f}]"


def _p(value) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def _provenance_lines(p: dict) -> list[str]:
    if not p:
        return []
    commit = p.get("git_commit") or "unknown (not a git checkout)"
    dirty = " (with uncommitted changes)" if p.get("git_dirty") else ""
    where = f"Study file `{p.get('study_file')}`, sha256 `{p.get('study_sha256')}`"
    return ["", f"{where}; code at commit `{commit}`{dirty}."]


def _paired_lines(result: dict) -> list[str]:
    """The primary comparison first (as declared), then every secondary one with its Holm-corrected p."""
    pairs = result["paired_differences"]
    lines = [
        "",
        f"## Paired differences against `{result['baseline']}` (same seeds)",
        "",
        "Mean over seeds of the per-seed difference; 95% t-interval over seeds; exact sign-flip p (two-sided); "
        f"a claim only from ≥ {MIN_SEEDS_TEXT} seeds. Secondary rows: Holm-adjusted p of the sign-flip and of "
        "the t-test, and a claim only if the adjusted t-test p is below 0.05. The bootstrap column is a "
        "secondary view.",
        "",
        "| comparison | demos | difference [95% t-interval] | p (sign flip) | p Holm (sign flip / t) | claim "
        "| bootstrap 95% | per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(pairs.values(), key=lambda r: (not r.get("primary"), r["variant"], r["demos"]))
    for r in ordered:
        role = "**primary**: " if r.get("primary") else ""
        lines.append(
            f"| {role}{r['variant']} − {r['against']} | {r['demos']} | {_fmt(r)} | {_p(r.get('p_sign_flip'))} | "
            f"{'(primary)' if r.get('primary') else _p(r.get('p_holm')) + ' / ' + _p(r.get('p_t_holm'))} | "
            f"{r.get('claim', '')} | "
            f"{_fmt(r, 'bootstrap_ci95')} | {', '.join(f'{v:+.2f}' for v in r['per_seed'])} |"
        )
    if result.get("primary") is None:
        lines += ["", "No primary comparison was declared (`primary:` in the study file): every row is secondary."]
    return lines


def _markdown(result: dict, images: list[str]) -> str:
    lines = [
        f"# Study `{result['study']}`",
        "",
        f"Held-out tasks: {', '.join(result['heldout_tasks'])}; seeds {result['seeds']}; "
        f"{result['eval_episodes_per_task']} evaluation episodes per task per cell.",
        *_provenance_lines(result.get("provenance") or {}),
        "",
        "## Success (mean over seeds of the task-averaged success rate, 95% t-interval over seeds)",
        "",
        "| variant | " + " | ".join(f"{d} demos" for d in result["demos"]) + " |",
        "|---|" + "---|" * len(result["demos"]),
    ]
    for name in result["variants"]:
        row = [_fmt(result["pooled"][f"{name}/d{d}"]) for d in result["demos"]]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    if result["paired_differences"]:
        lines += _paired_lines(result)
    lines += ["", "## Per task (mean over seeds)", ""]
    lines.append("| variant | demos | " + " | ".join(result["heldout_tasks"]) + " |")
    lines.append("|---|---|" + "---|" * len(result["heldout_tasks"]))
    for r in result["pooled"].values():
        lines.append(
            f"| {r['variant']} | {r['demos']} | "
            + " | ".join(f"{r['tasks'][t]:.2f}" for t in result["heldout_tasks"])
            + " |"
        )
    if result["probe_means"]:
        lines += [
            "",
            "## Held-out linear probes of the true actions (R², mean over seeds)",
            "",
            "| variant | from Z_mot | from Z_sce | from random | seeds with Z_mot > Z_sce |",
            "|---|---|---|---|---|",
        ]
        for name, p in result["probe_means"].items():
            lines.append(
                f"| {name} | {p['z_mot']:.3f} | {p['z_sce']:.3f} | {p['random']:.3f} | "
                f"{p['z_mot_above_z_sce']}/{len(result['seeds'])} |"
            )
    if result.get("action_stream_r2"):
        lines += [
            "",
            "## The LAM's action stream on held-out clips (R², per seed)",
            "",
            "The mean of 8 generated action chunks against the true actions; the constant (normalised mean) is the",
            "predictor R² compares against; copying the clip's first true action uses ground truth; the last two",
            "alter the encoder's input (every frame set to V_t; another task's instruction): close to the normal",
            "value, the stream reads the scene and the instruction, not the motion. The pixel columns: a ridge",
            "regression from raw frame differences (and with V_t's pixels too) fit on the pretraining clips: what a",
            "linear model reads from the same frames (a stream below it drops information the frames carry).",
            "",
            "| variant | mean of 8 draws | constant | copy first action | frames frozen | instruction swapped "
            "| pixel ridge: motion | pixel ridge: motion + scene |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, a in result["action_stream_r2"].items():
            keys = ("mean_of_samples", "constant", "copy_first", "frames_frozen", "instruction_swapped")
            lines.append(
                f"| {name} | "
                + " | ".join(
                    f"{np.mean(a[k]):.3f} ({', '.join(f'{v:.2f}' for v in a[k])})" if k in a else "—"
                    for k in (*keys, "pixel_motion", "pixel_scene_and_motion")
                )
                + " |"
            )
    if result.get("action_stream_r2_per_slice"):
        lines += [
            "",
            "### The same, per unified slice",
            "",
            "The pooled R² weighs each slice by its variance, so a slice the stream cannot predict (a gripper whose",
            "schedule is the task's) can hide one it does. Instruction dropped: every clip given the empty",
            "instruction that instruction dropout trains with (what the stream reads from the frames alone).",
            "",
            "| variant | slice | mean of 8 draws | constant | frames frozen | instruction swapped "
            "| instruction dropped | pixel ridge: motion |",
            "|---|---|---|---|---|---|---|---|",
        ]
        keys = ("mean_of_samples", "constant", "frames_frozen", "instruction_swapped", "instruction_dropped")
        for name, by_slice in result["action_stream_r2_per_slice"].items():
            for sl, a in by_slice.items():
                lines.append(
                    f"| {name} | {sl} | "
                    + " | ".join(
                        f"{np.mean(a[k]):.3f} ({', '.join(f'{v:.2f}' for v in a[k])})" if k in a else "—"
                        for k in (*keys, "pixel_motion")
                    )
                    + " |"
                )
    if result.get("grounding"):
        lines += [
            "",
            "## Grounding: each variant's finetuned VLM against the baseline's (per seed)",
            "",
            "Per held-out first frame, the mean entropy of the 10% lowest-entropy heads (lower = more concentrated",
            "attention; docs/analysis.md); per seed the mean over the frames; B − A over seeds with a 95% t-interval",
            "and the exact sign-flip p. Attention entropy is over the image grid (continuous); spatial entropy is",
            "the paper's, over the components above the mean (0 for a one-blob map, so often 0 on coarse grids).",
            "",
            "| variant | demos | statistic | baseline (A) | variant (B) | B − A [95% CI over seeds] | sign-flip p |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, row in result["grounding"].items():
            name, d = key.split("/d")
            if "error" in row:
                lines.append(f"| {name} | {d} | not analysable: {row['error']} | | | | |")
                continue
            for statistic, g in row.items():
                diff = g["difference"]
                flat = " (degenerate)" if g["degenerate"] else ""
                lines.append(
                    f"| {name} | {d} | {statistic.replace('_', ' ')}{flat} | {np.mean(g['baseline_per_seed']):.3f} | "
                    f"{np.mean(g['variant_per_seed']):.3f} | {diff['mean']:+.3f} [{diff['ci95'][0]:+.3f}, "
                    f"{diff['ci95'][1]:+.3f}] | {diff['p_sign_flip']:.3f} |"
                )
    if result.get("reconstruction_means"):
        lines += [
            "",
            "## LAM future frames on held-out clips (mean over seeds)",
            "",
            'The moving region is where V_t and the true V_t+k differ; "copy V_t" is the trivial prediction of',
            "the first frame again.",
            "",
            "| variant | PSNR moving (dB) | copy V_t | SSIM moving | copy V_t | whole-frame PSNR (dB) |",
            "|---|---|---|---|---|---|",
        ]
        for name, q in result["reconstruction_means"].items():
            lines.append(
                f"| {name} | {q['psnr_moving_db']:.2f} | {q['copy_psnr_moving_db']:.2f} | {q['ssim_moving']:.3f} | "
                f"{q['copy_ssim_moving']:.3f} | {q['psnr_db']:.2f} |"
            )
        lines += [""] + [f"![{n} LAM, first seed](reconstructions_{n}.png)" for n in result["reconstruction_means"]]
    training = result.get("training") or {}
    if training.get("finetune_final_loss"):
        lines += [
            "",
            "## Training losses (mean over seeds of the last five logged steps)",
            "",
            "| variant | demos | finetuning loss |",
            "|---|---|---|",
        ]
        for r in training["finetune_final_loss"].values():
            lines.append(f"| {r['variant']} | {r['demos']} | {r['mean']:.4f} |")
        for name, p in training.get("pretrain_final_loss", {}).items():
            parts = [f"{k.removesuffix('_final_loss')} {v:.4f}" for k, v in p.items()]
            lines.append(f"\n{name}: final " + ", ".join(parts) + ".")
    lines += [
        "",
        "## Cells (Wilson 95% over episodes)",
        "",
        "| variant | seed | demos | successes | rate |",
        "|---|---|---|---|---|",
    ]
    for c in result["cells"]:
        lo, hi = c["ci95"]
        lines.append(
            f"| {c['variant']} | {c['seed']} | {c['demos']} | {c['successes']}/{c['episodes']} | "
            f"{c['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] |"
        )
    lines += ["", "## Intervals", "", result["interval_method"], ""]
    lines += [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def provenance(source: Path | None) -> dict[str, Any]:
    """The study file's sha256 and the git commit of the code that ran it (with whether the tree was dirty):
    the file as committed before the run is the study's registration."""
    import hashlib
    import subprocess

    out: dict[str, Any] = {"study_file": None, "study_sha256": None, "git_commit": None, "git_dirty": None}
    if source is not None and Path(source).is_file():
        out["study_file"] = str(source)
        out["study_sha256"] = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    root = Path(__file__).resolve().parents[2]
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)  # fmt: skip
        if commit.returncode == 0:
            out["git_commit"], out["git_dirty"] = commit.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed wheel): the report says so with nulls
    return out


def write_report(
    study,
    out: Path,
    evaluations: dict[str, dict],
    probes: dict[str, dict],
    source: Path | None = None,
    grounding: dict[str, dict] | None = None,
) -> Path:
    import shutil

    from latbot.artifacts import parent_ref, write_manifest

    rdir = out / study.report_dir
    from latbot.ownership import claim

    if claim(rdir, {"report"}, option="report folder"):  # only a report this replaces, never other files
        shutil.rmtree(rdir)
    rdir.mkdir(parents=True)
    result = aggregate(study, evaluations, probes)
    result["grounding"] = grounding_by_seed(study, grounding or {})
    result["provenance"] = provenance(source)
    images = _plots(result, rdir)
    result["training"], curves = training_summary(out, list(evaluations), rdir)
    images += [curves] if curves else []
    for key, p in sorted(probes.items(), key=lambda kv: int(kv[0].split("/s")[-1])):
        name = key.split("/")[0]
        target = rdir / f"reconstructions_{name}.png"
        if p.get("reconstruction_image") and Path(p["reconstruction_image"]).exists() and not target.exists():
            shutil.copy(p["reconstruction_image"], target)  # the first seed's
    (rdir / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (rdir / "report.md").write_text(_markdown(result, images))
    parents = [parent_ref(out / key / "eval", "eval") for key in evaluations]
    write_manifest(rdir, "report", parents=parents, extra={"study": study.name})
    return rdir
