"""`latbot data convert | presets | info | verify | stats`."""

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
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="Adapter name (`latbot plugins list --kind datasets`); or give --preset."
    ),
    out: str = typer.Option(..., "--out", "-o", help="Episode store to create or resume (a path or fsspec URL)."),
    preset: str | None = typer.Option(
        None, "--preset", "-p", help="Dataset preset (`latbot data presets`): format, cameras, layout, checks."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="I/N: convert only shard I of N (by source key); each shard writes its own --out."
    ),
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
    from latbot.data.convert import parse_shard
    from latbot.errors import RecipeError

    extra = None
    if preset is not None:
        from latbot.data.presets import check_source, load_preset

        p = load_preset(preset)
        if fmt is not None and fmt != p.format:
            raise RecipeError(f"--format {fmt}: preset '{p.name}' reads format '{p.format}'; drop --format")
        adapter_config = _preset_config(p, config, overrides)
        from latbot import registry

        check_source(p, registry.build("datasets", adapter_config), src)
        extra = {"preset": p.name, "preset_reads": p.reads, "frame_stride": p.frame_stride}
    elif fmt is None:
        raise RecipeError("give --format NAME (an adapter) or --preset NAME (`latbot data presets`)")
    else:
        adapter_config = plugin_options("datasets", fmt, config, overrides)
    result = run(
        adapter_config,
        src,
        out,
        image_size=image_size,
        resize_mode=resize,
        cameras=cameras or None,
        codec=codec,
        limit=limit,
        skip_bad=skip_bad,
        shard=parse_shard(shard),
        manifest_extra=extra,
    )
    for note in result.notes:
        typer.echo(f"warning: {note}", err=True)
    for failure in result.failed:
        typer.echo(f"skipped: {failure}", err=True)
    shard_note = f" (shard {shard}; {result.other_shards} episode(s) left to the other shards)" if shard else ""
    typer.echo(
        f"{out}: {result.added} episode(s) added, {result.skipped} already present, "
        f"{len(result.failed)} failed; {result.total_episodes} in the store{shard_note}"
    )


def _preset_config(preset, config: Path | None, overrides: list[str]):
    """The preset's adapter options, then --config, then --set (each later one wins)."""
    from pydantic import ValidationError

    from latbot.errors import RecipeError
    from latbot.recipes.loader import RecipeSource, apply_overrides
    from latbot.yamlio import bounded

    data = {}
    if config is not None:
        data = bounded.load_file(config, "adapter options file") or {}
        if not isinstance(data, dict):
            raise RecipeError(f"{config}: adapter options must be a YAML mapping (key: value)")
    source = RecipeSource({**preset.adapter, **data, "type": preset.format}, {}, str(config or "--set"))
    apply_overrides(source, overrides)
    try:
        return preset.adapter_config(source.data)
    except ValidationError as e:
        raise RecipeError(f"preset '{preset.name}' with your options: {e}") from None


@app.command()
@user_errors
def presets(
    name: str | None = typer.Argument(None, help="Show one preset in full."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The dataset presets (one per Table 6 source): what each reads and how, or why it refuses."""
    from latbot.data.presets import load_preset, preset_names

    if name is not None:
        p = load_preset(name)
        typer.echo(json.dumps(p.model_dump(mode="json"), indent=2) if as_json else _describe(p))
        return
    rows = [load_preset(n) for n in preset_names()]
    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in rows], indent=2))
        return
    for p in rows:
        status = "REFUSES" if p.refuse else (f"{len(p.unmapped)} unmapped" if p.unmapped else "ok")
        typer.echo(f"{p.name:26s} {p.format:8s} {p.fps:5g} Hz  stride {p.frame_stride}  {status:11s} {p.reads[:60]}")
    typer.echo(f"{len(rows)} presets; `latbot data presets NAME` shows one with its conventions and sources")


def _describe(p) -> str:
    lines = [
        f"{p.name}: {p.dataset}",
        f"  reads: {p.reads}",
        f"  format: {p.format}, {p.fps:g} Hz, stride {p.frame_stride}",
    ]
    lines += [f"  {k}: {v}" for k, v in p.conventions.items()]
    lines += [f"  unmapped {k}: {v}" for k, v in p.unmapped.items()]
    if p.refuse:
        lines.append(f"  REFUSES: {p.refuse}")
    lines += [f"  source: {c}" for c in p.citations]
    return "\n".join(lines)


@app.command()
@user_errors
def info(
    store: str = typer.Argument(..., help="Episode store (a path or fsspec URL)."),
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
def verify(
    store: str = typer.Argument(
        ..., help="Episode store (a path or fsspec URL), or a set: a glob of shard stores or a list file."
    ),
) -> None:
    """Check a store (or every store of a set) thoroughly; exit 0 when sound, 1 with a report of every problem."""
    from latbot.data.mixture import resolve_stores
    from latbot.data.verify import verify_store

    problems = [p for path in resolve_stores(store) for p in verify_store(path, progress=True)]
    if not problems:
        typer.echo(f"ok: {store}")
        return
    for p in problems:
        typer.echo(f"problem: {p}")
    typer.echo(f"{len(problems)} problem(s) in {store}", err=True)
    raise typer.Exit(1)


@app.command()
@user_errors
def stats(
    store: str = typer.Argument(
        ..., help="Episode store (a path or fsspec URL), or a set: a glob of shard stores or a list file."
    ),
    out: Path | None = typer.Option(None, "--out", help="A set: write the merged statistics here (JSON)."),
) -> None:
    """Recompute normalisation statistics (mean, std, min, max, q01, q99 per dimension). For a set, each
    store's own, and the set's merged exactly (quantiles over all the set's rows, as for one store)."""
    from latbot.data.convert import finalize
    from latbot.data.mixture import merged_stats, resolve_stores
    from latbot.data.store import EpisodeStore
    from latbot.ownership import check_output_file

    if out is not None:  # checked before any store is touched: a .json file outside every artifact
        out = check_output_file(out, ".json")
    paths = resolve_stores(store)
    total = 0
    for path in paths:
        with EpisodeStore.open(path, mode="a") as s:  # the store's writer lock: one writer at a time
            finalize(s)
            total += s.num_frames
    if len(paths) > 1:
        merged = merged_stats(paths)
        if out is not None:
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text(json.dumps(merged, indent=1))
            tmp.replace(out)
        typer.echo(f"{store}: merged statistics of {len(paths)} stores" + (f" written to {out}" if out else ""))
    typer.echo(f"{store}: statistics recomputed over {total} frames")
