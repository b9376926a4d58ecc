"""Training stages: one module per stage (`lam`, `distill`, `finetune`), each registered as a plugin of
kind `stages` (entry-point group `latbot.stages`).

A stage module declares everything about its stage in one place: the recipe schema (a `RecipeBase`
subclass with ``stage: Literal["<name>"]`` as the stage's nested `Config`), the run manifest kind (the
stage's name), and the runner (the `Stage` hooks). The CLI, the recipe loader, the quickstart and the
run reader (`latbot.runs`) find stages here, so adding a stage is adding one module and one entry point;
see docs/training.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latbot.registry import PIPELINE  # noqa: F401  (the paper's stages, in order; kept importable here)
from latbot.stages.base import Stage

__all__ = ["Stage", "recipe_class", "run", "stage", "stage_names"]


def stage_names() -> list[str]:
    """Every registered stage, the paper's in pipeline order (entry-point metadata only: nothing imported)."""
    from latbot import registry

    return registry.stage_names()


def stage(name: str) -> type[Stage]:
    """The `Stage` class registered as `name` (an unknown name lists the registered ones)."""
    from latbot import registry

    return registry.get("stages", name)


def recipe_class(name: str) -> type:
    """The recipe model of stage `name`."""
    return stage(name).Config


def run(recipe, resume: Path | None = None, recipe_path: Path | None = None) -> Path:
    """Run (or, with `resume`, continue) the stage of `recipe`; returns the run directory."""
    return stage(recipe.stage).run(recipe, resume=resume, recipe_path=recipe_path)


def format_version(name: str) -> Any:
    return stage(name).format_version
