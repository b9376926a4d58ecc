"""`latbot train RECIPE` / `latbot train --resume RUN`: run a recipe's stage, or continue a run."""

from __future__ import annotations

from pathlib import Path

import typer

from latbot.cli._common import SET_HELP, user_errors


@user_errors
def train(
    path: Path | None = typer.Argument(None, help="Recipe YAML file (not needed with --resume).", dir_okay=False),
    overrides: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    resume: Path | None = typer.Option(None, help="Run directory to continue (exactly where it stopped)."),
) -> None:
    """Train one stage (lam, distill, finetune, or a plugin's) as the recipe says, or continue a run."""
    from latbot import runs, stages
    from latbot.errors import LatBotError
    from latbot.recipes import load_recipe

    if resume is None:
        if path is None:
            raise LatBotError("give a recipe file (latbot train RECIPE) or a run to continue (--resume RUN)")
        recipe = load_recipe(path, overrides, check_paths=True)
        try:
            stages.run(recipe, recipe_path=path)
        except LatBotError as e:  # a stage-time error: say which recipe it is about
            if not str(e).startswith(str(path)):
                e.args = (f"{path}: {e}", *e.args[1:])
            raise
        return
    if not resume.is_dir():
        raise LatBotError(f"--resume {resume}: no such run directory")
    if overrides:
        raise LatBotError("--resume continues the run with its saved recipe; --set cannot change it")
    run = runs.resumable(resume)
    if path is not None:  # allowed (the run's own recipe is used), but not a recipe of another stage
        given = load_recipe(path).stage
        saved = run.manifest.recipe.get("stage")
        if given != saved:
            raise LatBotError(
                f"{path} is a '{given}' recipe, but {resume} is a '{saved}' run; "
                f"continue it with `latbot train --resume {resume}`"
            )
    stages.run(run.recipe, resume=resume)
