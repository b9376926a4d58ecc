"""`latbot viz episode`."""

from __future__ import annotations

from pathlib import Path

import typer

from latbot.cli._common import user_errors

app = typer.Typer(help="Rerun recordings of episodes and model predictions.", no_args_is_help=True)


def _episodes(specs: list[str]) -> list[int]:
    from latbot.errors import LatBotError

    out: list[int] = []
    for spec in specs:
        for part in spec.split(","):
            a, sep, b = part.partition("-")
            try:
                out += list(range(int(a), int(b) + 1)) if sep else [int(a)]
            except ValueError as e:
                raise LatBotError(f"--episode {spec}: expected an index, a list (0,3) or a range (2-5)") from e
    return out


@app.command("episode")
@user_errors
def episode(
    store: Path = typer.Argument(..., help="Episode store."),
    episodes: list[str] = typer.Option(["0"], "--episode", "-e", help="Index, list (0,3) or range (2-5); repeatable."),
    checkpoint: Path | None = typer.Option(
        None, help="A LAM run (future frames, actions) or a finetuned policy run (action chunks) to overlay."
    ),
    out: Path = typer.Option(Path("episode.rrd"), "--out", "-o", help="The .rrd file to write."),
    spawn: bool = typer.Option(False, help="Open a live viewer instead of writing a file."),
    max_steps: int | None = typer.Option(None, help="Only the first N steps of each episode."),
) -> None:
    """Write a rerun recording of episodes (frames, language, 3-D trajectories, actions, predictions)."""
    from latbot.viz.episode import record

    path = record(store, _episodes(episodes), out, checkpoint, spawn, max_steps)
    if path is not None:
        typer.echo(f"wrote {path} (open it with: rerun {path})")
