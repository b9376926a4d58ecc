"""Helpers shared by the CLI modules: turning `LatBotError`s into one-line messages and exit codes, and a
plugin's `Config` from command-line options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from latbot.errors import LatBotError, PluginCallError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Print a `LatBotError` as ``error: ...`` (one line per problem) and exit with its code; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LatBotError as e:
            if isinstance(e, PluginCallError) and e.__cause__ is not None:
                _print_traceback(e.__cause__)  # a plugin's own bug: its author needs the traceback
            for line in str(e).splitlines() or [type(e).__name__]:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(e.exit_code) from None
        except Exception as e:
            from latbot import registry

            culprit = registry.blame(e)
            if culprit is None:
                raise
            _print_traceback(e)
            typer.echo(f"error: {registry.call_error(culprit, e)}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _print_traceback(e: BaseException) -> None:
    import traceback

    typer.echo("".join(traceback.format_exception(e)).rstrip(), err=True)


SET_HELP = "Override a recipe field: --set a.b=VALUE (VALUE is YAML; repeatable)."


def plugin_options(kind: str, name: str, config: Path | None, overrides: list[str]):
    """A plugin's `Config` from an optional YAML file plus `--set KEY=VALUE` overrides."""
    from pydantic import ValidationError

    from latbot import registry
    from latbot.errors import RecipeError
    from latbot.recipes.loader import RecipeSource, apply_overrides
    from latbot.yamlio import bounded

    cls = registry.get(kind, name)
    data = {}
    if config is not None:
        data = bounded.load_file(config, f"{name} options file") or {}
        if not isinstance(data, dict):
            raise RecipeError(f"{config}: {name} options must be a YAML mapping (key: value)")
    source = RecipeSource({**data, "type": name}, {}, str(config or "--set"))
    apply_overrides(source, overrides)
    try:
        return cls.Config.model_validate(source.data)
    except ValidationError as e:
        from latbot.yamlio import error_message

        fields = ", ".join(f for f in cls.Config.model_fields if f != "type")
        lines = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = error_message(err, cls.Config)
            if "valid fields" not in msg:
                msg += f" (valid fields of {name}: {fields or 'none'})"
            lines.append(f"{source.where(tuple(err['loc']))}: {name} option {where}: {msg}")
        raise RecipeError("\n".join(lines)) from None
