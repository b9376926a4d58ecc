"""`latbot export RUN --format lerobot --out DIR`: a finetuned policy in another toolkit's checkpoint layout."""

from __future__ import annotations

from pathlib import Path

import typer

from latbot.cli._common import user_errors


@user_errors
def export(
    run: Path = typer.Argument(..., help="A finished finetuning run directory (student and action expert `pi05`)."),
    fmt: str = typer.Option(..., "--format", "-f", help="lerobot: a LeRobot 0.6 `pi05` checkpoint directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to create (new or empty)."),
    space: str = typer.Option(
        "native",
        help="native: observation.state and action in the robot's own units (the embodiment's conversions must be "
        "affine per dimension); unified: the run's valid unified dimensions.",
    ),
) -> None:
    """Write a finetuned pi0.5 policy as a LeRobot pi05 checkpoint (docs/interop.md)."""
    from latbot.interop.lerobot_policy import FORMATS, ExportError, export_lerobot

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {list(FORMATS)}")
    record = export_lerobot(run, out, space)
    for line in record["warnings"]:
        typer.echo(f"warning: {line}")
    state = ", ".join(d["name"] for d in record["state"])
    action = ", ".join(d["name"] for d in record["action"])
    typer.echo(f"wrote {out}: a LeRobot pi05 policy ({record['space']} space, embodiment {record['embodiment']})")
    typer.echo(f"  observation.state ({len(record['state'])}): {state}")
    typer.echo(f"  action ({len(record['action'])}): {action}")
    for name, why in record["not_carried"].items():
        typer.echo(f"  not carried: {name} ({why})")
