"""Run logging: a JSONL metrics file, TensorBoard scalars, and the run's environment."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class MetricsLog:
    """Appends one JSON object per logged step to `metrics.jsonl` (and to TensorBoard and Weights & Biases
    when enabled). On resume, records past the resumed step (written after the checkpoint) are dropped first."""

    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        tensorboard: bool,
        resume_step: int | None = None,
        wandb=None,
        config: dict | None = None,
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        self.wandb = None
        if not enabled:
            return
        if wandb is not None and wandb.mode != "disabled":
            self.wandb = _wandb_run(Path(run_dir), wandb, config or {})
        if resume_step is not None and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if _step(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tb"))

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_run(run_dir: Path, config, recipe: dict):
    """The W&B run of a LatBot run: one id per run directory (so a resumed run continues the same W&B run),
    its files under `run_dir/wandb/`, the resolved recipe as its config."""
    import hashlib
    import os

    try:
        import wandb
    except ImportError as e:
        from latbot.errors import MissingExtraError

        raise MissingExtraError("log.wandb (Weights & Biases)", "wandb", e.name or "wandb") from e
    os.environ.setdefault("WANDB_SILENT", "true")
    run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return wandb.init(
        project=config.project,
        entity=config.entity,
        mode=config.mode,
        tags=list(config.tags) or None,
        dir=str(run_dir),
        name=run_dir.name,
        id=run_id,
        resume="allow",
        config=recipe,
    )


def _step(line: str) -> float:
    """The step of a metrics line; a torn or foreign line (a kill mid-write) counts as past every step, so
    resume drops it."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, TypeError, KeyError):
        return float("inf")
    return step if isinstance(step, int) else float("inf")


def environment(world_size: int) -> dict[str, Any]:
    """Versions, git commit and machine, saved with every run."""
    import importlib.metadata as md

    versions = {}
    for name in ("latbot", "torch", "transformers", "diffusers", "numpy", "zarr"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "git_commit": commit,
        "host": socket.gethostname(),
        "world_size": world_size,
    }


def effective_rank(z: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of latents (N, ..., D) flattened to (N, ·D); 1 means
    every sample gives the same direction (collapse), up to min(N, dims) when they spread evenly. Logged by
    the LAM stage while training, and reported by `latbot.analysis.diagnostics`."""
    import torch

    x = z.reshape(z.shape[0], -1).double()
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
