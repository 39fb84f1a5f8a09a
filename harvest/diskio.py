"""Writes that stop the run when the disk cannot take them (full, quota, read-only, I/O error).

A chip that cannot be read is data (a ``failed`` row); a disk that cannot be written is not:
every later chip would fail the same way, and the run used to end with hundreds of failed rows,
exit status 0 and a final message that named no file. Every write of a dataset or synthetic
set therefore goes through :func:`write_guard`, which turns an ``OSError`` with one of
:data:`FATAL_ERRNOS` into a :class:`~harvest.errors.DiskWriteError` naming the path being
written (``OSError.filename`` is None for a failed ``write()`` on an open file) and a hint
with the free space left. The fetch and degrade loops let that error through, so the run stops
at the first one; the temporary names of the write in progress are removed on the way out, so
the next run resumes where this one stopped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from harvest.errors import DiskWriteError

TMP_MARK = ".tmp-"
"""Marks harvest's temporary names: ``.NAME.tmp-PID-RANDOM`` beside the file or folder ``NAME``.

The one temporary-name scheme of every write (files, chip and model folders, tables), so the
start-up sweep (:func:`harvest.store.clean_temporaries`, under the folder's lock) finds
everything a killed run left behind."""

#: Errors of a write that no other chip or image would escape.
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def _free_space(path: Path) -> str:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            if folder.is_dir():
                free = shutil.disk_usage(folder).free
                return f"{free / 2**20:.0f} MiB free there"
    return "free space unknown"


def disk_write_error(exc: OSError, path: str | os.PathLike[str]) -> DiskWriteError:
    """The :class:`DiskWriteError` of ``exc`` (one of :data:`FATAL_ERRNOS`) while writing ``path``.

    ``exc.filename`` wins over ``path`` when the error names a file.
    """
    where = Path(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else Path(path)
    code = int(exc.errno or 0)
    reason = exc.strerror or os.strerror(code)
    if code == errno.EROFS:
        hint = "the file system is read-only: write to another folder"
    elif code == errno.EIO:
        hint = "the disk reported an I/O error: check it (dmesg) or write to another disk"
    elif code == errno.EDQUOT:
        hint = f"your disk quota is used up ({_free_space(where)}): free some space"
    else:
        hint = f"free space on that disk ({_free_space(where)})"
    return DiskWriteError(str(where), code, reason, hint)


@contextlib.contextmanager
def write_guard(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a fatal ``OSError`` (:data:`FATAL_ERRNOS`) raised in the block into a DiskWriteError.

    Other errors pass unchanged.

    Args:
        path: What the block writes (named in the message unless the error names a file).

    Raises:
        DiskWriteError: the disk is full, over quota, read-only or failing.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno in FATAL_ERRNOS:
            raise disk_write_error(exc, path) from exc
        raise


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` (inside a temporary folder: no rename needed).

    Raises:
        DiskWriteError: the disk cannot take it.
    """
    with write_guard(path), open(path, "wb") as fh:
        fh.write(data)


def temp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (same folder: the final rename is atomic)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is one of harvest's temporary names (what a killed run leaves behind)."""
    return path.name.startswith(".") and TMP_MARK in path.name


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; rename it to ``path`` when the block ends.

    The temporary file is removed when the block raises, so ``path`` is either the old file or
    the complete new one. The parent folder is created if needed.

    Raises:
        DiskWriteError: the disk cannot take the write.
    """
    tmp = temp_name(path)
    try:
        with write_guard(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Args:
        path: Destination.
        data: The bytes.
        durable: ``fsync`` the temporary file before the rename. The rename alone is what
            makes the write all-or-nothing for a killed process (the page cache outlives it);
            ``fsync`` only matters for an operating-system crash or power loss.

    Raises:
        DiskWriteError: the disk cannot take the write.
    """
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
