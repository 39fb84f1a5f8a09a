"""The HarvestError tree.

Every error a user can cause by their input is a :class:`HarvestError`. Its message is one line
that says what is wrong and what to do about it; the CLI prints it without a traceback and exits
with status 1.
"""

from __future__ import annotations


class HarvestError(Exception):
    """Base class of every error harvest raises on purpose."""


class ConfigError(HarvestError, ValueError):
    """A configuration file or option is invalid."""


class RegionError(HarvestError, ValueError):
    """A region polygon is missing, unreadable, empty, invalid or in an unknown CRS."""


class InputFileError(HarvestError, ValueError):
    """An input table (ROIs, pairs, ...) is missing or does not have the expected shape."""


class SamplingError(HarvestError, RuntimeError):
    """The requested ROIs cannot be sampled (for instance, they do not fit in the region)."""


class DemoWorldError(HarvestError, RuntimeError):
    """The demo world cannot be built or read."""


class CatalogError(HarvestError, RuntimeError):
    """A catalog, provider profile or catalog item is unusable (missing field, unknown name)."""


class QaError(HarvestError, ValueError):
    """Chip QA was given arrays it cannot check (wrong shapes, a failed shift to correct by)."""
