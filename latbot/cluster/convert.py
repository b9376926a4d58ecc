"""A conversion as shard jobs: `latbot data convert SRC -o OUT --shards N --launcher local|slurm`, or every
source of a mixture file (`--mixture recipes/mixtures/X.yaml`), through `latbot.cluster.launcher`.

One source split N ways becomes N jobs, job i running the `--shard i/N` conversion (latbot.data.convert)
into its own store `OUT/shard-00i`; the N stores are one shard set (`OUT/shard-*`, or the list file
`OUT/shards.txt` written when every job has finished), which reads back as the single-process store,
episode for episode, in the same order (latbot.data.mixture). A shard whose store is complete (its
manifest records this shard of this source, and its commit log and Zarr metadata still hash to what the
manifest recorded) is not submitted again, so rerunning the command after a failure resubmits only the
missing shards.

A mixture file names each source's preset (`name`) and store (`store`), not where its raw copy lies: that is
`--raw-root DIR` (source NAME read from DIR/NAME) or `--raw NAME=PATH`. A source whose store is a pattern
`DIR/shard-*` is converted N ways into DIR/shard-000...; one whose store is a single path is converted by
one job into that store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latbot.cluster.launcher import LaunchError
from latbot.data.location import StoreDir, is_url, join

SHARD_PREFIX = "shard-"
LIST_NAME = "shards.txt"  # the set's list file, one store per line (latbot.data.mixture.resolve_stores)
JOBS_DIR = "jobs"  # under a single source's OUT: jobs.json and the jobs' logs


class ConvertPlanError(LaunchError):
    """A sharded or mixture-wide conversion that cannot be planned as asked (nothing was submitted)."""


@dataclass(frozen=True)
class ShardJob:
    """One conversion job: `src` (or its shard `shard` = (i, n)) into the store `out`. Plain data, so that it
    travels to a Slurm node as a pickle; the adapter is rebuilt there from its options."""

    adapter: dict[str, Any]  # the adapter's validated Config, as JSON
    src: str
    out: str  # this job's store: a path or an fsspec URL
    shard: tuple[int, int] | None  # None: the whole source into `out`
    image_size: int = 224
    resize_mode: str = "pad"
    cameras: tuple[str, ...] | None = None
    codec: str = "lz4"
    skip_bad: bool = False
    manifest_extra: dict[str, Any] | None = None


@dataclass
class SourcePlan:
    """The jobs of one source, and the set their stores form (`folder` holds them; None: one plain store)."""

    name: str
    jobs: dict[str, ShardJob]  # key → job, in shard order
    folder: Path | str | None = None
    names: list[str] = field(default_factory=list)  # the shard stores' names inside `folder`
    prefix: str = SHARD_PREFIX  # what the names start with: the set is `folder/PREFIX*`


def shard_names(count: int) -> list[str]:
    """The stores of an N-way split: shard-000 ... (zero-padded to at least 3 digits, so that they sort)."""
    width = max(3, len(str(count - 1)))
    return [f"{SHARD_PREFIX}{i:0{width}d}" for i in range(count)]


def plan_source(
    adapter_config, src: str | Path, out: str | Path, shards: int, *, name: str = "", prefix: str = SHARD_PREFIX,
    **options: Any,
) -> SourcePlan:  # fmt: skip
    """The N shard jobs of one source into the set folder `out` (`options`: ShardJob's conversion options)."""
    if shards < 1:
        raise ConvertPlanError(f"--shards: expected at least 1, got {shards}")
    adapter = adapter_config.model_dump(mode="json")
    names = [prefix + n.removeprefix(SHARD_PREFIX) for n in shard_names(shards)]
    key_prefix = f"{name}/" if name else ""
    jobs = {
        f"{key_prefix}{store}": ShardJob(
            adapter, str(Path(src).resolve()), str(join(out, store)), (i, shards), **options
        )
        for i, store in enumerate(names)
    }
    return SourcePlan(name=name, jobs=jobs, folder=out, names=names, prefix=prefix)


def plan_whole(adapter_config, src: str | Path, out: str | Path, *, name: str, **options: Any) -> SourcePlan:
    """One job converting the whole source into the single store `out`."""
    job = ShardJob(adapter_config.model_dump(mode="json"), str(Path(src).resolve()), str(out), None, **options)
    return SourcePlan(name=name, jobs={name: job})


def plan_mixture(
    path: str | Path,
    shards: int,
    *,
    raw_root: Path | None,
    raw: dict[str, Path],
    only: list[str] | None = None,
    **options: Any,
) -> tuple[Any, list[SourcePlan]]:
    """(the mixture, one plan per source) for a mixture file. Every source is checked before anything is
    submitted (its preset exists and does not refuse, its raw copy is there and is what the preset reads, its
    store can hold N shards); every problem is reported at once."""
    from latbot import registry
    from latbot.data.presets import check_source, load_preset, preset_names
    from latbot.errors import LatBotError
    from latbot.recipes.mixture import load_mixture

    mixture = load_mixture(path)
    names = [s.name for s in mixture.sources]
    unknown = sorted(set(only or []) - set(names)) + sorted(set(raw) - set(names))
    if unknown:
        raise ConvertPlanError(f"{path}: no source {', '.join(map(repr, unknown))} (it has {', '.join(names)})")
    plans, problems = [], []
    for s in mixture.sources:
        if only and s.name not in only:
            continue
        if s.name not in preset_names():
            problems.append(f"{s.name}: not a dataset preset (`latbot data presets`), so its format is unknown")
            continue
        try:
            folder, prefix = set_folder(s.store)
            if folder is None and shards > 1:
                raise ConvertPlanError(
                    f"store {s.store} is one store; to convert it {shards} ways write `store: {s.store}/shard-*` in "
                    "the mixture (a pattern of shard stores is sampled as one source), or give --shards 1"
                )
            preset = load_preset(s.name)
            if preset.refuse:
                raise ConvertPlanError(f"preset '{preset.name}' refuses to convert: {preset.refuse}")
            src = raw.get(s.name) or (raw_root / s.name if raw_root is not None else None)
            if src is None:
                raise ConvertPlanError(
                    f"where is its raw copy? give --raw-root DIR (DIR/{s.name}) or --raw {s.name}=PATH"
                )
            config = preset.adapter_config()
            if not Path(src).exists():
                raise ConvertPlanError(f"{src}: not found (the raw copy of {preset.reads})")
            check_source(preset, registry.build("datasets", config), Path(src))
            extra = {"preset": preset.name, "preset_reads": preset.reads, "frame_stride": preset.frame_stride}
            if folder is not None:
                plans.append(plan_source(config, src, folder, shards, name=s.name, prefix=prefix,
                                         manifest_extra=extra, **options))  # fmt: skip
            else:
                plans.append(plan_whole(config, src, s.store, name=s.name, manifest_extra=extra, **options))
        except LatBotError as e:
            problems.append(f"{s.name}: {e}")
    if problems:
        hint = "; convert the others with --only NAME (repeatable)" if len(problems) < len(mixture.sources) else ""
        raise ConvertPlanError(f"{path}: {len(problems)} source(s) cannot be converted{hint}:\n" + "\n".join(problems))
    return mixture, plans


def set_folder(store: Path | str) -> tuple[Path | str | None, str]:
    """(the folder, the stores' name prefix) of a mixture store that names a shard set `DIR/PREFIX*`; (None, "")
    for a single store. Other patterns cannot be written: they are refused."""
    from latbot.data.mixture import GLOB_CHARS

    text = str(store).rstrip("/")
    parent, _, last = text.rpartition("/")
    if not GLOB_CHARS & set(text):
        return None, ""
    if GLOB_CHARS & set(parent) or not last.endswith("*") or GLOB_CHARS & set(last[:-1]) or not parent:
        raise ConvertPlanError(
            f"store {store}: a pattern the conversion can write ends in one `PREFIX*` (e.g. `fractal/shard-*`)"
        )
    return (parent if is_url(text) else Path(parent)), last[:-1]


# -- is a job done -----------------------------------------------------------------------------------------------
def shard_complete(job: ShardJob) -> bool:
    """True when `job.out` holds the finished conversion of this job: an episode store whose manifest records
    this source, adapter and shard, whose commit log hashes to the manifest's `content_hash` and (local stores)
    whose Zarr metadata to its `metadata_hash`, and which no process is writing."""
    from latbot.artifacts import read_manifest
    from latbot.data.store import LOCK_NAME, LOG_NAME
    from latbot.errors import ArtifactError

    d = StoreDir(job.out)
    try:
        if not d.is_file("latbot.json") or not d.is_file(LOG_NAME):
            return False
        manifest = read_manifest(d.location, "episode_store")
        extra = manifest.extra
        if not _same_job(extra, job):
            return False
        log_hash = "sha256:" + hashlib.sha256(d.read_bytes(LOG_NAME)).hexdigest()
        if log_hash != manifest.content_hash:
            return False  # an append after the manifest was written: a conversion was cut short
        if d.is_url:
            return True
        from latbot.data.integrity import metadata_digest
        from latbot.ownership import held_by_other

        if held_by_other(d.location, LOCK_NAME) is not None:
            return False  # being written right now
        return extra.get("metadata_hash") is None or metadata_digest(Path(d.location)) == extra["metadata_hash"]
    except (ArtifactError, OSError, ValueError):
        return False


def _same_job(extra: dict, job: ShardJob) -> bool:
    recorded = extra.get("shard")
    shard = None if not isinstance(recorded, dict) else (recorded.get("index"), recorded.get("count"))
    adapter = extra.get("adapter") or {}
    return shard == job.shard and extra.get("source") == job.src and adapter.get("type") == job.adapter.get("type")


def check_outputs(plans: list[SourcePlan]) -> None:
    """Refuse, before anything is submitted, outputs that would make a wrong set: a set folder that is itself an
    artifact, another split's shard stores in it (the pattern would read them too), or a store made from another
    source or split (resuming it would mix two splits)."""
    from latbot.artifacts import read_manifest
    from latbot.errors import ArtifactError
    from latbot.ownership import manifest_kind

    problems = []
    folders = [str(plan.folder) for plan in plans if plan.folder is not None]
    shared = sorted({f for f in folders if folders.count(f) > 1})
    if shared:
        problems.append(f"{shared[0]}: holds the shard sets of two sources; give each source its own folder")
    for plan in plans:
        if plan.folder is not None and not is_url(plan.folder):
            folder = Path(plan.folder)
            if folder.exists() and not folder.is_dir():
                problems.append(f"{folder}: exists and is not a folder (it would hold the shard stores)")
                continue
            kind = manifest_kind(folder) if folder.is_dir() else None
            if kind is not None or (folder / "zarr.json").exists():
                problems.append(f"{folder}: is a '{kind or 'episode_store'}' itself, not a folder for shard stores")
                continue
            prefix = plan.prefix
            stale = sorted(
                p.name for p in (folder.glob(f"{prefix}*") if folder.is_dir() else [])
                if p.name not in plan.names and (p / "zarr.json").exists()
            )  # fmt: skip
            if stale:
                problems.append(
                    f"{folder}: holds {', '.join(stale[:3])}{', …' if len(stale) > 3 else ''}, not one of the "
                    f"{len(plan.names)} shard(s) of this split (another --shards?); the set {folder}/{prefix}* would "
                    "read it too: remove it, or choose another output"
                )
        for job in plan.jobs.values():
            try:
                extra = read_manifest(job.out, "episode_store").extra
            except ArtifactError:
                continue  # new, or a first conversion cut short: the conversion resumes or refuses it
            if not _same_job(extra, job):
                made = extra.get("shard") or "the whole source"
                made = f"shard {made['index']}/{made['count']}" if isinstance(made, dict) else made
                want = f"shard {job.shard[0]}/{job.shard[1]}" if job.shard else "the whole source"
                problems.append(
                    f"{job.out}: holds {made} of {extra.get('source')} ({(extra.get('adapter') or {}).get('type')}); "
                    f"this job writes {want} of {job.src} ({job.adapter.get('type')}): remove it, or choose another "
                    "output"
                )
    if problems:
        raise ConvertPlanError("\n".join(problems))


# -- the job -----------------------------------------------------------------------------------------------------
def convert_job(job: ShardJob) -> dict[str, Any]:
    """Run one job (in a Slurm job or a local subprocess; `run_jobs` also calls it here for a finished one, which
    returns at once): the conversion of `job.src` (its shard) into `job.out`, resumed where an earlier attempt
    stopped. Returns a summary (store, added, skipped, failed, episodes, notes)."""
    from latbot import registry
    from latbot.artifacts import read_manifest
    from latbot.data.convert import convert

    if shard_complete(job):
        extra = read_manifest(job.out, "episode_store").extra
        return {"store": job.out, "added": 0, "skipped": int(extra.get("episodes", 0)), "failed": [],
                "episodes": int(extra.get("episodes", 0)), "notes": list(extra.get("layout_notes", [])),
                "done_before": True}  # fmt: skip
    config = registry.get("datasets", job.adapter["type"]).Config.model_validate(job.adapter)
    result = convert(
        config, job.src, job.out, image_size=job.image_size, resize_mode=job.resize_mode,
        cameras=list(job.cameras) if job.cameras else None, codec=job.codec, skip_bad=job.skip_bad, progress=False,
        shard=job.shard, manifest_extra=job.manifest_extra,
    )  # fmt: skip
    summary = {"store": job.out, "added": result.added, "skipped": result.skipped, "failed": list(result.failed),
               "episodes": result.total_episodes, "notes": list(result.notes), "done_before": False}  # fmt: skip
    print(f"{job.out}: {result.added} episode(s) added, {result.skipped} already present, {len(result.failed)} "
          f"failed; {result.total_episodes} in the store", flush=True)  # fmt: skip
    return summary


# -- the whole run -----------------------------------------------------------------------------------------------
def run_conversion(plans: list[SourcePlan], launcher, folder: str | Path, *, say=print) -> dict[str, dict]:
    """Check the outputs, run every plan's jobs through the launcher (complete stores are not resubmitted), then
    write each set's list file. {key: the job's summary}."""
    from latbot.cluster.launcher import run_jobs

    check_outputs(plans)
    jobs = {key: job for plan in plans for key, job in plan.jobs.items()}
    if len(jobs) != sum(len(plan.jobs) for plan in plans) or len({job.out for job in jobs.values()}) != len(jobs):
        raise ConvertPlanError("two sources of the mixture write the same store; give each its own `store`")
    results = run_jobs(
        {key: (convert_job, (job,)) for key, job in jobs.items()},
        launcher,
        folder,
        done=lambda key: shard_complete(jobs[key]),
        label="convert",
        say=say,
    )
    for plan in plans:
        if plan.folder is not None:
            write_list(plan.folder, plan.names)
    return results


def write_list(folder: str | Path, names: list[str]) -> Path | str:
    """`folder/shards.txt`: the set's stores, one per line, relative to the folder (a mixture's `store` can name
    this file instead of the pattern; it names exactly this split's stores)."""
    from latbot.atomic import replace_file

    text = "# the shard stores of one conversion (latbot data convert --shards); one store per line\n"
    data = (text + "".join(f"{n}\n" for n in names)).encode()
    if is_url(folder):
        StoreDir(folder).write_atomic(LIST_NAME, data)
    else:
        replace_file(Path(folder) / LIST_NAME, data)
    return join(folder, LIST_NAME)
