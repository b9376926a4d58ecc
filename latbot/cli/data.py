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
    src: Path | None = typer.Argument(None, help="Source dataset (directory or file); not with --mixture."),
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="Adapter name (`latbot plugins list --kind datasets`); or give --preset."
    ),
    out: str | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Episode store to create or resume (a path or fsspec URL); with --shards, the folder of the shard stores.",
    ),
    preset: str | None = typer.Option(
        None, "--preset", "-p", help="Dataset preset (`latbot data presets`): format, cameras, layout, checks."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="I/N: convert only shard I of N (by source key); each shard writes its own --out."
    ),
    image_size: int = typer.Option(224, help="Square training resolution; frames are resized once, here."),
    resize: str = typer.Option("pad", help="Non-square sources: pad (letterbox), crop (centre) or stretch."),
    cameras: list[str] = typer.Option([], "--camera", help="Cameras to keep (repeatable; default: all)."),
    codec: str = typer.Option(
        "lz4",  # latbot.data.store.DEFAULT_CODEC (not imported here: the CLI starts without numpy)
        help="Frame codec (docs/data.md, 'Choosing a codec'): lz4 (default: as fast as none on camera frames, "
        "smaller on renders), zstd, none; per-frame images: png, qoi, webp-lossless, jpegxl-lossless (lossless), "
        "jpeg95, jpeg90 or any jpeg<Q> (lossy).",
    ),
    config: Path | None = typer.Option(None, help="YAML file with the adapter's options (its Config)."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Adapter option KEY=VALUE (YAML value)."),
    limit: int | None = typer.Option(None, help="Convert at most this many episodes."),
    skip_bad: bool = typer.Option(False, help="Report malformed episodes and go on (default: stop)."),
    shards: int | None = typer.Option(
        None,
        "--shards",
        min=1,
        help="Run the conversion as N shard jobs through --launcher, into OUT/shard-000 ... (one shard set, listed "
        "in OUT/shards.txt); a rerun resubmits only the shards not complete. With --mixture: per source.",
    ),
    mixture: Path | None = typer.Option(
        None,
        "--mixture",
        help="Convert every source of a mixture file (each `name` a preset) into its `store`, as jobs; a store "
        "`DIR/shard-*` in --shards N shards.",
    ),
    raw_root: Path | None = typer.Option(None, "--raw-root", help="--mixture: source NAME's raw copy is DIR/NAME."),
    raw: list[str] = typer.Option([], "--raw", help="--mixture: NAME=PATH, one source's raw copy (repeatable)."),
    only: list[str] = typer.Option([], "--only", help="--mixture: convert only this source (repeatable)."),
    launcher: str | None = typer.Option(
        None, "--launcher", help="With --shards / --mixture: local (processes here, default) or slurm (a job array)."
    ),
    partition: str | None = typer.Option(None, help="Slurm partition."),
    account: str | None = typer.Option(None, help="Slurm account."),
    qos: str | None = typer.Option(None, help="Slurm quality of service."),
    time_min: int | None = typer.Option(None, help="Wall-clock limit of one job, minutes (default 240)."),
    cpus_per_job: int | None = typer.Option(None, help="CPU cores of one job (default 2)."),
    mem_gb: float | None = typer.Option(None, help="Memory of one job, GiB (default: the scheduler's)."),
    parallelism: int | None = typer.Option(None, help="Jobs running at once (default 32)."),
    jobs_dir: Path | None = typer.Option(
        None, "--jobs-dir", help="jobs.json and the jobs' logs (default: OUT/jobs; --mixture: ROOT/jobs/convert-NAME)."
    ),
) -> None:
    """Convert a source dataset into an episode store (resumes an interrupted conversion); with --shards or
    --mixture, as shard jobs on this machine or on Slurm (docs/data.md, 'Conversion at scale')."""
    from latbot.data.convert import convert as run
    from latbot.data.convert import parse_shard
    from latbot.errors import RecipeError

    launch = dict(kind=launcher, partition=partition, account=account, qos=qos, time_min=time_min,
                  cpus_per_job=cpus_per_job, mem_gb=mem_gb, parallelism=parallelism)  # fmt: skip
    if shards is not None or mixture is not None:
        options = dict(image_size=image_size, resize_mode=resize, cameras=tuple(cameras) or None, codec=codec,
                       skip_bad=skip_bad)  # fmt: skip
        _convert_jobs(src, fmt, out, preset, shard, config, overrides, limit, shards, mixture, raw_root, raw, only,
                      launch, jobs_dir, options)  # fmt: skip
        return
    given = [f"--{k.replace('_', '-')}" for k, v in launch.items() if v is not None]
    given += [
        name for name, v in (("--raw-root", raw_root), ("--raw", raw), ("--only", only), ("--jobs-dir", jobs_dir)) if v
    ]
    if given:
        raise RecipeError(f"{', '.join(given)}: only with --shards N or --mixture FILE (a conversion as jobs)")
    if src is None or out is None:
        raise RecipeError("give the source (SRC) and --out STORE (or --mixture FILE)")
    adapter_config, extra = _adapter(src, fmt, preset, config, overrides)
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


def _adapter(src: Path, fmt: str | None, preset: str | None, config: Path | None, overrides: list[str]):
    """(the adapter's Config, what the manifest records of the preset) from --format or --preset (+ options)."""
    from latbot.errors import RecipeError

    if preset is not None:
        from latbot.data.presets import check_source, load_preset

        p = load_preset(preset)
        if fmt is not None and fmt != p.format:
            raise RecipeError(f"--format {fmt}: preset '{p.name}' reads format '{p.format}'; drop --format")
        adapter_config = _preset_config(p, config, overrides)
        from latbot import registry

        check_source(p, registry.build("datasets", adapter_config), src)
        return adapter_config, {"preset": p.name, "preset_reads": p.reads, "frame_stride": p.frame_stride}
    if fmt is None:
        raise RecipeError("give --format NAME (an adapter) or --preset NAME (`latbot data presets`)")
    return plugin_options("datasets", fmt, config, overrides), None


def _convert_jobs(src, fmt, out, preset, shard, config, overrides, limit, shards, mixture, raw_root, raw, only,
                  launch, jobs_dir, options) -> None:  # fmt: skip
    """`data convert --shards N` / `--mixture FILE`: plan the jobs, run them through the launcher, report."""
    from pydantic import ValidationError

    from latbot.cluster.convert import JOBS_DIR, LIST_NAME, plan_mixture, plan_source, run_conversion
    from latbot.cluster.launcher import Launcher
    from latbot.data.location import is_url, join, store_location
    from latbot.errors import RecipeError

    if shard is not None:
        raise RecipeError("--shard I/N converts one shard here; --shards N runs all N as jobs: give one of them")
    if limit is not None:
        raise RecipeError("--limit: not with --shards / --mixture (each shard would take its own first episodes)")
    try:
        launcher = Launcher.model_validate({k: v for k, v in launch.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        name = "--" + ".".join(str(p) for p in first["loc"]).replace("_", "-").replace("kind", "launcher")
        raise RecipeError(f"{name}: {first['msg']}") from None
    if mixture is not None:
        given = (("SRC", src), ("--out", out), ("--format", fmt), ("--preset", preset), ("--config", config),
                 ("--set", overrides), ("--camera", options["cameras"]))  # fmt: skip
        given = [name for name, value in given if value]
        if given:
            raise RecipeError(
                f"{', '.join(given)}: not with --mixture (each source is read with its preset into its `store`)"
            )
        named = {}
        for item in raw:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise RecipeError(f"--raw {item}: expected NAME=PATH")
            named[name] = Path(path)
        loaded, plans = plan_mixture(mixture, shards or 1, raw_root=raw_root, raw=named, only=only or None,
                                     **options)  # fmt: skip
        if jobs_dir is None:
            root = loaded.root if is_url(loaded.root) else mixture.parent / (loaded.root or ".")
            if is_url(root):
                raise RecipeError(f"--mixture {mixture}: its stores are at {root}; give --jobs-dir (a shared folder)")
            jobs_dir = Path(root) / JOBS_DIR / f"convert-{loaded.name}"
    else:
        if src is None or out is None:
            raise RecipeError("--shards N: give the source (SRC) and --out FOLDER (it holds the N shard stores)")
        if raw_root is not None or raw or only:
            raise RecipeError("--raw-root, --raw, --only: only with --mixture")
        adapter_config, extra = _adapter(src, fmt, preset, config, overrides)
        out = store_location(out)
        plans = [plan_source(adapter_config, src, out, shards, manifest_extra=extra, **options)]
        if jobs_dir is None:
            if is_url(out):
                raise RecipeError(f"--out {out}: give --jobs-dir (a shared local folder for the jobs' logs)")
            jobs_dir = Path(out) / JOBS_DIR
    results = run_conversion(plans, launcher, jobs_dir, say=typer.echo)
    for plan in plans:
        summaries = [results[key] for key in plan.jobs]
        for note in dict.fromkeys(note for r in summaries for note in r["notes"]):
            typer.echo(f"warning: {plan.name + ': ' if plan.name else ''}{note}", err=True)
        for failure in (f for r in summaries for f in r["failed"]):
            typer.echo(f"skipped: {failure}", err=True)
        added, episodes = sum(r["added"] for r in summaries), sum(r["episodes"] for r in summaries)
        before = sum(r["done_before"] for r in summaries)
        if plan.folder is not None:
            where = f"{join(plan.folder, plan.prefix)}* (listed in {join(plan.folder, LIST_NAME)})"
        else:
            where = summaries[0]["store"]
        typer.echo(
            f"{plan.name or out}: {len(summaries)} store(s), {episodes} episode(s), {added} added now, "
            f"{sum(len(r['failed']) for r in summaries)} failed; {before} job(s) were complete already; {where}"
        )
    typer.echo(f"jobs and logs: {jobs_dir}")


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


@app.command()
@user_errors
def export(
    store: str = typer.Argument(..., help="Episode store (a path or fsspec URL), finished by `latbot data convert`."),
    fmt: str = typer.Option(..., "--format", "-f", help="What to write: lerobot (a LeRobot v3.0 dataset)."),
    out: Path = typer.Option(..., "--out", "-o", help="The dataset folder: new, or an empty folder."),
    codec: str = typer.Option("h264", help="Video codec: h264 (libx264; decodable everywhere) or av1 (libsvtav1)."),
    crf: int | None = typer.Option(None, help="Video quality, lower is better (default: h264 18, av1 30)."),
    pix_fmt: str = typer.Option("yuv420p", "--pix-fmt", help="yuv420p (as LeRobot records) or yuv444p (full colour)."),
) -> None:
    """Write a store as a dataset of another toolkit: `--format lerobot` makes a LeRobot v3.0 dataset that
    `LeRobotDataset` reads, with the robot's own action/state vectors (docs/interop.md, 'Stores out')."""
    import sys

    from latbot.data.export import ExportError, export_lerobot

    if fmt != "lerobot":
        raise ExportError(f"--format {fmt}: the formats a store exports to are: lerobot")
    result = export_lerobot(store, out, codec=codec, crf=crf, pix_fmt=pix_fmt, progress=sys.stderr.isatty())
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    vectors = ", ".join(f"{feature} ← {array}" for feature, array in result.vectors.items()) or "no vectors"
    typer.echo(
        f"{out}: LeRobot v3.0 dataset, {result.episodes} episode(s), {result.frames} frames, "
        f"{len(result.cameras)} camera(s), {result.tasks} task(s); {vectors}"
    )
