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


class HrefRefusedError(ReadError):
    """An asset href the href policy does not let harvest read (:mod:`harvest.hrefs`).

    The message names the href, why it is refused and, where possible, how to allow it.
    """


class StoreError(HarvestError, RuntimeError):
    """A dataset folder cannot be written or read back (wrong layout, another recipe)."""


class UnsafeIdError(InputFileError):
    """An id that would become a file or folder name is not a safe id (see harvest.ids)."""


class UnsafePathError(StoreError):
    """A path about to be written or removed resolves outside its output folder."""


class FolderLockedError(StoreError):
    """Another run holds the output folder's lock (:mod:`harvest.lock`).

    The CLI exits with :attr:`exit_code` (75, EX_TEMPFAIL: try again later), not 1: nothing
    is wrong with the input, the folder is busy.
    """

    exit_code = 75

    def __init__(self, folder: str, holder: str | None, lock_file: str) -> None:
        who = holder or "holder unknown: it is starting or wrote no record"
        super().__init__(
            f"{folder} is in use by another harvest run ({who}; lock {lock_file}): wait for "
            "it to finish, or write to another folder"
        )
        self.folder = folder
        self.holder = holder
        self.lock_file = lock_file

    def __reduce__(self) -> tuple[type, tuple[str, str | None, str]]:
        return (type(self), (self.folder, self.holder, self.lock_file))


class DatasetBusyError(FolderLockedError):
    """Another ``harvest build`` or ``harvest extend`` holds the dataset folder.

    Its own exit status (4) so that a scheduler can tell "busy: the next run will do the work"
    from a temporary failure (75) or bad input (1).
    """

    exit_code = 4


class TemporaryFailureError(HarvestError, RuntimeError):
    """A failure that may go away by itself (an unreachable catalog): retry later.

    ``harvest extend`` exits with 75 (EX_TEMPFAIL) on it.
    """

    exit_code = 75


class DiskWriteError(StoreError):
    """A write failed in a way no later chip or image would escape (disk full, quota, I/O).

    ENOSPC, EDQUOT, EROFS or EIO (:mod:`harvest.diskio`). The run stops at once instead of
    failing every remaining chip; the message names the path. What was finished before stays;
    what was being written is removed (temporary names).
    """

    def __init__(self, path: str, errno: int, strerror: str, hint: str) -> None:
        super().__init__(
            f"cannot write {path}: {strerror}; {hint}, then run the same command again to resume"
        )
        self.path = path
        self.errno = errno
        self.strerror = strerror
        self.hint = hint

    def __reduce__(self) -> tuple[type, tuple[str, int, str, str]]:
        # Dask ships a worker's exception to the parent: keep the arguments through pickling.
        return (type(self), (self.path, self.errno, self.strerror, self.hint))


class DegradeError(HarvestError, ValueError):
    """An input of the degradation commands (pairs folder, HR images, model) is unusable."""


class Interrupted(BaseException):
    """The run was stopped by a signal (SIGINT: Ctrl-C, or SIGTERM).

    A ``BaseException`` like ``KeyboardInterrupt``: the per-chip ``except Exception`` handlers
    must not turn an interrupt into a failed chip. The CLI prints one line and exits with
    ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class EmbedError(HarvestError, ValueError):
    """``harvest embed``: bad images, tables or embedder options.

    A dataset without images, an unreadable image, a mismatched table, or an embedder option
    or input that is invalid (unknown precision, wrong array shape).
    """


class PruneError(HarvestError, ValueError):
    """``harvest prune``: options that contradict an existing selection, unusable tables."""


class EvaluateError(HarvestError, ValueError):
    """``harvest evaluate``: inputs that cannot be read or compared (not on one grid)."""
