"""Training-state checkpoints: torch distributed checkpoint (DCP) for the model and optimizer (sharded
under FSDP2), plus each rank's RNG states and the run's data position — everything needed to continue exactly.

Layout: `RUN/checkpoints/step_00000100/` (DCP files, `rank<r>.pt`, `meta.json`) and `RUN/checkpoints/latest`.
A checkpoint is written into `.step_….tmp/` and renamed into place only when every rank has finished;
`latest` is then replaced atomically. A process killed mid-save leaves the previous checkpoint and
`latest` untouched (the stale temporary directory is removed by the next save). Older checkpoints beyond
`keep_last` are deleted.

Elastic resume: a checkpoint written by N processes loads on M. DCP reshards the model and optimizer state
(every tensor is stored with its global shape and each shard's offsets; a loading rank reads the pieces of
its own shard), so they are the same values at any world size. The data position is the run's global
sample count (`global_samples` in meta.json, identical for every rank; the sampler is indexed by the global
sample, so rank r of M continues at global_samples / M of its interleaved share). The RNG states of
`rank<r>.pt` exist only for the old ranks and belong to streams that the new ranks' shares of the data no
longer match, so at another world size every rank re-derives them from (seed, step, rank)
(`derive_rng`); at the same world size each rank restores its saved states and the resume is bit-exact.
A model whose training step draws no random numbers continues with the same losses up to the
floating-point order of the gradient reduction; one that does (dropout, noise) continues with other,
equally distributed draws.

A run directory may come from elsewhere (a colleague's half-trained model), so nothing in it is trusted:

- `meta.json` records the sha256 of every file of the checkpoint; a checkpoint whose files do not match is
  skipped, and resume takes the newest one that verifies and says which one it took.
- `latest` is a plain name read as text (never a followed link) and must name a checkpoint inside the run.
- DCP's `.metadata` is a pickle: it is read by `RestrictedUnpickler`, which builds only the classes DCP's
  metadata is made of (anything else is refused before it is built, naming the file), and DCP's byte
  entries (optimizer hyper-parameters) and the rank files are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latbot.atomic import replace_file
from latbot.errors import LatBotError
from latbot.train.distributed import World, barrier

LATEST = "latest"
STEP_NAME = re.compile(r"step_\d{8}")
META_LIMIT = 1 << 20  # bytes of meta.json / latest read at most


class CheckpointError(LatBotError):
    """No usable checkpoint, or one written by a different run layout."""


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": torch.tensor(py_state[1], dtype=torch.int64),
        "python_version": int(py_state[0]),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), None))


def derive_rng(seed: int, step: int, rank: int) -> None:
    """Seed torch (every device), numpy's and Python's global RNGs from (seed, step, rank): what a rank
    restores when the checkpoint was written at another world size (it has no saved states of its own)."""
    words = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, step, rank, 0x1A7B07]).generate_state(4)
    torch.manual_seed(int(words[0]) << 32 | int(words[1]))
    np.random.seed(words)
    random.seed(int(words[2]) << 32 | int(words[3]))


def save(run_dir: Path, step: int, model, optimizer, world: World, extra: dict[str, Any], keep_last: int) -> Path:
    """Write the full training state after optimizer step `step` (collective: every rank calls it). `extra`
    (JSON values, e.g. `global_samples`) goes to every rank's file and, as rank 0 has it, to meta.json."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(run_dir) / "checkpoints"
    final, tmp = root / f"step_{step:08d}", root / f".step_{step:08d}.tmp"
    if world.main:
        for stale in root.glob(".step_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(world)
    _state_for_every_parameter(optimizer)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process")
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save({"rng": _rng_state(), **extra}, tmp / f"rank{world.rank}.pt")
    barrier(world)
    if world.main:
        meta = {"step": step, "world_size": world.size, **extra, "files": _file_hashes(tmp)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        replace_file(root / LATEST, final.name)
        kept = sorted(p for p in root.glob("step_*") if p.is_dir())
        for old in kept[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(world)
    return final


def _state_for_every_parameter(optimizer) -> None:
    """Give every trainable parameter that has never had a gradient (a head no batch has reached yet, a layer
    a model does not use) the AdamW state of a parameter before its first step: step 0, zero moments. AdamW
    treats that exactly like no state, and the checkpoint then holds an entry for every parameter, which is
    what loading it into a fresh optimizer expects."""
    import torch

    for group in optimizer.param_groups:
        on_device = group.get("fused") or group.get("capturable")
        for p in group["params"]:
            if not p.requires_grad or optimizer.state.get(p):
                continue
            state = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu"),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
            if group.get("amsgrad"):
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            optimizer.state[p] = state


def _file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file of a checkpoint (meta.json itself excepted), by name."""
    out = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name != "meta.json":
            with path.open("rb") as f:
                out[path.name] = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    return out


def _root(run_dir: Path) -> Path:
    root = Path(run_dir) / "checkpoints"
    if root.is_symlink() or (root.exists() and Path(run_dir).resolve() not in root.resolve().parents):
        raise CheckpointError(f"{root}: is a link out of the run; a run's checkpoints must be inside it")
    return root


def _read_small(path: Path) -> str:
    """A small text file of the run, never through a link and never past META_LIMIT bytes."""
    if path.is_symlink() or not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    with path.open("rb") as f:
        data = f.read(META_LIMIT + 1)
    if len(data) > META_LIMIT:
        raise CheckpointError(f"{path}: larger than {META_LIMIT} bytes")
    return data.decode("utf-8", errors="replace")


def _pointed(run_dir: Path) -> Path | None:
    """The checkpoint `latest` names, if it names one inside the run (None if there is no pointer)."""
    root = _root(run_dir)
    pointer = root / LATEST
    if not pointer.exists() and not pointer.is_symlink():
        return None
    name = _read_small(pointer).strip()
    if not STEP_NAME.fullmatch(name):
        raise CheckpointError(f"{pointer}: names {name[:60]!r}, not a checkpoint of this run (step_NNNNNNNN)")
    if (root / name).is_symlink():
        raise CheckpointError(f"{root / name}: is a link, not a checkpoint inside the run")
    return root / name


def latest(run_dir: Path) -> Path | None:
    """The checkpoint `latest` points to, when it is a checkpoint directory inside the run; else None."""
    try:
        path = _pointed(run_dir)
    except CheckpointError:
        return None
    return path if path is not None and path.is_dir() and not path.is_symlink() else None


def checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint directory of the run, newest first (what resume may fall back to)."""
    root = _root(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: p.name, reverse=True)


def verify(path: Path) -> dict[str, Any]:
    """The checkpoint's meta.json when every file it lists is present with its recorded hash (and DCP's
    metadata reads through the restricted unpickler); a `CheckpointError` saying what is wrong otherwise."""
    meta = _read_meta(path)
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(
            f"{path / 'meta.json'}: lists no file hashes (written by an older LatBot, or damaged; a checkpoint of an "
            f"older LatBot resumes with `latbot --no-verify train --resume RUN`, which still reads it safely)"
        )
    actual = _file_hashes(path)
    for name, digest in files.items():
        if name not in actual:
            raise CheckpointError(f"{path / str(name)[:80]}: missing")
        if actual[name] != digest:
            raise CheckpointError(f"{path / name}: content differs from the hash in meta.json (damaged or edited)")
    unlisted = sorted(set(actual) - set(files))
    if unlisted:
        raise CheckpointError(f"{path / unlisted[0]}: a file meta.json does not list")
    read_dcp_metadata(path)
    return meta


def _read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's meta.json, checked to hold an integer step and world size."""
    try:
        meta = json.loads(_read_small(path / "meta.json"))
    except ValueError as e:
        raise CheckpointError(f"{path / 'meta.json'}: not valid JSON ({e})") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("step"), int) and isinstance(meta.get("world_size"), int)):
        raise CheckpointError(f"{path / 'meta.json'}: no integer step / world_size; the checkpoint is damaged")
    return meta


def _unverified(path: Path) -> dict[str, Any]:
    """`latbot --no-verify`: no hashes, but still only regular files of this checkpoint are read."""
    meta = _read_meta(path)
    for p in path.iterdir():
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            raise CheckpointError(f"{p}: not a regular file")
    read_dcp_metadata(path)
    return meta


def choose(run_dir: Path, verify_files: bool = True) -> tuple[Path, dict[str, Any], list[str]]:
    """(checkpoint, its meta, notes): the one `latest` names when it verifies, else the newest that does.
    The notes say what was skipped and why; no usable checkpoint is a `CheckpointError` listing the reasons."""
    notes: list[str] = []
    try:
        first = _pointed(run_dir)
    except CheckpointError as e:
        notes.append(f"{e}; ignored")
        first = None
    candidates = ([first] if first is not None else []) + [p for p in checkpoints(run_dir) if p != first]
    for path in candidates:
        try:
            meta = verify(path) if verify_files else _unverified(path)
        except UnsafeCheckpointError:
            raise
        except (CheckpointError, ValueError, OSError) as e:
            notes.append(f"skipped {path.name}: {e}")
            continue
        return path, meta, notes
    if not candidates:
        raise CheckpointError(f"--resume {run_dir}: no checkpoint here (no checkpoints/step_* directory)")
    raise CheckpointError(f"--resume {run_dir}: no usable checkpoint ({'; '.join(notes)})")


def _choose_on_main(run_dir: Path, world: World, verify_files: bool) -> tuple[Path, dict[str, Any], list[str]]:
    """`choose` on the main process (it hashes every file once, not once per rank); the others take its
    answer, or raise its error."""
    if world.size == 1:
        return choose(run_dir, verify_files)
    import torch.distributed as dist

    box: list[Any] = [None]
    if world.main:
        try:
            path, meta, notes = choose(run_dir, verify_files)
            box = [(path.name, meta, notes, None)]
        except Exception as e:  # any failure is broadcast: the other ranks must not wait for an answer forever
            box = [(None, None, None, str(e) if isinstance(e, CheckpointError) else f"{run_dir}: {e!r}")]
    dist.broadcast_object_list(box, src=0)  # the ranks of one job trust each other
    name, meta, notes, error = box[0]
    if error is not None:
        raise CheckpointError(error)
    return _root(run_dir) / name, meta, notes


def load(run_dir: Path, model, optimizer, world: World, seed: int = 0) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG from the newest checkpoint that verifies; returns its
    extra state with "step" and "global_samples" (the run's sample count, the same on every rank).

    At another world size than the checkpoint's, DCP reshards model and optimizer, and the RNG is
    re-derived from (`seed`, step, rank) instead of read from a rank file (module docstring)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from latbot.ownership import verification_enabled

    path, meta, notes = _choose_on_main(run_dir, world, verification_enabled())
    if world.main:
        for note in notes:
            print(f"warning: {note}")
        if notes:
            print(f"resuming from {path.name}, the newest checkpoint that verifies")
    elastic = meta["world_size"] != world.size
    if elastic and world.main:
        print(
            f"resuming {path.name}, written by {meta['world_size']} process(es), on {world.size}: model and "
            f"optimizer resharded, data from global sample {_global_samples(path, meta)}, RNG re-derived per rank"
        )
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        try:
            with _quiet_dcp():
                dcp.load(state, storage_reader=safe_reader(path), planner=safe_load_planner(path))
        except (Exception, CheckpointException) as e:  # DCP wraps ranks' failures (a BaseException)
            failures = getattr(e, "failures", {}) or {}
            raised = [f[0] if isinstance(f, tuple) else f for f in failures.values()]  # (exception, stack)
            unsafe = [f for f in raised if isinstance(f, CheckpointError)]
            if unsafe:
                raise unsafe[0] from None
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{path}: cannot be loaded ({type(e).__name__}: {str(e)[:300]})") from e
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    if elastic:  # no rank file of this rank's stream: rank 0's extra state from meta.json, RNG re-derived
        rank_state = {k: v for k, v in meta.items() if k not in ("step", "world_size", "files")}
        derive_rng(seed, meta["step"], world.rank)
    else:
        rank_state = _load_weights_only(path / f"rank{world.rank}.pt")
        _set_rng_state(rank_state.pop("rng"))
    return {**rank_state, "step": meta["step"], "global_samples": _global_samples(path, meta)}


def _global_samples(path: Path, meta: dict[str, Any]) -> int:
    """The run's sample count at the checkpoint: `global_samples`, or (a checkpoint of an older LatBot, which
    recorded each rank's count, the same on every rank) `samples` × the world size that wrote it."""
    value = meta.get("global_samples")
    if value is None and isinstance(meta.get("samples"), int):
        value = meta["samples"] * meta["world_size"]
    if not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{path / 'meta.json'}: no sample count (global_samples); the checkpoint is damaged")
    return value


@contextlib.contextmanager
def _quiet_dcp():
    """DCP logs a failed read's traceback before raising it; the error LatBot raises says it in one line."""
    import logging

    logger = logging.getLogger("torch.distributed.checkpoint")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- reading DCP without unpickling arbitrary objects -------------------------------------------------------
class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file asks to build an object that checkpoint metadata never holds (a planted payload)."""


def _allowed() -> dict[tuple[str, str], Any]:
    import pathlib

    import torch.distributed.checkpoint.filesystem as fs
    import torch.distributed.checkpoint.metadata as md
    import torch.serialization

    allowed: dict[tuple[str, str], Any] = {
        (md.__name__, name): obj
        for name, obj in vars(md).items()
        if isinstance(obj, type) and obj.__module__ == md.__name__
    }
    allowed[(fs.__name__, "_StorageInfo")] = fs._StorageInfo
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout
    allowed[("pathlib", "PosixPath")] = pathlib.PosixPath
    allowed[("pathlib", "PurePosixPath")] = pathlib.PurePosixPath
    allowed[("collections", "OrderedDict")] = __import__("collections").OrderedDict
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = getattr(torch, name)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Builds only the classes of DCP's checkpoint metadata (dataclasses of torch.distributed.checkpoint,
    torch.Size, dtypes, layouts, paths); any other global is refused before it is looked up."""

    def __init__(self, file, where: Path):
        super().__init__(file)
        self.where = where
        self.allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        obj = self.allowed.get((module, name))
        if obj is None:
            raise UnsafeCheckpointError(
                f"{self.where}: refused to unpickle {module}.{name} (not part of a checkpoint's metadata); this "
                f"checkpoint was not written by LatBot and may run code; do not resume it"
            )
        return obj


def read_dcp_metadata(path: Path):
    """DCP's `.metadata` of a checkpoint directory, through `RestrictedUnpickler`."""
    meta_path = Path(path) / ".metadata"
    if meta_path.is_symlink() or not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: missing")
    with meta_path.open("rb") as f:
        try:
            metadata = RestrictedUnpickler(f, meta_path).load()
        except UnsafeCheckpointError:
            raise
        except Exception as e:  # a damaged pickle: any of pickle's many error types
            raise CheckpointError(f"{meta_path}: unreadable ({type(e).__name__}: {e})") from None
    _check_storage_paths(Path(path), metadata, meta_path)
    return metadata


def _check_storage_paths(path: Path, metadata: Any, meta_path: Path) -> None:
    """Every file DCP will read must be a plain name of a regular file in this checkpoint (a planted metadata
    could name `../../x`, an absolute path or a FIFO: reads outside the run, or a hang)."""
    storage = getattr(metadata, "storage_data", None)
    if not isinstance(storage, dict):
        raise CheckpointError(f"{meta_path}: holds no storage table; the checkpoint is damaged")
    for info in storage.values():
        name = getattr(info, "relative_path", None)
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            raise UnsafeCheckpointError(
                f"{meta_path}: names {str(name)[:80]!r} as a data file, not a file of this checkpoint; do not resume it"
            )
        target = path / name
        if target.is_symlink() or not target.is_file():
            raise CheckpointError(f"{target}: missing or not a regular file")


def _safe_reader_classes():
    from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class _SafeReader(FileSystemReader):
        """DCP's file reader with the metadata read by `read_dcp_metadata`."""

        def read_metadata(self, *args: Any, **kwargs: Any):
            metadata = read_dcp_metadata(Path(self.path))
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class _SafeLoadPlanner(DefaultLoadPlanner):
        """DCP's default planner, reading byte entries with `weights_only=True`."""

        def __init__(self, where: Path):
            super().__init__()
            self.where = where

        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            obj = _load_weights_only(value, f"{self.where} ({read_item.dest_index.fqn})")
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return _SafeReader, _SafeLoadPlanner


def safe_reader(path: Path):
    """DCP's FileSystemReader for `path`, reading metadata through `RestrictedUnpickler`."""
    return _safe_reader_classes()[0](str(path))


def safe_load_planner(where: Path):
    """DCP's default load planner, with byte entries read by `torch.load(weights_only=True)`."""
    return _safe_reader_classes()[1](where)


def _load_weights_only(source, where: object = None) -> Any:
    """`torch.load(weights_only=True)`; an object it refuses to build is an `UnsafeCheckpointError`."""
    try:
        return torch.load(source, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if "global" in line.lower()]
        first = (lines[0] if lines else type(e).__name__)[:200]
        raise UnsafeCheckpointError(
            f"{where or source}: refused to unpickle it with weights_only ({first}); this checkpoint was not "
            f"written by LatBot and may run code; do not resume it"
        ) from None
