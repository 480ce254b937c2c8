"""Step 1, recipes: the model, loading and validation, `new` (scaffold) and `lock` (pins)."""

from pipeline.recipe.load import default_recipes_dir, find, load, load_all
from pipeline.recipe.model import Input, Recipe, RecipeError

__all__ = ["Input", "Recipe", "RecipeError", "default_recipes_dir", "find", "load", "load_all"]
