"""Recipes: YAML → validated pydantic objects. See `schema` (the shared sections), `loader` (files,
errors) and latbot/stages/ (each stage's own recipe class)."""

from latbot.recipes.loader import load_recipe, recipe_from_dict, to_dict, to_yaml
from latbot.recipes.schema import RecipeBase, RecipeModel

__all__ = ["RecipeBase", "RecipeModel", "load_recipe", "recipe_from_dict", "to_dict", "to_yaml"]
