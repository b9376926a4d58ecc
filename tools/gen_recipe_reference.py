"""Write docs/recipe-reference.md from the recipe models (the single source of truth).

    python tools/gen_recipe_reference.py            # rewrite the file
    python tools/gen_recipe_reference.py --check    # exit 1 if the file is out of date (the tests do this)

Plugin slots list the plugins registered at generation time; each plugin's own fields are documented by
its `Config` (`latbot recipe schema` gives them for the plugins installed where you run it).
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from latbot.config import Section
from latbot.recipes.schema import PluginSlot, recipe_classes

OUT = Path(__file__).resolve().parents[1] / "docs" / "recipe-reference.md"


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        name = getattr(origin, "__name__", str(origin)).replace("UnionType", "Union")
        if name in {"Union", "types.UnionType"}:
            return " | ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{name}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(info) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
        return "" if isinstance(value, BaseModel) else f"`{value!r}`"
    if info.default is PydanticUndefined:
        return "**required**"
    return f"`{info.default!r}`"


def _section(cls: type[BaseModel], prefix: str, seen: set[str], out: list[str]) -> None:
    rows, nested = [], []
    for name, info in cls.model_fields.items():
        slot = next((m for m in info.metadata if isinstance(m, PluginSlot)), None)
        ann = info.annotation
        inner = [a for a in typing.get_args(ann)] or [ann]
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, Section)), None)
        if slot is not None:
            type_name = f"plugin (`{slot.kind}`)"
        elif model is not None:
            is_list = typing.get_origin(ann) is list
            type_name = f"list of `{prefix}{name}[]`" if is_list else f"section `{prefix}{name}`"
            nested.append((model, f"{prefix}{name}{'[]' if is_list else ''}."))
        else:
            type_name = "`" + _type_name(ann).replace("|", "\\|") + "`"
        desc = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {type_name} | {_default(info)} | {desc} |")
    out += [
        f"### `{prefix.rstrip('.') or cls.__name__}`",
        "",
        "| field | type | default | meaning |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    for model, sub in nested:
        key = f"{sub}{model.__name__}"
        if key not in seen:
            seen.add(key)
            _section(model, sub, seen, out)


def render() -> str:
    out = [
        "# Recipe reference",
        "",
        "Generated from `latbot/recipes/schema.py` and `latbot/stages/` by `tools/gen_recipe_reference.py`;",
        "do not edit by hand.",
        "A plugin slot takes `{type: <name>, ...}`; the other keys are the plugin's own `Config` fields",
        "(`latbot recipe schema` prints them for every installed plugin). See docs/recipes.md for the format.",
        "",
    ]
    from latbot import registry

    for stage, cls in recipe_classes().items():
        if not registry.entry("stages", stage).is_builtin:
            continue  # LatBot's own stages only, whatever plugins are installed
        out += [f"## stage: `{stage}` ({cls.__name__})", ""]
        _section(cls, "", set(), out)
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python tools/gen_recipe_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
