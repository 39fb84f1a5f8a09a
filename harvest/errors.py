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


class ReadError(HarvestError, RuntimeError):
    """Pixels could not be read from an asset (after the retries, if the error was transient)."""


class AssetReadError(ReadError):
    """An asset is missing, corrupt or truncated: the message names the file."""

    def __init__(self, href: str, detail: str) -> None:
        super().__init__(f"cannot read {href}: {detail}")
        self.href = href
        self.detail = detail

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Dask ships exceptions between processes; keep both arguments through pickling.
        return (type(self), (self.href, self.detail))


class StoreError(HarvestError, RuntimeError):
    """A dataset folder cannot be written or read back (wrong layout, another recipe)."""


class DegradeError(HarvestError, ValueError):
    """An input of the degradation commands (pairs folder, HR images, model) is unusable."""
