"""What every training stage shares: the stage object, and the run's life cycle around the training loop.

    recipe ─▶ Stage(recipe).validate()     model-side checks (no file read)
           ─▶ .prepare()                    every check that reads files, before anything is written
           ─▶ run directory                 new (manifest "running"), or the one given to --resume
           ─▶ train(build_model, build_data, train_step)  latbot.train.loop: steps, checkpoints, resume
           ─▶ export                        weights + manifest "complete" with the stage's `extra()`

A stage subclass supplies the hooks; `Stage.run` is the same for all of them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from latbot.errors import TrainingError

if TYPE_CHECKING:  # annotations only: loading a recipe imports its stage, and must not import torch
    import torch
    from torch import nn


class Stage:
    """Base of `stages` plugins: everything the toolkit knows about a stage's model, in one object.

    A subclass sets `Config` (its recipe class, ``stage: Literal[name]``) and implements `architecture`,
    `example_batch` and `build_data`; the other hooks have defaults. Every command asks the stage, never
    the model: `latbot train` (`build_model`, `train_step`), `recipe validate` and `plan` (`validate`,
    `architecture` on the meta device, `example_batch`), `recipe show --params` (`components`), the run
    readers (`trained_model`, `vlm`), `plugins check` and the FSDP contract test.
    """

    Config: ClassVar[type]
    # Format version of this stage's runs. 2: the manifest is written when the run starts (status "running")
    # and is the run's only copy of its resolved recipe (version 1 kept a second copy in a YAML file).
    format_version: ClassVar[int] = 2
    # True when the stage's data are the recipe's episode stores (`data.sources`): `plugins check` then skips
    # `build_data` for a tiny recipe that names none.
    reads_stores: ClassVar[bool] = False

    def __init__(self, recipe):
        self.recipe = recipe

    # -- the model: what it is, what it is made from, what it eats -------------------------------------------
    def validate(self) -> None:
        """Model-side checks of the recipe that read no file (shapes that must agree, horizons, frame counts).
        Raise `latbot.errors.TrainingError` naming the recipe field. Runs in `recipe validate`, `plan` and
        `train`, before anything is written."""

    def architecture(self) -> nn.Module:
        """The model this stage trains, as the recipe configures it, reading no file: a `pretrained` field of a
        plugin slot does not load weights here. Must build under ``with torch.device("meta")`` (what `plan`
        and `recipe show --params` do: real size, no memory). The model's ``forward(batch)`` (or `train_step`)
        returns a dict with a scalar ``"loss"``, and its ``repeated_blocks()`` lists the units of FSDP sharding
        and activation checkpointing (an empty list when it has none)."""
        raise NotImplementedError(f"{type(self).__name__} must implement architecture()")

    def initialise(self, model: nn.Module) -> dict[str, Any]:
        """Load the weights the recipe names into `model` (pretrained checkpoints, a parent run's weights);
        returns what was loaded, recorded in the run's manifest. The default loads nothing."""
        return {}

    def example_batch(self, batch_size: int, device: str | torch.device = "meta") -> dict[str, Any]:
        """One micro-batch with the recipe's real shapes and dtypes (what `build_data` yields, collated):
        on the meta device for `plan`, with random values on a real device for contract checks."""
        raise NotImplementedError(f"{type(self).__name__} must implement example_batch()")

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The losses of one micro-batch (``"loss"`` is optimised, the rest are logged)."""
        return model(batch)

    def components(self, model: nn.Module) -> dict[str, nn.Module]:
        """Named parts of the model, for `latbot recipe show --params` (default: its direct children)."""
        return dict(model.named_children())

    def frozen_cost(self, gpus: int, micro_batch: int) -> dict[str, Any] | None:
        """What a training step runs besides the trained model (a frozen distillation teacher), for `plan`:
        ``{"forward_flops_per_sample", "memory_per_gpu_bytes": {..., "total"}, ...}``; None when nothing."""
        return None

    def vlm(self, model: nn.Module) -> nn.Module | None:
        """The vision-language model inside this stage's model (for analyses such as grounding), or None."""
        return None

    def build_model(self) -> nn.Module:
        """The model a run trains: `architecture`, then `initialise` (what it loaded is kept in
        ``self.pretrained`` for the manifest)."""
        model = self.architecture()
        self.pretrained = self.initialise(model)
        return model

    def trained_model(self, weights: dict[str, torch.Tensor], extra: dict[str, Any]) -> nn.Module:
        """The model of a finished run of this stage, with its exported `weights`, in eval mode; `extra` is what
        `extra()` recorded in the run's manifest."""
        model = self.architecture()
        model.load_state_dict(weights)
        return model.eval()

    # -- the run: data, parents, what the manifest records ---------------------------------------------------
    def prepare(self) -> None:
        """Check everything that reads files before the run directory exists (data, parents)."""

    def parents(self) -> list:
        """The artifacts this run is made from (`latbot.artifacts.ParentRef`s), recorded in its manifest."""
        return []

    def build_data(self, world) -> tuple[Any, Any]:
        """(dataset, sampler with a settable `position`) for this rank."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_data()")

    def extra(self, model) -> dict[str, Any]:
        """What the stage records in the finished run's manifest besides the recipe."""
        return {}

    def on_log(self, model, batch) -> dict[str, float]:
        """Extra scalars computed at each log step, by every rank on its own micro-batch (a sharded model needs
        all ranks), averaged over the ranks by the loop."""
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
        distributed.require_launcher(recipe.dist.strategy)  # fsdp/hsdp outside torchrun: a line, no run dir
        stage = cls(recipe)
        stage.validate()
        stage.prepare()
        world = distributed.init(recipe.dist.backend)
        try:
            distributed.mesh_shape(world.size, recipe.dist.strategy, recipe.dist.shard_size)  # hsdp: before the run dir
            run_dir = None
            if world.main:
                run_dir = Path(resume) if resume is not None else runs.new_run_dir(recipe, recipe_path)
            with runs.lock_run(run_dir) if world.main else contextlib.nullcontext():
                if world.main and resume is None:
                    runs.create_run(run_dir, recipe, stage.parents(), environment(world.size))
                run_dir = _broadcast_path(run_dir, world)
                has_on_log = type(stage).on_log is not Stage.on_log
                try:
                    model = train(
                        recipe,
                        run_dir,
                        stage.build_model,
                        stage.build_data,
                        stage.train_step,
                        world,
                        resume is not None,
                        on_log=stage.on_log if has_on_log else None,
                        architecture=stage.architecture,  # dist.meta_init: built on the meta device
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


def without_weights(config):
    """A plugin slot's config with its `pretrained` field (if any) cleared: the architecture reads no file."""
    fields = getattr(type(config), "model_fields", {})
    return config.model_copy(update={"pretrained": None}) if "pretrained" in fields else config


def example_tensor(shape: tuple[int, ...], dtype, device, *, generator=None):
    """A tensor of an example batch: empty on the meta device; otherwise random values of the right kind
    (uint8 pixels, True masks, standard normal floats)."""
    import torch

    device = torch.device(device)
    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    if dtype == torch.bool:
        return torch.ones(shape, dtype=dtype, device=device)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=dtype, device=device, generator=generator)
    return torch.randn(shape, dtype=dtype, device=device, generator=generator)


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
    Returns what is wrong, or None. The registry's own check (by shape), plus: it subclasses RecipeBase."""
    from latbot import registry
    from latbot.recipes.schema import RecipeBase

    problem = registry.check_stage_config(config, name)
    if problem is None and not issubclass(config, RecipeBase):
        return "must have a nested `Config` that subclasses latbot.recipes.schema.RecipeBase (its recipe)"
    return problem
