"""The quickstart's report: report.md + report.json, PNG plots and one rerun recording, from the artifacts
under --out. Numbers are reported as measured, whatever they are."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = ("success", "lam_reconstruction", "latent_diagnostics", "grounding", "training_curves", "stage_times")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def success_table(evals: dict[str, dict]) -> dict[str, Any]:
    """{policy: {"tasks": {task: {successes, episodes, rate, ci95}}, "overall": {...}}}."""
    table = {}
    for name, report in evals.items():
        tasks = {
            t["task"]: {k: t[k] for k in ("successes", "episodes", "success_rate", "ci95")} for t in report["tasks"]
        }
        table[name] = {"tasks": tasks, "overall": report["overall"]}
    return table


def plot_success(table: dict[str, Any], path: Path) -> None:
    plt = _plt()
    policies = list(table)
    tasks = [*next(iter(table.values()))["tasks"], "overall"]
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 3.6))
    width = 0.8 / len(policies)
    for k, name in enumerate(policies):
        rows = [*table[name]["tasks"].values(), table[name]["overall"]]
        rate = np.array([r["success_rate"] or 0.0 for r in rows])
        lo = np.clip(rate - np.array([r["ci95"][0] for r in rows]), 0, None)  # rounding can make either
        hi = np.clip(np.array([r["ci95"][1] for r in rows]) - rate, 0, None)  # a tiny negative: clip it
        x = np.arange(len(tasks)) + (k - (len(policies) - 1) / 2) * width
        ax.bar(x, rate, width, yerr=[lo, hi], capsize=3, label=name)
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95%)")
    ax.set_title("held-out tasks, closed loop")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lam_reconstructions(lam_run: Path, store: Path, path: Path, samples: int) -> dict[str, Any]:
    """Rows: V_t, the true V_{t+k}, the LAM's generated V_{t+k} (at the decoder's resolution), for clips
    of held-out episodes; returns their PSNR."""
    import torch

    from latbot.analysis.diagnostics import future_frames, lam_clips, psnr, reconstruction_quality
    from latbot.data.clips import K_FRAMES, K_INSTRUCTION

    lam, data = lam_clips(lam_run, store)
    picks = np.linspace(0, len(data) - 1, samples).astype(int)
    batch = torch.utils.data.default_collate([data[int(i)] for i in picks])
    pred, small, _ = future_frames(lam, batch, torch.Generator().manual_seed(0), with_actions=False)
    truth = batch[K_FRAMES][:, -1].float() / 255
    values = psnr(pred, small)
    first = torch.nn.functional.interpolate(
        batch[K_FRAMES][:, 0].float() / 255, size=pred.shape[-2:], mode="bilinear", antialias=True
    )
    quality = reconstruction_quality(pred, small, first)
    plt = _plt()
    fig, axes = plt.subplots(3, samples, figsize=(2.0 * samples, 6.2), squeeze=False)
    rows = [
        (batch[K_FRAMES][:, 0].float() / 255, "V_t"),
        (truth, "true V_t+k"),
        (pred, f"LAM V_t+k ({pred.shape[-1]}²)"),
    ]
    for r, (imgs, label) in enumerate(rows):
        for c in range(samples):
            ax = axes[r][c]
            ax.imshow(imgs[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label)
            if r == 0:
                ax.set_title(batch[K_INSTRUCTION][c][:28], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"psnr_db": float(np.mean(values)), "samples": int(samples), "image": path.name, "quality": quality}


def training_curves(runs: dict[str, Path], path: Path) -> dict[str, dict[str, float]]:
    from latbot.runs import open_run

    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(3.4 * len(runs), 3.0), squeeze=False)
    finals = {}
    for ax, (name, run) in zip(axes[0], runs.items(), strict=True):
        rows = open_run(run, complete=False).metrics()  # a torn last line (a kill mid-write) is dropped
        steps = [r["step"] for r in rows]
        keys = [k for k in rows[-1] if k not in ("step", "lr", "samples_per_s", "grad_norm") and "rank" not in k]
        for k in keys:
            ax.plot(steps, [r.get(k, math.nan) for r in rows], label=k, lw=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        finals[name] = {"first_loss": rows[0]["loss"], "final_loss": rows[-1]["loss"], "steps": steps[-1]}
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return finals


def write_report(
    out: Path, preset_name: str, preset, stores, lam, distill, ft, evals, times, wall: float | None = None
) -> Path:
    import shutil

    from latbot.analysis.diagnostics import diagnose_checkpoint
    from latbot.analysis.grounding import run as grounding
    from latbot.artifacts import parent_ref, write_manifest
    from latbot.viz.episode import record

    rdir = out / "report"
    from latbot.ownership import claim

    if claim(rdir, {"report"}, option="report folder"):  # only a report this replaces, never other files
        shutil.rmtree(rdir)
    rdir.mkdir(parents=True)
    table = success_table(evals)
    plot_success(table, rdir / "success.png")
    recon = lam_reconstructions(lam, stores["heldout"], rdir / "lam_reconstructions.png", preset.report_samples)
    diag = {name: diagnose_checkpoint(lam, stores[name], samples=64) for name in ("pretrain", "heldout")}
    g = grounding(
        [ft["baseline"], ft["distilled"]], stores["heldout"], rdir / "grounding", samples=preset.grounding_samples
    )
    ground = {
        name: float(np.mean([low["entropy"] for low in g[label]["lowest"]]))
        for label, name in (("A", "baseline"), ("B", "distilled"))
    }
    ground_k = g.get("comparison")  # the 10% lowest-entropy heads per sample, with intervals over samples
    ground_att = g.get("comparison_attention")  # the 10% lowest heads by attention entropy: continuous on 4 × 4
    curves = training_curves(
        {"lam": lam, "distill": distill, "ft_distilled": ft["distilled"], "ft_baseline": ft["baseline"]},
        rdir / "training_curves.png",
    )
    record(stores["heldout"], [0], rdir / "episode.rrd", checkpoint=ft["distilled"])
    from latbot import runs

    method = (runs.open_run(lam, "lam").extra.get("action_normalization") or {}).get("method", "none")
    total = sum(v["seconds"] for v in times.values())
    report = {
        "preset": preset_name,
        "pretrain_tasks": list(preset.pretrain_tasks),
        "heldout_tasks": list(preset.heldout_tasks),
        "demos_per_heldout_task": preset.demos_per_task,
        "success": table,
        "lam_action_normalization": method,
        "lam_reconstruction": recon,
        "latent_diagnostics": diag,
        "grounding": {
            "mean_lowest_spatial_entropy_nats": ground,
            "k_lowest_heads": ground_k,
            "k_lowest_heads_attention_entropy": ground_att,
            "images": "grounding/sample_*.png",
        },
        "training_curves": curves,
        "stage_times": times,
        "total_seconds_of_stages": total,
        "wall_seconds_before_report": None if wall is None else round(wall, 1),
    }
    (rdir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    (rdir / "report.md").write_text(_markdown(report, preset))
    parents = [parent_ref(p) for p in (lam, distill, ft["distilled"], ft["baseline"])]
    write_manifest(rdir, "report", parents=parents, extra={"preset": preset_name})
    return rdir


def _pct(r: dict) -> str:
    rate = r["success_rate"]
    lo, hi = r["ci95"]
    return f"{r['successes']}/{r['episodes']} = {rate:.2f} [{lo:.2f}, {hi:.2f}]" if rate is not None else "—"


def _quality_lines(diagnostics: dict) -> list[str]:
    """Reconstruction judged where things move (pixels changing > 0.05 between V_t and V_t+k), against the
    trivial prediction "V_t again"."""
    lines = [
        "Judged on the moving region (where V_t and V_t+k differ), against copying V_t:",
        "",
        "| store | PSNR moving (dB) | copy V_t | SSIM moving | copy V_t | whole-frame PSNR | copy V_t | moving px |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in diagnostics.items():
        q = d["reconstruction"]
        lines.append(
            f"| {name} | {q['psnr_moving_db']:.2f} | {q['copy_psnr_moving_db']:.2f} | {q['ssim_moving']:.3f} | "
            f"{q['copy_ssim_moving']:.3f} | {q['psnr_db']:.2f} | {q['copy_psnr_db']:.2f} | {q['moving_fraction']:.1%} |"
        )
    return lines


def _markdown(r: dict, preset) -> str:
    s = r["success"]
    lines = [
        f"# LatBot quickstart report (preset `{r['preset']}`)",
        "",
        "MetaWorld, CPU, tiny models built from random initialisation (no pretrained weights): the numbers "
        "say the pipeline runs end to end and how far a few minutes of CPU training get; they are not the "
        "paper's results. One seed and 10 episodes per task cannot tell two policies apart; the multi-seed "
        "studies (`latbot study recipes/studies/fewshot_metaworld.yaml`, 3 seeds, 30 episodes per task) and "
        "their measured results are in docs/results.md of the LatBot source tree.",
        "",
        f"- pretraining tasks (LAM and distillation): {', '.join(r['pretrain_tasks'])}",
        f"- held-out tasks (finetuning on {r['demos_per_heldout_task']} demonstrations each, evaluation): "
        f"{', '.join(r['heldout_tasks'])}",
        "",
        "## Success on the held-out tasks",
        "",
        "| task | distilled (LatBot) | baseline (no distillation) |",
        "|---|---|---|",
    ]
    for task in r["heldout_tasks"]:
        lines.append(f"| {task} | {_pct(s['distilled']['tasks'][task])} | {_pct(s['baseline']['tasks'][task])} |")
    lines += [
        f"| **overall** | {_pct(s['distilled']['overall'])} | {_pct(s['baseline']['overall'])} |",
        "",
        "Successes / episodes = rate [Wilson 95% interval]. ![success](success.png)",
        "",
        "## LAM reconstructions (held-out episodes)",
        "",
        f"First frame, true future frame, and the LAM's generated future frame; PSNR "
        f"{r['lam_reconstruction']['psnr_db']:.2f} dB over {r['lam_reconstruction']['samples']} clips.",
        "",
        "![reconstructions](lam_reconstructions.png)",
        "",
        *_quality_lines(r["latent_diagnostics"]),
        "",
        "## Latent diagnostics",
        "",
        "| store | eff. rank Z_sce | eff. rank Z_mot | probe R² from Z_mot | from Z_sce | from random | PSNR (dB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in r["latent_diagnostics"].items():
        pr = d["probe_r2"]
        lines.append(
            f"| {name} | {d['effective_rank']['z_sce']:.2f} | {d['effective_rank']['z_mot']:.2f} | "
            f"{pr['z_mot']:.3f} | {pr['z_sce']:.3f} | {pr['random']:.3f} | {d['psnr_db']:.2f} |"
        )
    streams = {name: d.get("action_stream_r2") for name, d in r["latent_diagnostics"].items()}
    if any(streams.values()):
        lines += [
            "",
            "The LAM's action stream on the same clips (R² of the generated actions against the true ones; 0 = the "
            "mean action): one draw, the mean of 8 draws (the point prediction, E[a | z]), the constant "
            "(normalised mean) and persistence of the clip's first true action (a reference using ground truth); "
            "then the mean of 8 draws with the encoder's input altered: every frame replaced by V_t (no motion "
            "to see) and each clip given another task's instruction. A stream that reads the motion falls with "
            "the frames frozen; one that stays put predicts the actions from the scene and the instruction (a "
            "policy), which cannot carry over to unseen tasks:",
            "",
            "| store | one draw | mean of 8 draws | constant | copy first action | frames frozen | instruction swapped"
            " |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, a in streams.items():
            if a:
                alt = " | ".join(f"{a[k]:.3f}" if k in a else "—" for k in ("frames_frozen", "instruction_swapped"))
                lines.append(
                    f"| {name} | {a['one_sample']:.3f} | {a['mean_of_samples']:.3f} | {a['constant']:.3f} | "
                    f"{a['copy_first']:.3f} | {alt} |"
                )
        slices = [(name, sl, v) for name, a in streams.items() if a for sl, v in a.get("per_slice", {}).items()]
        if slices:
            lines += [
                "",
                "The same per unified slice (the pooled R² weighs each slice by its variance: a gripper held at one "
                "value per task can hide an arm motion the stream reads); instruction dropped: every clip given the "
                "empty instruction that instruction dropout trains with:",
                "",
                "| store | slice | mean of 8 draws | constant | frames frozen | instruction dropped |",
                "|---|---|---|---|---|---|",
            ]
            for name, sl, v in slices:
                cells = " | ".join(
                    f"{v[k]:.3f}" if k in v else "—"
                    for k in ("mean_of_samples", "constant", "frames_frozen", "instruction_dropped")
                )
                lines.append(f"| {name} | {sl} | {cells} |")
    g = r["grounding"]["mean_lowest_spatial_entropy_nats"]
    lines += [
        "",
        "Linear probes predict the clip's true actions from each latent group (held-out R²; higher = the "
        "latent carries more action information).",
        "",
        f"LAM action targets: `{r['lam_action_normalization']}` normalisation"
        + (
            " (per source, q01/q99 of the aggregated deltas at the source's clip stride → [−1, 1]; probes and "
            "action errors are in these units)."
            if r["lam_action_normalization"] == "quantile"
            else " (raw unified units)."
        ),
        "",
        "## Grounding before / after distillation (paper Fig. 4 style)",
        "",
        "The last instruction token's attention to the image at every layer and head of the finetuned "
        "policies' VLMs; lowest spatial entropy per sample (lower = more concentrated): baseline "
        f"{g['baseline']:.3f} nats, distilled {g['distilled']:.3f} nats. "
        + _k_lowest_text(r["grounding"].get("k_lowest_heads"))
        + " "
        + _k_lowest_text(r["grounding"].get("k_lowest_heads_attention_entropy"))
        + " A = baseline, B = distilled:",
        "",
        "![grounding](grounding/sample_0000.png)",
        "",
        "## Training curves",
        "",
        "![curves](training_curves.png)",
        "",
        "| run | first logged loss | final loss | steps |",
        "|---|---|---|---|",
    ]
    for name, c in r["training_curves"].items():
        lines.append(f"| {name} | {c['first_loss']:.4f} | {c['final_loss']:.4f} | {c['steps']} |")
    wall = r.get("wall_seconds_before_report")
    lines += [
        "",
        "## Time per stage",
        "",
        "Spans in seconds since this run began (wall clock); stages that ran side by side, one per core, "
        "overlap, so the wall time is below the sum of the stage times. A stage skipped on a rerun keeps the "
        "time and span of the run that made it.",
        "",
        "| stage | seconds | span |",
        "|---|---|---|",
    ]
    for name, t in r["stage_times"].items():
        span = f"{t['start']:.0f}–{t['end']:.0f}" if "start" in t else "—"
        lines.append(f"| {name} | {t['seconds']:.1f} | {span} |")
    lines += [
        f"| **wall time, before this report** | **{wall:.1f}** | |" if wall is not None else "",
        f"| sum of the stage times | {r['total_seconds_of_stages']:.1f} | |",
        "",
        "## Look at it",
        "",
        "`rerun episode.rrd` opens the first held-out episode: frames, instruction and subtasks, the 3-D "
        "end-effector path, actions, and the distilled policy's predicted chunks next to the truth.",
        "",
    ]
    return "\n".join(lines)


def _k_lowest_text(c: dict | None) -> str:
    """The grounding A/B by the mean entropy of each sample's 10% lowest-entropy heads, with intervals."""
    if not c or not c.get("samples"):
        return ""

    def fmt(x: dict) -> str:
        lo, hi = x["ci95"]
        return f"{x['mean']:.3f} [{lo:.3f}, {hi:.3f}]" if lo == lo else f"{x['mean']:.3f}"

    d = c["B_minus_A"]
    what = c.get("statistic", "mean entropy of the 10% lowest-entropy heads (nats)")
    flat = " — degenerate: every sample scores the same for both." if c.get("degenerate") else "."
    return (
        f"{what[0].upper() + what[1:]}, 95% t-intervals over {c['samples']} samples: "
        f"baseline {fmt(c['A'])}, distilled {fmt(c['B'])}, difference {fmt(d)} (sign-flip p = "
        f"{d['p_sign_flip']:.3f}){flat}"
    )
