"""Recipes: what pairs to build, shipped as package data (``harvest/recipes/NAME.yaml``).

A recipe is loaded by name (one of :func:`recipe_names`, found inside the installed package,
so a wheel install has them too) or by the path of a YAML file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from harvest.config import load_model, parse_model
from harvest.errors import ConfigError
from harvest.recipes.model import (
    BandGroup,
    Check,
    Layout,
    PairingSpec,
    QaSpec,
    Recipe,
    Role,
    Sensor,
    SensorKind,
    SeriesSpec,
)

__all__ = [
    "BandGroup",
    "Check",
    "Layout",
    "PairingSpec",
    "QaSpec",
    "Recipe",
    "Role",
    "Sensor",
    "SeriesSpec",
    "SensorKind",
    "load_recipe",
    "recipe_names",
]

_SUFFIXES = (".yaml", ".yml")


def recipe_names() -> tuple[str, ...]:
    """Names of the shipped recipes, sorted."""
    files = resources.files(__name__).iterdir()
    return tuple(sorted(f.name[:-5] for f in files if f.name.endswith(".yaml")))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a shipped recipe by name, or a recipe file by path (``*.yaml`` / ``*.yml``).

    Raises:
        ConfigError: unknown recipe name (the message lists the known ones) or invalid file.
    """
    if isinstance(name_or_path, Path) or str(name_or_path).endswith(_SUFFIXES):
        return load_model(Recipe, Path(name_or_path))
    name = str(name_or_path)
    if name not in recipe_names():
        known = ", ".join(recipe_names())
        raise ConfigError(f"unknown recipe '{name}': use one of {known} or a YAML path")
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return parse_model(Recipe, text, f"recipe {name}")
