"""Recipes: YAML → validated pydantic objects. See `schema` (the models) and `loader` (files, errors)."""

from latbot.recipes.loader import load_recipe, recipe_from_dict, to_dict, to_yaml
from latbot.recipes.schema import (
    STAGES,
    DistillRecipe,
    FinetuneRecipe,
    LamRecipe,
    Recipe,
    RecipeModel,
)

__all__ = [
    "STAGES",
    "DistillRecipe",
    "FinetuneRecipe",
    "LamRecipe",
    "Recipe",
    "RecipeModel",
    "load_recipe",
    "recipe_from_dict",
    "to_dict",
    "to_yaml",
]
