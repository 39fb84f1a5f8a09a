"""Fixtures of the degradation tests: the published opensr-degradation package as a reference."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from types import ModuleType

import pytest


def _published_module(name: str) -> ModuleType:
    """Import ``opensr_degradation.<name>``, the published reference the tests compare with.

    Importing it needs ``pkg_resources`` (setuptools < 81), ``datasets``, ``einops``, ``pandas``
    and ``timm``; the test extra installs them, so a failed import fails the test.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(f"opensr_degradation.{name}")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.fail(f"opensr-degradation is not importable ({exc}): pip install -e '.[test]'")


@pytest.fixture(scope="session")
def published() -> Callable[[str], ModuleType]:
    """``published("naipd.noise")`` imports a module of opensr-degradation."""
    return _published_module
