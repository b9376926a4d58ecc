"""`latbot study STUDY.yaml`: a grid of variants × seeds × demonstration counts, resumable (latbot/study)."""

from __future__ import annotations

from pathlib import Path

import typer

from latbot.cli._common import user_errors


@user_errors
def study(
    path: Path = typer.Argument(..., help="Study file (recipes/studies/*.yaml).", dir_okay=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for every artifact and the report."),
    workers: int | None = typer.Option(None, min=1, max=64, help="Steps run side by side (default: the file's)."),
) -> None:
    """Demonstrations → LAM → distillation → finetuning → closed-loop evaluation for every cell of the grid,
    then report.md / report.json / plots. Rerun the same command to resume; finished cells are skipped."""
    from latbot.study import run

    report = run(path, out, workers)
    typer.echo(f"report: {report / 'report.md'}")
