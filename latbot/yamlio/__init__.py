"""YAML files a user points LatBot at, read into validated pydantic models: the generic machinery under
recipes, mixture files, data presets and studies, which knows nothing about any of them.

- `bounded`: YAML read within bounds (size, nesting, aliases, integers, file kind).
- `compose`: one file plus its `base:` includes (a path or a list of paths, relative to the file that names
  them, merged first and in order; the including file then overrides them key by key: mappings merge
  recursively, lists and scalars replace). A `base:` written `latbot:_base/NAME.yaml` names a fragment
  shipped inside the package (`latbot/recipes/_base/`, package data), so a file in any directory can
  include it.
- `YamlSource`: the composed data with the origin ("file:line", or "--set ...") of every key, so an error
  names the place to fix, e.g.::

      recipes/tiny/lam.yaml:7: model.encoder.widht: unknown field; did you mean 'width'?

- `load_yaml_model`: all of the above, then pydantic validation with errors in that form.
"""

from __future__ import annotations

import difflib
import importlib.resources
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from latbot.errors import RecipeError
from latbot.yamlio import bounded

__all__ = [
    "BASE_KEY",
    "MAX_BASE_DEPTH",
    "SHIPPED_PREFIX",
    "Loc",
    "YamlSource",
    "bounded",
    "compose",
    "dotted",
    "error_message",
    "format_errors",
    "load_yaml_model",
    "shipped_bases",
    "unwrap_model",
]

Loc = tuple[str | int, ...]
BASE_KEY = "base"
# `base: latbot:_base/x.yaml` is the file `recipes/_base/x.yaml` of the installed package (package data)
SHIPPED_PREFIX = "latbot:"
SHIPPED_DIR = ("recipes",)  # where, inside the `latbot` package, the `latbot:` names are looked up
# Bounds on the YAML itself (size, nesting, aliases, integers) live in `bounded`; this one on includes:
MAX_BASE_DEPTH = 32  # `base:` includes, one inside another


class YamlSource:
    """A YAML file's raw (composed) data with the origin ("file:line" or "--set ...") of every key."""

    def __init__(self, data: dict[str, Any], origins: dict[Loc, str], name: str):
        self.data = data
        self.origins = origins
        self.name = name  # the top-level file, for messages about the file as a whole

    def where(self, loc: Loc) -> str:
        """The origin of `loc`, or of its nearest ancestor that has one."""
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.origins:
                return self.origins[loc[:n]]
        return self.name


def dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<recipe>"


# -- reading YAML ----------------------------------------------------------------------------------
def _read_yaml(path: Path, what: str) -> tuple[Any, dict[Loc, int]]:
    """A recipe-like file's data and the line of each value, read within the bounds of `bounded`."""
    data, node = bounded.parse(bounded.read_text(path, what), str(path))
    lines: dict[Loc, int] = {}

    def walk(n: yaml.Node, loc: Loc, line: int, seen: set[int]) -> None:
        lines[loc] = line
        if id(n) in seen:
            return  # a recursive alias
        seen = seen | {id(n)}
        if isinstance(n, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in n.value:
                key, key_line = str(key_node.value), key_node.start_mark.line + 1
                if key in first and key != "<<":
                    raise RecipeError(
                        f"{path}:{key_line}: {dotted((*loc, key))}: duplicate key (first at line {first[key]}); "
                        "YAML would silently keep only the last one"
                    )
                first[key] = key_line
                walk(value_node, (*loc, key), key_line, seen)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*loc, i), item.start_mark.line + 1, seen)

    if node is not None:
        walk(node, (), 1, set())
    return data, lines


def _merge(base: dict, over: dict, base_origins: dict[Loc, str], over_origins: dict[Loc, str], loc: Loc) -> dict:
    out = dict(base)
    for key, value in over.items():
        here = (*loc, key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, base_origins, over_origins, here)
        else:
            out[key] = value
            for stale in [k for k in base_origins if k[: len(here)] == here]:
                del base_origins[stale]
    return out


def compose(path: Path, stack: tuple[Path, ...] = (), what: str = "recipe file") -> tuple[dict, dict[Loc, str]]:
    """The data of the YAML mapping at `path` with its `base:` includes merged in, and the origin of every key."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise RecipeError(f"{path}: `base:` includes form a cycle: {chain}")
    if len(stack) >= MAX_BASE_DEPTH:
        raise RecipeError(f"{path}: `base:` includes nested deeper than {MAX_BASE_DEPTH} files (from {stack[0]})")
    data, lines = _read_yaml(path, what)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe must be a YAML mapping (key: value), got {type(data).__name__}")
    origins = {loc: f"{path}:{line}" for loc, line in lines.items()}
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data, origins
    if isinstance(bases, str):
        bases = [bases]
    if not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise RecipeError(f"{origins.get((BASE_KEY,), path)}: base: expected a path or a list of paths")
    merged: dict = {}
    merged_origins: dict[Loc, str] = {}
    for i, base in enumerate(bases):
        where = origins.get((BASE_KEY, i), origins.get((BASE_KEY,), str(path)))
        base_path = _shipped_base(base, where) if base.startswith(SHIPPED_PREFIX) else path.parent / base
        if not base_path.exists():  # anything else (a directory, a FIFO) is refused, by name, when read
            raise RecipeError(f"{where}: base: file '{base}' not found (looked for {base_path})")
        base_data, base_origins = compose(base_path, (*stack, resolved), "`base:` file")
        merged = _merge(merged, base_data, merged_origins, base_origins, ())
        merged_origins.update(base_origins)
    origins = {k: v for k, v in origins.items() if k[:1] != (BASE_KEY,)}
    merged = _merge(merged, data, merged_origins, origins, ())
    merged_origins.update(origins)
    return merged, merged_origins


def _shipped_root() -> Any:
    """The package directory the `latbot:` names are relative to (found as package data, not imported)."""
    return importlib.resources.files("latbot").joinpath(*SHIPPED_DIR)


def shipped_bases() -> list[str]:
    """The `base:` fragments shipped inside the package, as the `latbot:` names a recipe writes."""
    root = _shipped_root() / "_base"
    if not root.is_dir():
        return []
    return sorted(f"{SHIPPED_PREFIX}_base/{f.name}" for f in root.iterdir() if f.is_file() and f.name.endswith(".yaml"))


def _shipped_base(name: str, where: str) -> Path:
    """The installed file a `latbot:` base names. Only the listed fragments are reachable: a name is matched
    against `shipped_bases()` before it is joined onto the package directory, so `latbot:../x` cannot leave it."""
    shipped = shipped_bases()
    if name not in shipped:
        stems = {Path(s).stem: s for s in shipped}  # the shared `latbot:_base/...yaml` would make any name "close"
        close = difflib.get_close_matches(Path(name).stem, stems, n=1, cutoff=0.6)
        hint = f"; did you mean '{stems[close[0]]}'?" if close else ""
        listing = ", ".join(shipped) or "none (is the package installed with its data files?)"
        raise RecipeError(f"{where}: base: '{name}' is not a base shipped with latbot{hint} (shipped: {listing})")
    file = _shipped_root().joinpath(*name.removeprefix(SHIPPED_PREFIX).split("/"))
    if not isinstance(file, Path):  # e.g. imported from a zip: the loader reads files on disk, within bounds
        raise RecipeError(f"{where}: base: '{name}' cannot be read: latbot is not installed as files on disk")
    return file


# -- validation errors -----------------------------------------------------------------------------------
def unwrap_model(annotation: Any, index: bool) -> Any:
    """The BaseModel class an annotation leads to (through Annotated, Optional, unions, list items)."""
    for _ in range(8):
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            models = [a for a in args if a is not type(None)]
            annotation = models[0] if models else None
        elif index and origin in (list, tuple):
            annotation, index = args[0], False
        elif index and origin is dict:
            annotation, index = args[1], False
        else:
            break
    return annotation


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    current: Any = root
    pending_index = False
    for part in loc:
        if isinstance(part, int):
            pending_index = True
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = unwrap_model(current.model_fields[part].annotation, index=False)
        if pending_index:
            pending_index = False
    if pending_index:
        current = unwrap_model(current, index=True)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def error_message(err: dict, root: type[BaseModel]) -> str:
    """One pydantic error of a model `root` as a short sentence (an unknown field gets a did-you-mean)."""
    kind, loc = err["type"], tuple(err["loc"])
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        fields = [f for f in parent.model_fields if f != "type"] if parent else []
        msg = "unknown field"
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean '{close[0]}'?"
        if fields:
            msg += f" (valid fields: {', '.join(fields)})"
        return msg
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "input" in err and kind not in {"model_type", "dict_type"} and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return msg


def format_errors(e: ValidationError, source: YamlSource, root: type[BaseModel], prefix: Loc = ()) -> list[str]:
    """Every error of `e` (validating `root`, found at `prefix` of `source`) as ``origin: dotted.path: what``."""
    return [
        f"{source.where((*prefix, *err['loc']))}: {dotted((*prefix, *err['loc']))}: {error_message(err, root)}"
        for err in e.errors()
    ]


# -- the entry point ------------------------------------------------------------------------------------
def load_yaml_model(path: str | Path, model: type[BaseModel], what: str = "YAML file") -> BaseModel:
    """Read a YAML file (with `base:` includes) and validate it as `model`; errors name file:line and the
    dotted field (`what` the file is, e.g. "mixture file"). Used for recipe-like files such as mixtures."""
    data, origins = compose(Path(path), what=what)
    source = YamlSource(data, origins, str(path))
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RecipeError("\n".join(format_errors(e, source, model))) from None
