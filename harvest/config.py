"""Configuration models: recipes (what pairs to build) validated from YAML.

Every model rejects unknown keys, is frozen once built, and hashes to a stable digest that the
dataset metadata records (so a dataset says exactly which recipe made it).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harvest.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
"""The configs/ folder of a source checkout (recipes are also addressed by file path)."""

# Footprints of nested chips must agree to the centimetre.
_FOOTPRINT_TOLERANCE_M = 0.01


class StrictModel(BaseModel):
    """Base model: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorSpec(StrictModel):
    """One sensor group of a recipe: which collection, which bands, on which chip grid."""

    collection: str = Field(description="Canonical collection name, mapped by provider profiles.")
    bands: tuple[str, ...] = Field(min_length=1)
    gsd_m: float = Field(gt=0, description="Ground sampling distance of the chip grid.")
    chip_px: int = Field(gt=0, description="Chip side in pixels.")

    @property
    def chip_side_m(self) -> float:
        """Chip side length in metres."""
        return self.gsd_m * self.chip_px


class PairingSpec(StrictModel):
    """When two acquisitions make a pair."""

    max_dt_days: float = Field(ge=0, description="Largest |t_lr - t_hr| in days.")
    same_day: bool = Field(default=False, description="Require the same UTC calendar day.")
    same_season: bool = Field(
        default=False, description="Require both dates in the same meteorological season."
    )


class Recipe(StrictModel):
    """A dataset recipe: the sensors paired, their chip grids, filters and time range."""

    name: str
    description: str = ""
    lr: SensorSpec
    lr_extra: tuple[SensorSpec, ...] = Field(
        default=(), description="Further LR groups cut over the same footprint (e.g. 20 m bands)."
    )
    hr: SensorSpec
    pairing: PairingSpec
    max_scene_cloud_pct: float = Field(ge=0, le=100)
    hr_min_year: int | None = None
    start: date | None = None
    end: date | None = None

    @model_validator(mode="after")
    def _nested_grids_share_a_footprint(self) -> Recipe:
        side = self.lr.chip_side_m
        for spec in (self.hr, *self.lr_extra):
            if abs(spec.chip_side_m - side) > _FOOTPRINT_TOLERANCE_M:
                raise ValueError(
                    f"chip of {spec.collection} is {spec.chip_side_m:g} m wide but the LR chip is "
                    f"{side:g} m: set chip_px so that chip_px * gsd_m is the same for every group"
                )
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


M = TypeVar("M", bound=BaseModel)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{where}' (remove it or check its spelling)"
    return f"{where}: {err['msg']}"


def load_model(model: type[M], path: Path) -> M:
    """Load and validate one YAML file into ``model``.

    Raises:
        ConfigError: the file is missing, is not YAML, or does not validate; the message names
            the file and the first offending key.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: check the path") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"{path} is not valid YAML{at}: fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from None


def recipe_path(name_or_path: str) -> Path:
    """Resolve a recipe given by name (``configs/recipes/NAME.yaml``) or by file path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    return CONFIG_DIR / "recipes" / f"{name_or_path}.yaml"


def load_recipe(name_or_path: str) -> Recipe:
    """Load a recipe by name or path.

    Raises:
        ConfigError: unknown recipe name (the message lists the known ones) or invalid file.
    """
    path = recipe_path(name_or_path)
    if not path.exists() and path.parent == CONFIG_DIR / "recipes":
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"unknown recipe '{name_or_path}': use one of {known} or a YAML path")
    return load_model(Recipe, path)


def config_hash(model: BaseModel) -> str:
    """A stable SHA-256 digest (hex, 16 chars) of a model's content, independent of key order."""
    payload: Any = model.model_dump(mode="json")
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
