"""Run directories: the one place that creates, reads and loads what `latbot train` writes.

A run directory (one per training stage run)::

    <out_dir>/<run_name>/
        latbot.json                  manifest: kind (= the stage), status running|complete, the resolved
                                     recipe (the run's only copy), parents, content hash, stage extras
        env.json                     versions and hardware the run started on
        checkpoints/step_<n>/        sharded training state (torch distributed checkpoint), for --resume
        weights/model.safetensors    full exported weights (written when the run completes)
        metrics.jsonl, tb/           training metrics

Everything else (stages, the policy, serve, eval, viz, grounding, diagnostics, the quickstart) opens
runs through `open_run` and the `load_*` functions here; model classes never read files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from latbot.artifacts import Manifest, ParentRef, hash_directory, read_manifest, write_manifest
from latbot.errors import ArtifactError, TrainingError

WEIGHTS = Path("weights") / "model.safetensors"
ENVIRONMENT = "env.json"
STUDENT_PREFIX = "student."  # where a distillation run keeps the student's weights in its state dict


@dataclass(frozen=True)
class Run:
    """An opened run directory: its checked manifest, its recipe, and its weights on demand."""

    path: Path
    manifest: Manifest

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def complete(self) -> bool:
        return self.manifest.status == "complete"

    @cached_property
    def recipe(self) -> Any:
        """The run's resolved recipe (a validated `Recipe` of its stage)."""
        from latbot.recipes import recipe_from_dict

        if self.manifest.recipe is None:
            raise ArtifactError(f"{self.path}: the manifest holds no recipe; the run is damaged, re-create it")
        return recipe_from_dict(self.manifest.recipe, str(self.path / "latbot.json"))

    @property
    def extra(self) -> dict[str, Any]:
        return self.manifest.extra

    def state_dict(self, device: str = "cpu", prefix: str = "") -> dict[str, Any]:
        """The exported weights (safetensors: never unpickled); with `prefix`, only those keys, stripped."""
        from safetensors.torch import load_file

        path = self.path / WEIGHTS
        if not path.is_file() or path.is_symlink():
            raise ArtifactError(f"{self.path}: {WEIGHTS} is missing; the run is damaged, re-create it")
        self.verify_weights()
        state = load_file(str(path), device=device)
        if not prefix:
            return state
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

    def verify_weights(self) -> None:
        """Check the exported weights against the manifest's content hash (unless `latbot --no-verify`)."""
        from latbot.ownership import verification_enabled

        if not verification_enabled() or getattr(self, "_verified", False):
            return
        actual = hash_directory(self.path / WEIGHTS.parent)
        if actual != self.manifest.content_hash:
            raise ArtifactError(
                f"{self.path / WEIGHTS.parent}: the weights differ from the run's manifest (hash {actual[:19]}…, "
                f"latbot.json says {self.manifest.content_hash[:19]}…): swapped or damaged; re-create the run, or "
                f"load it anyway with `latbot --no-verify ...`"
            )
        object.__setattr__(self, "_verified", True)

    def metrics(self) -> list[dict[str, Any]]:
        """The logged training metrics, one dict per logged step (metrics.jsonl); a torn last line (a run
        killed mid-write) is dropped."""
        import json

        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def parent(self, kind: str) -> ParentRef | None:
        return next((p for p in self.manifest.parents if p.kind == kind), None)


def open_run(path: str | Path, kind: str | Iterable[str] | None = None, *, complete: bool = True) -> Run:
    """Open a run directory; `kind` restricts the stages accepted; `complete` refuses an unfinished run."""
    path = Path(path)
    if kind is None:
        from latbot import registry

        kind = registry.stage_names()
    manifest = read_manifest(path, kind)
    if complete and manifest.status == "failed":
        raise ArtifactError(
            f"{path}: the {manifest.kind} run failed ({manifest.extra.get('error', 'no message recorded')}); "
            f"continue it with `latbot train --resume {path}` once the cause is fixed"
        )
    if complete and manifest.status != "complete":
        raise ArtifactError(
            f"{path}: the {manifest.kind} run has not finished (no exported weights yet); "
            f"continue it with `latbot train --resume {path}`"
        )
    return Run(path, manifest)


# -- creating and finishing runs (the training side) ------------------------------------------------------
def new_run_dir(recipe, recipe_path: Path | None) -> Path:
    """Where a new run of `recipe` goes: `log.out_dir/log.run_name` (or a timestamped name), which must be a
    new or empty folder directly inside `log.out_dir`. Checks only; writes nothing."""
    from latbot.ownership import OwnershipError, claim

    out_dir = Path(recipe.log.out_dir)
    name = recipe.log.run_name or _timestamped(recipe, recipe_path)
    run_dir = out_dir / name
    if Path(name).name != name or name in ("", ".", "..") or run_dir.resolve().parent != out_dir.resolve():
        raise TrainingError(f"log.run_name {name!r}: must be a plain folder name inside log.out_dir ({out_dir})")
    if _failed_before_a_checkpoint(run_dir, recipe.stage):
        return run_dir  # replaced by `create_run`, under the run's lock
    if (run_dir / "checkpoints").exists() or (run_dir / "latbot.json").exists():
        raise TrainingError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or set log.run_name")
    try:
        claim(run_dir, (), option="log.run_name", fix="set another log.run_name or log.out_dir")
    except OwnershipError as e:
        raise TrainingError(str(e)) from None
    return run_dir


def mark_failed(run_dir: Path, error: BaseException) -> None:
    """Record that the run's command failed: status "failed" and the one-line error in the manifest (main
    process only). The run stays resumable from its last checkpoint; a run that failed before its first
    checkpoint is replaced when the same recipe is run again."""
    try:
        run = open_run(run_dir, complete=False)
    except ArtifactError:
        return  # nothing of ours to mark
    if run.manifest.status == "complete":
        return
    message = (str(error).strip().splitlines() or [type(error).__name__])[0][:500]
    if isinstance(error, KeyboardInterrupt):
        message = "interrupted (Ctrl-C)"
    write_manifest(
        run_dir,
        run.kind,
        recipe=run.manifest.recipe,
        parents=run.manifest.parents,
        extra={**run.manifest.extra, "error": f"{type(error).__name__}: {message}"},
        content_hash="",
        status="failed",
    )


def _failed_before_a_checkpoint(run_dir: Path, stage: str) -> bool:
    """A run of `stage` marked failed that has no checkpoint to resume from: nothing in it is worth keeping."""
    try:
        run = open_run(run_dir, stage, complete=False)
    except ArtifactError:
        return False
    has_checkpoint = any((run_dir / "checkpoints").glob("step_*"))
    return run.manifest.status == "failed" and not has_checkpoint


def _clear_failed(run_dir: Path, stage: str) -> None:
    """Empty a failed run of this stage (its lock file stays: the caller holds it)."""
    import shutil

    from latbot.ownership import LOCK_NAME

    print(f"{run_dir}: replacing a {stage} run that failed before its first checkpoint")
    for entry in run_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def lock_run(run_dir: Path):
    """The run's writer lock (`latbot.ownership.writer_lock`): one `latbot train` per run at a time."""
    from latbot.ownership import writer_lock

    return writer_lock(run_dir, "run")


def create_run(run_dir: Path, recipe, parents: list[ParentRef], environment: dict) -> Path:
    """Write the new run's manifest (status running) and environment into `run_dir` (from `new_run_dir`,
    locked with `lock_run`). Call on the main process only."""
    from latbot.recipes import to_dict

    if _failed_before_a_checkpoint(run_dir, recipe.stage):  # checked again now that this process holds the lock
        _clear_failed(run_dir, recipe.stage)
    elif (run_dir / "latbot.json").exists():
        raise TrainingError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or set log.run_name")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ENVIRONMENT).write_text(json.dumps(environment, indent=2))
    write_manifest(run_dir, recipe.stage, recipe=to_dict(recipe), parents=parents, content_hash="", status="running")
    return run_dir


def _timestamped(recipe, recipe_path: Path | None) -> str:
    """A fresh run name: the recipe's stem and the time, with a counter if that name is taken (two runs
    started within one second)."""
    base = f"{recipe_path.stem if recipe_path else recipe.stage}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, k = base, 1
    while (Path(recipe.log.out_dir) / name).exists():
        k += 1
        name = f"{base}-{k}"
    return name


def resumable(path: str | Path) -> Run:
    """The run to continue with `--resume`: any run of a training stage, finished or not, whose files are
    its own (no link out of the run, no FIFO where a file is written)."""
    try:
        run = open_run(path, complete=False)
    except ArtifactError as e:
        raise TrainingError(f"--resume {path}: {e}") from e
    check_run_files(Path(path))
    return run


# what a run directory holds: the names training writes, and whether each is a file or a folder
RUN_FILES = {"metrics.jsonl": "file", ENVIRONMENT: "file", "weights": "dir", "tb": "dir", "checkpoints": "dir"}


def check_run_files(run_dir: Path) -> None:
    """Refuse a run in which a path training writes is a link or not what it should be (a `metrics.jsonl`
    linked to someone's file would be overwritten; a FIFO would hang the resume)."""
    for name, what in RUN_FILES.items():
        path = run_dir / name
        if not path.exists() and not path.is_symlink():
            continue
        ok = not path.is_symlink() and (path.is_file() if what == "file" else path.is_dir())
        if not ok:
            raise TrainingError(
                f"--resume {run_dir}: {name} is a link or not a regular {'file' if what == 'file' else 'folder'}; "
                "a run's files must be its own (this run directory was altered)"
            )
    weights = run_dir / WEIGHTS
    if weights.is_symlink() or (weights.exists() and not weights.is_file()):
        raise TrainingError(f"--resume {run_dir}: {WEIGHTS} is a link or not a regular file")


def finish_run(run_dir: Path, state: dict[str, Any], extra: dict[str, Any]) -> Manifest:
    """Write the full weights and mark the run complete (hash over the weights). Main process only."""
    from safetensors.torch import save_file

    run = open_run(run_dir, complete=False)
    weights = run_dir / WEIGHTS
    weights.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    return write_manifest(
        run_dir,
        run.kind,
        recipe=run.manifest.recipe,
        parents=run.manifest.parents,
        extra=extra,
        content_hash=hash_directory(weights.parent),
    )


# -- building what a run describes, with its weights --------------------------------------------------------
def trained_model(path: str | Path, kind: str | Iterable[str] | None = None, device: str = "cpu"):
    """(the model of a finished training run, its stage object), in eval mode on `device`: the run's stage
    (looked up in the registry by the manifest's kind) builds it from the saved recipe and loads the weights."""
    from latbot import registry

    run = open_run(path, kind)
    stage = registry.get("stages", run.kind)(run.recipe)
    return stage.trained_model(run.state_dict(device), run.extra).to(device), stage


def load_lam(path: str | Path, device: str = "cpu"):
    """The latent action model of a LAM run, in eval mode."""
    return trained_model(path, "lam", device)[0]


def load_student(path: str | Path, device: str = "cpu"):
    """The distilled student of a distillation run, in eval mode."""
    model, stage = trained_model(path, "distill", device)
    return stage.vlm(model)


def student_weights(path: str | Path) -> dict[str, Any]:
    """The distilled student's weights of a distillation run, to initialise a finetuning run."""
    return open_run(path, "distill").state_dict(prefix=STUDENT_PREFIX)


def load_finetuned(path: str | Path, device: str = "cpu"):
    """(VisionLanguageAction in eval mode, target) of a finetuning run; `target` says what the policy was
    trained for (embodiment, cameras, image size, masks, normalisation statistics)."""
    model, _ = trained_model(path, "finetune", device)
    return model, open_run(path, "finetune").extra["target"]


def load_vlm(path: str | Path, device: str = "cpu"):
    """The VLM of any training run whose stage has one (a LAM's encoder, a distilled student, a finetuned
    policy's student), for analysis: what the run's stage names with `Stage.vlm`."""
    model, stage = trained_model(path, None, device)
    vlm = stage.vlm(model)
    if vlm is None:
        raise ArtifactError(
            f"{path}: a '{stage.recipe.stage}' run holds no VLM (expected a lam, distill or finetune run)"
        )
    return vlm
