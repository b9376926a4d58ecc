"""JSON Schema of recipes, for editor completion and validation (`latbot recipe schema`).

The static schema knows plugin slots only as ``{type: ...}``; this one replaces every slot by the union
of the `Config` schemas of the plugins registered for its kind, so an editor completes plugin fields too.
Building it imports every registered plugin of the slot kinds.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from latbot import registry
from latbot.recipes.schema import iter_slots, recipe_classes, recipe_union

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def recipe_json_schema(stage: str | None = None) -> dict[str, Any]:
    """The JSON Schema of a recipe (of one stage, or of every stage as a discriminated union)."""
    by_stage = recipe_classes()
    target: Any = by_stage[stage] if stage else recipe_union()
    schema = TypeAdapter(target).json_schema(ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})
    classes = [by_stage[stage]] if stage else list(by_stage.values())
    slots = {(owner.__name__, name, kind, opt) for cls in classes for _, owner, name, kind, opt in iter_slots(cls)}
    for owner, field_name, kind, optional in sorted(slots):
        owner_schema = defs[owner] if owner in defs else schema
        prop = owner_schema["properties"][field_name]
        refs = []
        for name in registry.names(kind):
            config = registry.get(kind, name).Config
            sub = config.model_json_schema(ref_template="#/$defs/{model}")
            defs.update(sub.pop("$defs", {}))
            key = f"{kind}.{name}"
            defs[key] = sub
            refs.append({"$ref": f"#/$defs/{key}"})
        if not refs:
            continue
        choice: dict[str, Any] = {"oneOf": refs}
        if optional:
            choice = {"anyOf": [choice, {"type": "null"}], "default": None}
        if "description" in prop:
            choice["description"] = prop["description"]
        owner_schema["properties"][field_name] = choice
    schema["$schema"] = SCHEMA_DIALECT
    schema.setdefault("title", f"LatBot recipe ({stage})" if stage else "LatBot recipe")
    return schema
