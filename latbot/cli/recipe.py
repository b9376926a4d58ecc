"""`latbot recipe show | validate | schema`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from latbot.cli._common import SET_HELP, user_errors

app = typer.Typer(help="Inspect and check recipes.", no_args_is_help=True)

RecipeArg = typer.Argument(..., help="Recipe YAML file.", exists=False, dir_okay=False)
SetOpt = typer.Option([], "--set", "-s", help=SET_HELP)


@app.command()
@user_errors
def show(
    path: Path = typer.Argument(..., help="Recipe YAML file, or a run directory (shows the recipe it was run with)."),
    overrides: list[str] = SetOpt,
    params: bool = typer.Option(False, "--params", help="Parameter counts (built on the meta device, no weights)."),
    as_json: bool = typer.Option(False, "--json", help="With --params: machine-readable output."),
) -> None:
    """Print the fully resolved recipe (bases merged, overrides applied, every default filled in)."""
    from latbot.recipes import load_recipe, to_yaml

    if path.is_dir():
        from latbot import runs
        from latbot.errors import LatBotError

        if overrides:
            raise LatBotError(f"{path}: a run's recipe is fixed; --set applies to recipe files only")
        recipe = runs.open_run(path, complete=False).recipe
    else:
        recipe = load_recipe(path, overrides)
    if not params:
        typer.echo(to_yaml(recipe), nl=False)
        return
    from latbot import registry
    from latbot.models.params import parameter_report

    report = parameter_report(registry.get("stages", recipe.stage)(recipe))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{'component':<26} {'total':>15} {'trainable':>15} {'frozen':>15}")
    for name, c in [*report["components"].items(), ("TOTAL", report["total"])]:
        typer.echo(f"{name:<26} {c['total']:>15,} {c['trainable']:>15,} {c['frozen']:>15,}")


@app.command()
@user_errors
def validate(
    paths: list[Path] = typer.Argument(..., help="Recipe YAML files."),
    overrides: list[str] = SetOpt,
    check_paths: bool = typer.Option(
        True, "--check-paths/--no-check-paths", help="Check that the stores and parent runs it names exist."
    ),
) -> None:
    """Check recipes (fields, plugins, that every store and parent run exists, and the stage's model-side
    checks: its model builds as configured, on the meta device); exit 0 when all are valid, 2 with one line
    per problem otherwise."""
    from latbot import registry
    from latbot.recipes import load_recipe

    for path in paths:
        recipe = load_recipe(path, overrides, check_paths=check_paths)
        registry.get("stages", recipe.stage)(recipe).validate()
        typer.echo(f"ok: {path} (stage {recipe.stage})")


@app.command()
@user_errors
def schema(
    stage: str | None = typer.Option(
        None, help="Schema of one stage only: lam, distill, finetune or a plugin's stage (`latbot plugins list`)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
) -> None:
    """JSON Schema of recipes, with every registered plugin's fields, for editor completion."""
    from latbot.errors import RecipeError
    from latbot.recipes.jsonschema import recipe_json_schema
    from latbot.stages import stage_names

    if stage is not None and stage not in stage_names():
        raise RecipeError(f"--stage: '{stage}' is not a stage (expected one of: {', '.join(stage_names())})")
    text = json.dumps(recipe_json_schema(stage), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}")
