"""Configuration loading: strict pydantic models validated from YAML, and their hash.

Every model rejects unknown keys, is frozen once built, and hashes to a stable digest that the
dataset metadata records (so a dataset says exactly which recipe made it). The recipe models
live in :mod:`harvest.recipes`, provider profiles in :mod:`harvest.backends.profiles`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from harvest.errors import ConfigError


class StrictModel(BaseModel):
    """Base model: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{where}' (remove it or check its spelling)"
    # A validator's own message is the explanation: pydantic's "Value error, " adds nothing.
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def load_model(model: type[M], path: Path) -> M:
    """Load and validate one YAML file into ``model``.

    Raises:
        ConfigError: the file is missing, is not YAML, or does not validate; the message names
            the file and the first offending key.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: check the path") from None
    return parse_model(model, text, str(path))


def parse_model(model: type[M], text: str, source: str) -> M:
    """Validate YAML ``text`` into ``model``; ``source`` names it in errors (a path, a name).

    Raises:
        ConfigError: the text is not YAML or does not validate (first offending key named).
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"{source} is not valid YAML{at}: fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of keys to values")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None


def config_hash(model: BaseModel) -> str:
    """A stable SHA-256 digest (hex, 16 chars) of a model's content, independent of key order."""
    payload: Any = model.model_dump(mode="json")
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
