"""Training-state checkpoints: torch distributed checkpoint (DCP) for the model and optimizer (sharded
under FSDP2), plus each rank's RNG states and data position — everything needed to continue exactly.

Layout: `RUN/checkpoints/step_00000100/` (DCP files, `rank<r>.pt`, `meta.json`) and `RUN/checkpoints/latest`.
A checkpoint is written into `.step_….tmp/` and renamed into place only when every rank has finished;
`latest` is then replaced atomically. A process killed mid-save leaves the previous checkpoint and
`latest` untouched (the stale temporary directory is removed by the next save). Older checkpoints beyond
`keep_last` are deleted. Rank files hold tensors and numbers only and are read with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latbot.errors import LatBotError
from latbot.train.distributed import World, barrier

LATEST = "latest"


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


def save(run_dir: Path, step: int, model, optimizer, world: World, extra: dict[str, Any], keep_last: int) -> Path:
    """Write the full training state after optimizer step `step` (collective: every rank calls it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(run_dir) / "checkpoints"
    final, tmp = root / f"step_{step:08d}", root / f".step_{step:08d}.tmp"
    if world.main:
        for stale in root.glob(".step_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(world)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process")
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save({"rng": _rng_state(), **extra}, tmp / f"rank{world.rank}.pt")
    barrier(world)
    if world.main:
        (tmp / "meta.json").write_text(json.dumps({"step": step, "world_size": world.size, **extra}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = root / f".{LATEST}.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, root / LATEST)
        kept = sorted(p for p in root.glob("step_*") if p.is_dir())
        for old in kept[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(world)
    return final


def latest(run_dir: Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if path.is_dir() else None


def load(run_dir: Path, model, optimizer, world: World) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG from the latest checkpoint; returns its extra state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = latest(run_dir)
    if path is None:
        raise CheckpointError(f"--resume {run_dir}: no checkpoint here (checkpoints/latest is missing)")
    meta = json.loads((path / "meta.json").read_text())
    if meta["world_size"] != world.size:
        raise CheckpointError(
            f"--resume {run_dir}: {path.name} was written by {meta['world_size']} process(es); resume with the "
            f"same number (torchrun --nproc-per-node {meta['world_size']})"
        )
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    rank_state = torch.load(path / f"rank{world.rank}.pt", weights_only=True)
    _set_rng_state(rank_state.pop("rng"))
    return {"step": meta["step"], **rank_state}
