"""`latbot train RECIPE`: validate the recipe and run its stage."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from latbot.cli._common import SET_HELP, user_errors

# stage -> "module:function(recipe, resume: Path | None, recipe_path: Path)". Stages add themselves here.
STAGE_RUNNERS: dict[str, str] = {
    "lam": "latbot.train.stages:run_lam",
    "distill": "latbot.train.stages:run_distill",
    "finetune": "latbot.train.stages:run_finetune",
}


@user_errors
def train(
    path: Path = typer.Argument(..., help="Recipe YAML file.", dir_okay=False),
    overrides: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    resume: Path | None = typer.Option(None, help="Run directory to resume from (exactly where it stopped)."),
) -> None:
    """Train one stage (lam, distill or finetune) as the recipe says."""
    from latbot import __version__
    from latbot.errors import LatBotError, NotAvailableError
    from latbot.recipes import load_recipe

    recipe = load_recipe(path, overrides)
    if resume is not None and not resume.is_dir():
        raise LatBotError(f"--resume {resume}: no such run directory")
    if resume is not None and overrides:
        raise LatBotError("--resume continues the run with its saved recipe; --set cannot change it")
    runner = STAGE_RUNNERS.get(recipe.stage)
    if runner is None:
        available = ", ".join(STAGE_RUNNERS) or "none yet"
        raise NotAvailableError(
            f"{path}: the recipe is valid, but stage '{recipe.stage}' is not available in LatBot "
            f"{__version__} (stages available: {available})"
        )
    module, _, func = runner.partition(":")
    getattr(importlib.import_module(module), func)(recipe, resume=resume, recipe_path=path)
