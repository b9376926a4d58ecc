"""`latbot quickstart`: the whole method end to end on CPU, resumable (see latbot/quickstart)."""

from __future__ import annotations

from pathlib import Path

import typer

from latbot.cli._common import user_errors


@user_errors
def quickstart(
    out: Path = typer.Option(Path("quickstart"), "--out", "-o", help="Directory for every artifact and the report."),
    preset: str = typer.Option("tiny", help="tiny (≈ 15 min on 2 cores), small (≈ 1 h), smoke (the tests' variant)."),
    seed: int = typer.Option(0, help="Seed of the demonstrations."),
    parallel: bool = typer.Option(
        True, "--parallel/--sequential", help="Run independent stages side by side, one per core (same results)."
    ),
) -> None:
    """Demonstrations → LAM → distillation → finetuning (distilled and baseline) → closed-loop eval → report.
    Rerun the same command to resume: finished stages are skipped, an interrupted one continues."""
    from latbot.quickstart import run

    report = run(out, preset, seed, parallel)
    typer.echo(f"report: {report / 'report.md'} (recording: rerun {report / 'episode.rrd'})")
