"""The repository recipes, shipped as package data (pipeline.sysexts); see docs/recipes.md."""
