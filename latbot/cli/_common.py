"""Helpers shared by the CLI modules: turning `LatBotError`s into one-line messages and exit codes."""

from __future__ import annotations

import functools
from collections.abc import Callable
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
