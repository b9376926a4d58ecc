"""What every training stage shares: the run's life cycle around the training loop.

    recipe ─▶ Stage(recipe).prepare()      every check that can fail, before anything is written
           ─▶ run directory                 new (manifest "running"), or the one given to --resume
           ─▶ train(build_model, build_data) latbot.train.loop: steps, checkpoints, exact resume
           ─▶ export                        weights + manifest "complete" with the stage's `extra()`

A stage subclass supplies the hooks; `Stage.run` is the same for all of them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

from latbot.config import PluginConfig
from latbot.errors import TrainingError


class Stage:
    """Base of `stages` plugins. Subclasses set `Config` (their recipe class, ``stage: Literal[name]``) and
    implement `build_model` and `build_data`; the other hooks are optional."""

    Config: ClassVar[type]
    # Format version of this stage's runs. 2: the manifest is written when the run starts (status "running")
    # and is the run's only copy of its resolved recipe (version 1 kept a second copy in a YAML file).
    format_version: ClassVar[int] = 2

    def __init__(self, recipe):
        self.recipe = recipe

    # -- hooks -------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check everything that can be checked before the run directory exists (data, parents)."""

    def parents(self) -> list:
        """The artifacts this run is made from (`latbot.artifacts.ParentRef`s), recorded in its manifest."""
        return []

    def build_model(self):
        raise NotImplementedError

    def build_data(self, world) -> tuple[Any, Any]:
        """(dataset, sampler with a settable `position`) for this rank."""
        raise NotImplementedError

    def extra(self, model) -> dict[str, Any]:
        """What the stage records in the finished run's manifest besides the recipe."""
        return {}

    def on_log(self, model, batch) -> dict[str, float]:
        """Extra scalars computed at each log step (single process only)."""
        return {}

    # -- shared helpers ----------------------------------------------------------------------------------------
    def sources(self) -> list:
        """The recipe's episode stores (a mixture file is resolved into sources when the recipe loads)."""
        sources = list(self.recipe.data.sources)
        if not sources:
            raise TrainingError(
                "data.sources is empty: point the recipe at episode stores, e.g. "
                "--set data.sources='[{store: stores/mt10}]' (or data.mixture: recipes/mixtures/...yaml)"
            )
        return sources

    def source_parents(self) -> list:
        from latbot.artifacts import parent_ref
        from latbot.data.mixture import resolve_stores

        return [parent_ref(path, "episode_store") for s in self.sources() for path in resolve_stores(s.store)]

    # -- the life cycle --------------------------------------------------------------------------------------
    @classmethod
    def run(cls, recipe, resume: Path | None = None, recipe_path: Path | None = None) -> Path:
        """Train this stage as `recipe` says, or continue the run `resume` with its saved recipe."""
        from latbot import runs
        from latbot.train import distributed
        from latbot.train.loop import export, train
        from latbot.train.metrics import environment

        if resume is not None:
            recipe = runs.resumable(resume).recipe
        stage = cls(recipe)
        stage.prepare()
        world = distributed.init(recipe.dist.backend)
        try:
            run_dir = None
            if world.main:
                run_dir = Path(resume) if resume is not None else runs.new_run_dir(recipe, recipe_path)
            with runs.lock_run(run_dir) if world.main else contextlib.nullcontext():
                if world.main and resume is None:
                    runs.create_run(run_dir, recipe, stage.parents(), environment(world.size))
                run_dir = _broadcast_path(run_dir, world)
                has_on_log = type(stage).on_log is not Stage.on_log and recipe.dist.strategy == "none"
                try:
                    model = train(
                        recipe,
                        run_dir,
                        stage.build_model,
                        stage.build_data,
                        world,
                        resume is not None,
                        on_log=stage.on_log if has_on_log else None,
                    )
                    export(run_dir, model, world, stage.extra(model))
                except BaseException as e:  # the run says it failed, and why (SIGKILL leaves it "running")
                    if world.main:
                        runs.mark_failed(run_dir, e)
                    raise
            if world.main:
                print(f"done: {run_dir}")
            return run_dir
        finally:
            distributed.shutdown(world)


def _broadcast_path(path: Path | None, world) -> Path:
    """The main process's run directory on every rank (its name may hold a timestamp)."""
    if world.size == 1:
        return path
    import torch.distributed as dist

    box = [str(path) if path is not None else None]
    dist.broadcast_object_list(box, src=0)  # the ranks of one job trust each other
    return Path(box[0])


def check_stage_config(config: type, name: str) -> str | None:
    """The registry's contract check for a stage's `Config`: a recipe class with ``stage: Literal[name]``.
    Returns what is wrong, or None."""
    import typing

    from latbot.recipes.schema import RecipeBase

    if not (isinstance(config, type) and issubclass(config, RecipeBase)) or issubclass(config, PluginConfig):
        return "must have a nested `Config` that subclasses latbot.recipes.schema.RecipeBase (its recipe)"
    field = config.model_fields.get("stage")
    annotation = field.annotation if field is not None else None
    literal = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()
    if literal != (name,):
        return f'its Config must declare `stage: Literal["{name}"]` to match the registered name'
    return None
