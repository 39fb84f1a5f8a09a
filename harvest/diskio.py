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
from collections.abc import Iterator
from pathlib import Path

from harvest.errors import DiskWriteError

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
