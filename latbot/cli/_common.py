"""Helpers shared by the CLI modules: turning `LatBotError`s into one-line messages and exit codes, and a
plugin's `Config` from command-line options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from latbot.errors import LatBotError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Print a `LatBotError` as ``error: ...`` (one line per problem) and exit with its code; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LatBotError as e:
            for line in str(e).splitlines() or [type(e).__name__]:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper  # type: ignore[return-value]


SET_HELP = "Override a recipe field: --set a.b=VALUE (VALUE is YAML; repeatable)."


def plugin_options(kind: str, name: str, config: Path | None, overrides: list[str]):
    """A plugin's `Config` from an optional YAML file plus `--set KEY=VALUE` overrides."""
    import yaml
    from pydantic import ValidationError

    from latbot import registry
    from latbot.errors import RecipeError
    from latbot.recipes.loader import RecipeSource, apply_overrides

    cls = registry.get(kind, name)
    data = {}
    if config is not None:
        try:
            data = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise RecipeError(f"{config}: cannot read {name} options: {e}") from e
    source = RecipeSource({**data, "type": name}, {}, str(config or "--set"))
    apply_overrides(source, overrides)
    try:
        return cls.Config.model_validate(source.data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise RecipeError(f"{config or '--set'}: {name} option {where}: {err['msg']}") from None
