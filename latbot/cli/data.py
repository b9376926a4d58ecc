"""`latbot data convert | info | verify | stats`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from latbot.cli._common import plugin_options, user_errors

app = typer.Typer(help="Episode stores: convert sources, inspect, verify, recompute statistics.", no_args_is_help=True)


@app.command()
@user_errors
def convert(
    src: Path = typer.Argument(..., help="Source dataset (directory or file)."),
    fmt: str = typer.Option(..., "--format", "-f", help="Adapter name (`latbot plugins list --kind datasets`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Episode store to create, or to resume."),
    image_size: int = typer.Option(224, help="Square training resolution; frames are resized once, here."),
    resize: str = typer.Option("pad", help="Non-square sources: pad (letterbox), crop (centre) or stretch."),
    cameras: list[str] = typer.Option([], "--camera", help="Cameras to keep (repeatable; default: all)."),
    codec: str = typer.Option("lz4", help="Frame compression: lz4 (fast), zstd (smaller for renders) or none."),
    config: Path | None = typer.Option(None, help="YAML file with the adapter's options (its Config)."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Adapter option KEY=VALUE (YAML value)."),
    limit: int | None = typer.Option(None, help="Convert at most this many episodes."),
    skip_bad: bool = typer.Option(False, help="Report malformed episodes and go on (default: stop)."),
) -> None:
    """Convert a source dataset into an episode store (resumes an interrupted conversion)."""
    from latbot.data.convert import convert as run

    result = run(
        _adapter_config(fmt, config, overrides),
        src,
        out,
        image_size=image_size,
        resize_mode=resize,
        cameras=cameras or None,
        codec=codec,
        limit=limit,
        skip_bad=skip_bad,
    )
    for failure in result.failed:
        typer.echo(f"skipped: {failure}", err=True)
    typer.echo(
        f"{out}: {result.added} episode(s) added, {result.skipped} already present, "
        f"{len(result.failed)} failed; {result.total_episodes} in the store"
    )


def _adapter_config(fmt: str, config: Path | None, overrides: list[str]):
    return plugin_options("datasets", fmt, config, overrides)


@app.command()
@user_errors
def info(
    store: Path = typer.Argument(..., help="Episode store."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Episodes, frames, cameras, image size, embodiments, tasks and instructions of a store."""
    from latbot.data.store import EpisodeStore

    with EpisodeStore.open(store) as s:
        summary = s.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key in (
        "path",
        "episodes",
        "frames",
        "cameras",
        "image_size",
        "codec",
        "source_format",
        "embodiments",
        "with_subtasks",
        "success",
        "has_stats",
    ):
        typer.echo(f"{key:>14}: {summary[key]}")
    typer.echo(f"{'tasks':>14}: {len(summary['tasks'])}")
    for text in summary["instructions"][:20]:
        typer.echo(f"{'':>16}- {text}")
    if len(summary["instructions"]) > 20:
        typer.echo(f"{'':>16}… {len(summary['instructions']) - 20} more")


@app.command()
@user_errors
def verify(store: Path = typer.Argument(..., help="Episode store.")) -> None:
    """Check a store thoroughly; exit 0 when sound, 1 with a report of every problem."""
    from latbot.data.verify import verify_store

    problems = verify_store(store, progress=True)
    if not problems:
        typer.echo(f"ok: {store}")
        return
    for p in problems:
        typer.echo(f"problem: {p}")
    typer.echo(f"{len(problems)} problem(s) in {store}", err=True)
    raise typer.Exit(1)


@app.command()
@user_errors
def stats(store: Path = typer.Argument(..., help="Episode store.")) -> None:
    """Recompute the store's normalisation statistics (mean, std, min, max, q01, q99 per dimension)."""
    from latbot.data.convert import finalize
    from latbot.data.store import EpisodeStore

    with EpisodeStore.open(store, mode="a") as s:
        finalize(s)
        n = s.num_frames
    typer.echo(f"{store}: statistics recomputed over {n} frames")
