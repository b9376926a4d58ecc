"""The one error hierarchy of LatBot.

A `LatBotError` is meant for a person: its message says what broke, where (file, field, plugin,
episode) and how to fix it. The CLI prints it as one line and exits with `exit_code` (2 for user
errors), without a traceback. Programming errors are not `LatBotError`s and keep their tracebacks.
"""

from __future__ import annotations


class LatBotError(Exception):
    """Base class of every error LatBot raises on purpose."""

    exit_code = 2


class RecipeError(LatBotError):
    """A recipe file or override is malformed or fails validation."""


class RegistryError(LatBotError):
    """A plugin lookup failed."""


class UnknownKindError(RegistryError):
    """A plugin kind that LatBot does not define."""


class UnknownPluginError(RegistryError):
    """No plugin of this kind has the requested name."""


class PluginLoadError(RegistryError):
    """A registered plugin could not be imported or breaks the plugin contract."""


class PluginConflictError(RegistryError):
    """Two distributions register the same name for the same kind."""


class PluginCallError(LatBotError):
    """A plugin raised an exception of its own while being built or called; the message names the kind, the
    plugin and its distribution, and the original exception is chained (`__cause__`)."""

    exit_code = 1


class ArtifactError(LatBotError):
    """An artifact directory is missing, of the wrong kind or format version, or damaged."""


class TrainingError(LatBotError):
    """A stage cannot start or go on (missing data, an inconsistent batch size, a non-finite loss, ...)."""


class NotAvailableError(LatBotError):
    """A capability that this version of LatBot does not provide yet."""


class MissingExtraError(LatBotError):
    """An optional dependency is not installed; the message names the `pip install` that fixes it."""

    def __init__(self, what: str, extra: str, module: str):
        super().__init__(
            f"{what} needs the optional dependency '{module}', which is not installed: "
            f"run `pip install 'latbot[{extra}]'`"
        )
        self.extra = extra
        self.module = module
