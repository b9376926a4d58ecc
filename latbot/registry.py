"""The plugin registry: every encoder, decoder, student, action expert, dataset adapter, simulator and
embodiment.

Built-ins and third-party plugins are registered the same way, as Python entry points::

    [project.entry-points."latbot.encoders"]
    internvl = "latbot.models.encoders.internvl:InternVLEncoder"

Discovery reads entry-point metadata only; a plugin's module is imported the first time the plugin is
asked for. Errors are never swallowed: an unknown name lists the available ones (with a did-you-mean),
a plugin that fails to import names itself, its distribution and the cause, and two distributions
claiming one name name each other. Set ``LATBOT_DISABLE_PLUGIN_AUTOLOAD=1`` to ignore every entry point
that does not come from LatBot itself.

A plugin is a class with a nested ``Config`` (a `latbot.config.PluginConfig` whose ``type`` is
``Literal["<name>"]``); ``build(kind, config, ...)`` instantiates it as ``cls(config, ...)``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import typing
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from latbot.errors import (
    LatBotError,
    PluginCallError,
    PluginConflictError,
    PluginLoadError,
    UnknownKindError,
    UnknownPluginError,
)

KINDS: tuple[str, ...] = (
    "encoders",
    "decoders",
    "students",
    "action_experts",
    "datasets",
    "simulators",
    "embodiments",
    "stages",
)
PIPELINE: tuple[str, ...] = ("lam", "distill", "finetune")  # the paper's stages, listed first and in this order
ENTRY_POINT_PREFIX = "latbot."
AUTOLOAD_ENV = "LATBOT_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_DISTRIBUTION = "latbot"
RUNTIME_DISTRIBUTION = "<registered at runtime>"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _normalize_dist(name: str) -> str:
    """PEP 503 normalisation, so 'LatBot_Example.Plugin' and 'latbot-example-plugin' compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PluginEntry:
    """One registration: where a plugin lives, not the plugin itself (nothing is imported)."""

    kind: str
    name: str
    target: str  # "package.module:Class"
    distribution: str
    obj: Any = field(default=None, compare=False, repr=False)  # set for runtime registrations

    @property
    def is_builtin(self) -> bool:
        return _normalize_dist(self.distribution) == BUILTIN_DISTRIBUTION


def autoload_disabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class Registry:
    """Plugins by kind and name. One process-wide instance lives in `latbot.registry.REGISTRY`."""

    def __init__(self) -> None:
        self._discovered: dict[str, dict[str, list[PluginEntry]]] | None = None
        self._runtime: dict[str, dict[str, PluginEntry]] = {kind: {} for kind in KINDS}
        self._loaded: dict[tuple[str, str], type] = {}

    # -- discovery (metadata only) ------------------------------------------------------------
    def _discover(self) -> dict[str, dict[str, list[PluginEntry]]]:
        if self._discovered is None:
            builtin_only = autoload_disabled()
            found: dict[str, dict[str, list[PluginEntry]]] = {kind: {} for kind in KINDS}
            for kind in KINDS:
                for ep in metadata.entry_points(group=ENTRY_POINT_PREFIX + kind):
                    dist = ep.dist.name if ep.dist is not None else "<unknown distribution>"
                    if builtin_only and _normalize_dist(dist) != BUILTIN_DISTRIBUTION:
                        continue
                    entry = PluginEntry(kind, ep.name, ep.value, dist)
                    claims = found[kind].setdefault(ep.name, [])
                    # The same distribution seen twice on sys.path (e.g. an editable install next to a
                    # regular one) is one claim, not a conflict.
                    if not any(_normalize_dist(c.distribution) == _normalize_dist(dist) for c in claims):
                        claims.append(entry)
            self._discovered = found
        return self._discovered

    def refresh(self) -> None:
        """Forget discovered entry points and imported classes (after installing a plugin, in tests)."""
        self._discovered = None
        self._loaded.clear()

    def _claims(self, kind: str, name: str) -> list[PluginEntry]:
        claims = list(self._discover()[kind].get(name, []))
        if name in self._runtime[kind]:
            claims.append(self._runtime[kind][name])
        return claims

    def names(self, kind: str) -> list[str]:
        _check_kind(kind)
        return sorted(set(self._discover()[kind]) | set(self._runtime[kind]))

    def entries(self, kind: str) -> list[list[PluginEntry]]:
        """Every name of `kind` with all its claims (more than one claim = a conflict)."""
        _check_kind(kind)
        return [self._claims(kind, name) for name in self.names(kind)]

    def entry(self, kind: str, name: str) -> PluginEntry:
        """The single registration of `name`, or a clear error (unknown name, conflict)."""
        _check_kind(kind)
        claims = self._claims(kind, name)
        if not claims:
            raise UnknownPluginError(_unknown_message(kind, name, self.names(kind)))
        if len(claims) > 1:
            who = " and ".join(f"'{c.distribution}' ({c.target})" for c in claims)
            raise PluginConflictError(
                f"{kind} plugin '{name}' is registered by more than one distribution: {who}; "
                f"uninstall one of them, or set {AUTOLOAD_ENV}=1 to use only LatBot's built-ins"
            )
        return claims[0]

    # -- loading ------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> type:
        """The plugin class registered as `name` in `kind`, imported on first use."""
        key = (kind, name)
        if key not in self._loaded:
            entry = self.entry(kind, name)
            cls = entry.obj if entry.obj is not None else _import_target(entry)
            _check_contract(entry, cls)
            self._loaded[key] = cls
        return self._loaded[key]

    def build(self, kind: str, config: Any, *args: Any, **kwargs: Any) -> Any:
        """Instantiate the plugin selected by `config.type` as ``cls(config, *args, **kwargs)``."""
        cls = self.get(kind, config.type)
        if not isinstance(config, cls.Config):
            config = cls.Config.model_validate(config.model_dump())
        try:
            return cls(config, *args, **kwargs)
        except LatBotError:
            raise
        except Exception as e:  # the plugin's own bug: say whose, keep the original chained
            raise call_error(self.entry(kind, config.type), e, "failed to build") from e

    # -- naming the plugin behind an exception -------------------------------------------------------------
    def blame(self, exc: BaseException) -> PluginEntry | None:
        """The plugin whose code raised `exc`: the innermost traceback frame that runs a method of a loaded
        plugin class (its `self` is an instance) or a function of its module. None if no plugin is involved."""
        import traceback

        loaded = {key: cls for key, cls in self._loaded.items() if isinstance(cls, type)}
        frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
        for frame in reversed(frames):
            owner = frame.f_locals.get("self")
            module = frame.f_globals.get("__name__")
            matches = [
                (len(cls.__mro__), key)
                for key, cls in loaded.items()
                if (owner is not None and isinstance(owner, cls)) or module == cls.__module__
            ]
            if matches:  # the most derived class: a plugin that subclasses another plugin is itself to blame
                return self.entry(*max(matches)[1])
        return None

    # -- runtime registration (notebooks, tests) ------------------------------------------------
    def register(self, kind: str, name: str, cls: type) -> type:
        """Register `cls` in this process only. Installed plugins should use entry points instead."""
        _check_kind(kind)
        if not _NAME_RE.match(name):
            raise PluginLoadError(f"plugin name '{name}' must be snake_case ([a-z][a-z0-9_]*)")
        entry = PluginEntry(kind, name, f"{cls.__module__}:{cls.__qualname__}", RUNTIME_DISTRIBUTION, cls)
        existing = self._discover()[kind].get(name, [])
        if existing:
            raise PluginConflictError(
                f"cannot register {kind} plugin '{name}' at runtime: distribution "
                f"'{existing[0].distribution}' already provides it ({existing[0].target})"
            )
        self._runtime[kind][name] = entry
        self._loaded.pop((kind, name), None)
        return cls

    def unregister(self, kind: str, name: str) -> None:
        _check_kind(kind)
        self._runtime[kind].pop(name, None)
        self._loaded.pop((kind, name), None)


def call_error(entry: PluginEntry, exc: BaseException, what: str = "failed") -> PluginCallError:
    """A `PluginCallError` naming the plugin of `entry`, for `exc` raised by its code (chain it: ``from exc``)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    at = f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return PluginCallError(
        f"{entry.kind} plugin '{entry.name}' from distribution '{entry.distribution}' ({entry.target}) {what}: "
        f"{type(exc).__name__}: {exc}{at}"
    )


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UnknownKindError(_unknown_message("plugin kind", kind, list(KINDS), noun="kinds"))


def _unknown_message(kind: str, name: str, available: list[str], noun: str = "") -> str:
    what = kind if noun else f"{kind} plugin"
    msg = f"unknown {what} '{name}'"
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    if close:
        msg += f"; did you mean '{close[0]}'?"
    listing = ", ".join(available) if available else "none installed"
    return f"{msg} (available {noun or kind}: {listing})"


def _import_target(entry: PluginEntry) -> type:
    where = f"{entry.kind} plugin '{entry.name}' from distribution '{entry.distribution}' ({entry.target})"
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import-time failure of third-party code is reported, never skipped
        raise PluginLoadError(f"{where} failed to import: {type(e).__name__}: {e}") from e
    obj: Any = module
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise PluginLoadError(f"{where}: module '{module_name}' has no attribute '{attr}'") from e
    if not attr:
        raise PluginLoadError(f"{where}: the entry point must name a class as 'package.module:Class'")
    return obj


RECIPE_SECTIONS = ("train", "data", "log", "dist")  # the sections every stage's recipe has (RecipeBase)


def check_stage_config(config: Any, name: str) -> str | None:
    """The contract of a stage's `Config`, checked by shape (the registry imports no stage or recipe): a
    pydantic model, not a PluginConfig, with the recipe sections and ``stage: Literal[name]``. Returns what is
    wrong, or None."""
    from pydantic import BaseModel

    from latbot.config import PluginConfig

    if (
        not (isinstance(config, type) and issubclass(config, BaseModel))
        or issubclass(config, PluginConfig)
        or any(section not in config.model_fields for section in RECIPE_SECTIONS)
    ):
        return "must have a nested `Config` that subclasses latbot.recipes.schema.RecipeBase (its recipe)"
    field = config.model_fields.get("stage")
    annotation = field.annotation if field is not None else None
    literal = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()
    if literal != (name,):
        return f'its Config must declare `stage: Literal["{name}"]` to match the registered name'
    return None


def _check_contract(entry: PluginEntry, cls: Any) -> None:
    """A plugin is a class whose nested `Config` is a PluginConfig with ``type: Literal[name]``."""
    from latbot.config import PluginConfig

    where = f"{entry.kind} plugin '{entry.name}' ({entry.target}, distribution '{entry.distribution}')"
    config = getattr(cls, "Config", None)
    if entry.kind == "stages":  # a stage's Config is its recipe, keyed by `stage:` rather than `type:`
        problem = check_stage_config(config, entry.name)
        if problem:
            raise PluginLoadError(f"{where} {problem}")
        return
    if not isinstance(cls, type) or not (isinstance(config, type) and issubclass(config, PluginConfig)):
        raise PluginLoadError(f"{where} must be a class with a nested `Config(latbot.config.PluginConfig)`")
    type_field = config.model_fields["type"].annotation
    literal = typing.get_args(type_field) if typing.get_origin(type_field) is typing.Literal else ()
    if literal != (entry.name,):
        raise PluginLoadError(
            f'{where}: its Config must declare `type: Literal["{entry.name}"]` '
            f"to match the registered name (found {type_field!r})"
        )


REGISTRY = Registry()

# Module-level shortcuts on the process-wide registry.
names = REGISTRY.names
entries = REGISTRY.entries
entry = REGISTRY.entry
get = REGISTRY.get
build = REGISTRY.build
register = REGISTRY.register
blame = REGISTRY.blame
unregister = REGISTRY.unregister
refresh = REGISTRY.refresh


def stage_names() -> list[str]:
    """Every registered stage, the paper's (`PIPELINE`) first and in pipeline order, then the rest by name
    (entry-point metadata only: nothing imported)."""
    found = names("stages")
    return [n for n in PIPELINE if n in found] + [n for n in found if n not in PIPELINE]
