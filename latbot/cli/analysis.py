"""`latbot grounding-analysis`."""

from __future__ import annotations

from pathlib import Path

import typer

from latbot.cli._common import user_errors


@user_errors
def grounding_analysis(
    checkpoints: list[Path] = typer.Option(
        ..., "--checkpoint", help="A LAM, distillation or finetuning run directory (repeat for B)."
    ),
    data: Path = typer.Option(..., help="Episode store: first frames and instructions are analysed."),
    samples: int = typer.Option(8, min=1, help="Episodes to analyse."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    weighted: bool = typer.Option(False, help="Component sizes by attention mass (the original method)."),
) -> None:
    """Spatial-entropy grounding of every layer and head (paper supp. 7): table, PNG overlays, rerun file."""
    import time

    from latbot.analysis.grounding import run

    if len(checkpoints) > 2:
        typer.echo("note: more than two checkpoints; the PNGs put them all side by side", err=True)
    t0 = time.perf_counter()
    summary = run(checkpoints, data, out, samples=samples, weighted=weighted)
    per = (time.perf_counter() - t0) / max(1, samples * len(checkpoints))
    comparisons = [summary.pop(key, None) for key in ("comparison", "comparison_attention")]
    for label, s in summary.items():
        ent = [x["entropy"] for x in s["lowest"]]
        typer.echo(
            f"{label} ({s['checkpoint']}): lowest spatial entropy per sample, mean {sum(ent) / len(ent):.3f} nats"
        )
    for comparison in comparisons:
        if comparison and comparison["samples"]:
            a, b, d = comparison["A"], comparison["B"], comparison["B_minus_A"]
            flat = " (degenerate: every sample scores the same)" if comparison.get("degenerate") else ""
            typer.echo(
                f"{comparison['statistic']}, mean over {comparison['samples']} samples: A {a['mean']:.3f}, "
                f"B {b['mean']:.3f}, B − A {d['mean']:+.3f} [95% {d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], "
                f"sign-flip p {d['p_sign_flip']:.3f}{flat}"
            )
    typer.echo(f"wrote {out}/heads.csv, summary.json, sample_*.png, grounding.rrd ({per:.2f} s per sample and model)")
