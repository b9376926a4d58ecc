"""Loading recipes: YAML with `base:` includes, `--set a.b=c` overrides, validation, plugin resolution.

Every value remembers where it came from (file and line, or the `--set` that changed it), so an error
names the place to fix, e.g.::

    recipes/tiny/lam.yaml:7: model.encoder.widht: unknown field; did you mean 'width'?

`base:` (a path or a list of paths, relative to the file that names them) is merged first, in order;
the including file then overrides it key by key. Mappings merge recursively; lists and scalars replace.
A `base:` written `latbot:_base/NAME.yaml` names a fragment shipped inside the package (`latbot/recipes/_base/`),
so a recipe in any directory can include it.
Other paths written in a recipe file (stores, mixtures, parent runs) are relative to that file too; paths
given with `--set` are relative to the current directory; `log.out_dir` always is (docs/recipes.md).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from latbot import registry
from latbot.config import PluginConfig
from latbot.data.location import is_url
from latbot.errors import RecipeError, RegistryError
from latbot.recipes.schema import PluginSlot, RecipeModel, iter_slots
from latbot.yamlio import Loc, YamlSource, bounded, compose, dotted
from latbot.yamlio import format_errors as _format
from latbot.yamlio import load_yaml_model as load_yaml_model
from latbot.yamlio import shipped_bases as shipped_bases
from latbot.yamlio import unwrap_model as _unwrap_model

# The generic YAML machinery (bounds, `base:` includes, origins, error messages) is `latbot.yamlio`; a recipe
# is read with it and then validated against its stage's schema here.
RecipeSource = YamlSource  # a recipe's raw data with the origin ("file:line" or "--set ...") of every key


# -- overrides ---------------------------------------------------------------------------------------
_INDEX_RE = re.compile(r"\[(\d+)\]")


def parse_override(text: str) -> tuple[Loc, Any]:
    """``'train.lr=3e-4'`` → (('train', 'lr'), 0.0003). Values are YAML (typed), read within the bounds of
    `latbot.yamlio.bounded`; indices as ``[0]`` or ``.0``."""
    key, sep, raw = text.partition("=")
    label = override_label(text)
    if not sep or not key.strip():
        raise RecipeError(f"{label}: expected KEY=VALUE with a dotted key, e.g. --set train.lr=3e-4")
    loc = _override_key(key.strip(), label)
    value = bounded.load_value(raw, label) if raw.strip() else ""
    if isinstance(value, str):
        value = _maybe_number(value)
    return loc, value


def override_label(text: str, limit: int = 80) -> str:
    """``--set KEY=VALUE`` as one short line, for messages (a value may be long or hold newlines)."""
    flat = " ".join(text.splitlines())
    return f"--set {flat if len(flat) <= limit else flat[: limit - 3] + '...'}"


def _override_key(key: str, label: str) -> Loc:
    parts = _INDEX_RE.sub(r".\1", key).split(".")
    if len(parts) > bounded.MAX_DEPTH:
        raise RecipeError(f"{label}: the key has {len(parts)} parts (at most {bounded.MAX_DEPTH})")
    loc: list[str | int] = []
    for part in parts:
        if not part:
            raise RecipeError(f"{label}: empty component in the key '{key}'")
        index = re.fullmatch(r"[0-9]+", part) is not None
        if index and len(part) > 9:  # int() of thousands of digits is slow, then refused by Python itself
            raise RecipeError(f"{label}: list index {part[:12]}... has more than 9 digits")
        loc.append(int(part) if index else part)
    return tuple(loc)


def _maybe_number(value: str) -> Any:
    # YAML 1.1 reads "1e-4" (no dot) as a string; read it as the number a user meant.
    try:
        return float(value) if re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value) else value
    except ValueError:
        return value


def apply_overrides(source: RecipeSource, overrides: Sequence[str]) -> None:
    for text in overrides:
        loc, value = parse_override(text)
        label = override_label(text)
        node: Any = source.data
        for depth, part in enumerate(loc[:-1]):
            nxt = loc[depth + 1]
            if isinstance(node, dict) and not (isinstance(nxt, int) and not isinstance(node.get(part), list)):
                if not isinstance(node.get(part), dict | list):
                    node[part] = {}  # a new mapping: `--set data.cameras.0=...` cannot invent a list
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                if not isinstance(node[part], dict | list):
                    node[part] = {} if isinstance(nxt, str) else []
                node = node[part]
            elif isinstance(nxt, int):
                raise RecipeError(
                    f"{label}: {dotted(loc[: depth + 2])} does not exist in the recipe; set the whole list "
                    f"instead, e.g. --set {dotted(loc[: depth + 1])}='[...]'"
                )
            else:
                raise RecipeError(f"{label}: {dotted(loc[: depth + 1])} does not exist in the recipe")
        last = loc[-1]
        if isinstance(node, dict) and isinstance(last, str):
            node[last] = value
        elif isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = value
        else:
            raise RecipeError(f"{label}: {dotted(loc)} does not exist in the recipe")
        for stale in [k for k in source.origins if k[: len(loc)] == loc]:
            del source.origins[stale]
        source.origins[loc] = label


# -- validation ----------------------------------------------------------------------------------------
def _resolve_slot(raw: dict, kind: str, loc: Loc, source: RecipeSource) -> tuple[PluginConfig | None, list[str]]:
    """Look up the plugin named by a raw slot and validate the slot with the plugin's own `Config`."""
    name = raw.get("type")
    if not isinstance(name, str):
        return None, []  # the structural pass reports a missing or non-string `type`
    try:
        cls = registry.get(kind, name)
    except RegistryError as e:
        return None, [f"{source.where((*loc, 'type'))}: {dotted((*loc, 'type'))}: {e}"]
    booleans = _boolean_numbers(raw, cls.Config, loc, source)
    if booleans:
        return None, booleans
    try:
        return cls.Config.model_validate(raw), []
    except ValidationError as e:
        return None, _format(e, source, cls.Config, loc)


def _number_kind(annotation: Any) -> bool:
    """True when a field annotation is a number (int/float, maybe Optional or Annotated, or a tuple of them)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _number_kind(args[0])
    if origin in (typing.Union, types.UnionType, tuple):
        parts = [a for a in args if a is not type(None) and a is not Ellipsis]
        return bool(parts) and all(_number_kind(a) for a in parts)
    return annotation in (int, float)


def _boolean_numbers(data: Any, model: type[BaseModel], loc: Loc, source: RecipeSource) -> list[str]:
    """`steps: yes` is a boolean in YAML and pydantic would read it as 1: numbers must be written as numbers."""
    problems: list[str] = []
    if not isinstance(data, dict):
        return problems
    for name, value in data.items():
        info = model.model_fields.get(name) if isinstance(name, str) else None
        if info is None:
            continue
        here = (*loc, name)
        values = value if isinstance(value, list | tuple) else [value]
        if _number_kind(info.annotation) and any(isinstance(v, bool) for v in values):
            problems.append(f"{source.where(here)}: {dotted(here)}: expected a number, got a boolean ({value!r})")
            continue
        if any(isinstance(m, PluginSlot) for m in info.metadata):
            continue  # checked with the plugin's own Config when the slot is resolved
        inner = _unwrap_model(info.annotation, index=isinstance(value, list))
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
                problems += _boolean_numbers(item, inner, here if i is None else (*here, i), source)
    return problems


def validate(source: RecipeSource, check_paths: bool = False) -> RecipeModel:
    """Validate raw recipe data: the stage, every plugin slot (with the plugin's own `Config`), and the
    sections. All problems are reported together, each as ``origin: dotted.path: what is wrong``. Relative
    paths written in a recipe file are made relative to that file (see `_relative_to_recipe`); with
    `check_paths`, every store and parent run must exist."""
    stage = source.data.get("stage")
    stages = registry.stage_names()
    if stage not in stages:
        got = "is missing" if stage is None else f"is '{stage}'"
        close = difflib.get_close_matches(str(stage), stages, n=1) if stage else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise RecipeError(f"{source.where(('stage',))}: stage: {got}{hint} (expected one of: {', '.join(stages)})")
    try:
        cls = registry.get("stages", stage).Config
    except RegistryError as e:
        raise RecipeError(f"{source.where(('stage',))}: stage: {e}") from e
    data = copy.deepcopy(source.data)
    _relative_to_recipe(data, cls, source)
    problems: list[str] = _boolean_numbers(data, cls, (), source)
    for loc, _owner, _name, kind, _optional in iter_slots(cls):
        parent: Any = data
        for part in loc[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and isinstance(parent.get(loc[-1]), dict):
            config, errors = _resolve_slot(parent[loc[-1]], kind, loc, source)
            problems.extend(errors)
            if config is not None:
                parent[loc[-1]] = config
    try:
        recipe = cls.model_validate(data)
    except ValidationError as e:
        problems = _format(e, source, cls) + problems
    if problems:
        raise RecipeError("\n".join(problems))
    recipe = _resolve_mixture(recipe, source)
    if check_paths:
        missing = _missing_paths(recipe, source)
        if missing:
            raise RecipeError("\n".join(missing))
    return recipe


# -- paths in recipes ------------------------------------------------------------------------------------
# A path written in a recipe file is relative to that file (like `base:`), so a recipe and the stores or
# runs next to it move together and the recipe works from any directory; a path given with `--set` is
# relative to the current directory, as every shell user expects. `log.out_dir` stays relative to the
# current directory: it is where a run is *written*, which belongs to the person running the command, not
# to the recipe (a shared recipe must not write into the directory it is installed in).
CWD_RELATIVE: set[Loc] = {("log", "out_dir")}
MUST_EXIST: tuple[Loc, ...] = (("data", "sources", "*", "store"), ("model", "teacher"), ("model", "student_checkpoint"))


def _is_path(annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _is_path(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_path(a) for a in args if a is not type(None))
    return annotation is Path


def _path_locs(model: type[BaseModel], data: Any, loc: Loc = ()):
    """Locations of the Path fields of `model` present in the raw `data` (plugin slots excluded)."""
    if not isinstance(data, dict):
        return
    for name, info in model.model_fields.items():
        if name not in data or any(isinstance(m, PluginSlot) for m in info.metadata):
            continue
        here, value = (*loc, name), data[name]
        if _is_path(info.annotation):
            if isinstance(value, str) and here not in CWD_RELATIVE:
                yield here
            continue
        inner = _unwrap_model(info.annotation, index=isinstance(value, list))
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
                yield from _path_locs(inner, item, here if i is None else (*here, i))


def _origin(source: RecipeSource, loc: Loc) -> str | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in source.origins:
            return source.origins[loc[:n]]
    return None


def _relative_to_recipe(data: dict, cls: type[BaseModel], source: RecipeSource) -> None:
    """Rewrite the relative paths written in recipe files as paths relative to the current directory."""
    for loc in list(_path_locs(cls, data)):
        origin = _origin(source, loc)
        if origin is None or origin.startswith("--set"):
            continue  # given on the command line (or a saved recipe): relative to the current directory
        file = Path(origin.rsplit(":", 1)[0])
        parent: Any = data
        for part in loc[:-1]:
            parent = parent[part]
        value = parent[loc[-1]]
        if is_url(value):
            continue  # a store on object storage (s3://...): no directory to be relative to
        if not Path(value).is_absolute() and not value.startswith("~"):
            parent[loc[-1]] = os.path.normpath(file.parent / value)


def _missing_paths(recipe: RecipeModel, source: RecipeSource) -> list[str]:
    """Every store and parent run the recipe names that does not exist, as ``origin: field: ...``."""
    problems = []
    for pattern in MUST_EXIST:
        head, values = pattern, [((), recipe)]
        for part in head:
            nxt = []
            for loc, obj in values:
                if part == "*":
                    nxt += [((*loc, i), item) for i, item in enumerate(obj or [])]
                elif obj is not None and hasattr(obj, part):
                    nxt.append(((*loc, part), getattr(obj, part)))
            values = nxt
        mixture = source.data.get("data", {}).get("mixture") if isinstance(source.data.get("data"), dict) else None
        for loc, value in values:
            problem = None if value is None else _path_problem(loc, value)
            if problem is None:
                continue
            if mixture and loc[:2] == ("data", "sources"):  # a source listed in the mixture file
                name = recipe.data.sources[loc[2]].name or loc[2]
                problems.append(
                    f"{source.where(('data', 'mixture'))}: data.mixture: store '{value}' of source '{name}' "
                    f"(listed in {mixture}) {problem}"
                )
            else:
                problems.append(f"{source.where(loc)}: {dotted(loc)}: '{value}' {problem}")
    return problems


def _path_problem(loc: Loc, value: Any) -> str | None:
    """None when a path exists, else what is wrong ("does not exist", or for a URL that cannot be reached,
    "cannot be checked: why"). A data source's store may also name a set of shard stores (a glob or a list
    file), and may be an fsspec URL (checked through fsspec, with the user's credentials)."""
    if loc[:2] == ("data", "sources"):
        from latbot.data.mixture import check_stores

        return check_stores(value)
    return None if Path(value).exists() else "does not exist"


def _resolve_mixture(recipe: RecipeModel, source: RecipeSource) -> RecipeModel:
    """A recipe naming a mixture file holds that file's sources instead, so the resolved recipe (the one a
    run saves) stands alone: resuming never depends on the mixture file still existing or being unchanged."""
    data = recipe.data
    if data.mixture is None:
        return recipe
    from latbot.recipes.mixture import load_mixture

    where = source.where(("data", "mixture"))
    if not Path(data.mixture).exists():  # anything else (a directory, a FIFO) is refused, by name, when read
        raise RecipeError(f"{where}: data.mixture: file '{data.mixture}' not found")
    mixture = load_mixture(data.mixture)
    sources = [s.model_dump() for s in mixture.sources]
    resolved = type(data).model_validate(data.model_dump() | {"mixture": None, "sources": sources})
    return recipe.model_copy(update={"data": resolved})


# -- public entry points ------------------------------------------------------------------------------
def load_source(path: str | Path, overrides: Sequence[str] = ()) -> RecipeSource:
    data, origins = compose(Path(path))
    source = RecipeSource(data, origins, str(path))
    apply_overrides(source, overrides)
    return source


def load_recipe(path: str | Path, overrides: Sequence[str] = (), check_paths: bool = False) -> RecipeModel:
    """Read, merge, override and validate a recipe file; raises `RecipeError` with file:line and field. With
    `check_paths`, the stores and parent runs it names must exist (`latbot recipe validate`, `latbot train`)."""
    return validate(load_source(path, overrides), check_paths)


def recipe_from_dict(data: dict[str, Any], name: str = "<dict>") -> RecipeModel:
    """Validate a recipe given as a Python dict (e.g. the resolved recipe saved in a manifest)."""
    return validate(RecipeSource(copy.deepcopy(data), {}, name))


def to_dict(recipe: BaseModel) -> dict[str, Any]:
    """The fully resolved recipe (every default filled in) as plain JSON-able data."""
    data = recipe.model_dump(mode="json")
    first = {k: data.pop(k) for k in ("stage", "model") if k in data}
    return {**first, **data}


def to_yaml(recipe: BaseModel) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, default_flow_style=False, width=100)
