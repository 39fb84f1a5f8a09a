"""One run per output folder: an advisory ``flock`` lock with the holder recorded in the file.

``harvest fetch``, ``harvest qa`` and ``harvest degrade`` lock ``OUT/.harvest/lock`` of their
output folder, ``harvest degradation fit`` the file ``.NAME.lock`` beside its model folder (the
model folder itself is replaced in one rename, which would take a lock file inside it along).
The lock is taken before anything else is written there and held by the run's main process for
the whole run; Dask workers of a fetch write into the folder under their parent's lock.

What decides is the kernel: ``fcntl.flock`` on the open lock file, released when the process
ends in any way (``kill -9`` included), so a crashed run never leaves the folder locked. The
file's content (pid, host, start time, command of the holder, one JSON line) is informational:
a second run is refused at once with a :class:`~harvest.errors.FolderLockedError` naming the
holder (the CLI exits with :data:`EXIT_LOCKED`), and a run that finds a record but no lock held
(its writer was killed) takes the lock over with a one-line warning. A clean release deletes the
file while still holding the lock; a run that locked a file deleted meanwhile notices (the path
no longer names its file) and locks again, so two runs never both hold one folder.

Over NFS, Linux emulates ``flock`` with byte-range locks that the server arbitrates, so the
lock also holds between machines sharing the folder (hence the host in the record).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harvest.diskio import write_guard
from harvest.errors import FolderLockedError
from harvest.store import STATE_DIR

logger = logging.getLogger(__name__)

#: Name of the lock file in a dataset folder's state folder (``OUT/.harvest/lock``).
LOCK_NAME = "lock"
#: Exit status of a run refused because another run holds its output folder (EX_TEMPFAIL:
#: "try again later"); the same as :attr:`FolderLockedError.exit_code`.
EXIT_LOCKED = FolderLockedError.exit_code

_MAX_COMMAND_CHARS = 300


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a lock: what the lock file records.

    Attributes:
        pid: Process id of the holder.
        host: Host name of the holder's machine.
        started_at: When it took the lock (UTC, ISO 8601).
        command: Its command line (shortened).
    """

    pid: int
    host: str
    started_at: str
    command: str

    @classmethod
    def current(cls) -> LockHolder:
        """This process, now."""
        command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            command=command[:_MAX_COMMAND_CHARS],
        )

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """The holder a lock file records, or None (empty, half-written or foreign content)."""
        try:
            raw = json.loads(text)
            return cls(
                pid=int(raw["pid"]),
                host=str(raw["host"]),
                started_at=str(raw["started_at"]),
                command=str(raw.get("command", "")),
            )
        except (ValueError, TypeError, KeyError):
            return None

    def to_line(self) -> str:
        """The lock file's content: one JSON line."""
        fields = {
            "pid": self.pid,
            "host": self.host,
            "started_at": self.started_at,
            "command": self.command,
        }
        return json.dumps(fields) + "\n"

    def describe(self) -> str:
        """``pid 123 on host, started 2024-05-01T10:00:00Z`` for messages."""
        return f"pid {self.pid} on {self.host}, started {self.started_at}"

    def is_dead_here(self) -> bool:
        """Whether this holder ran on this machine and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


def dataset_lock_path(out_dir: str | os.PathLike[str]) -> Path:
    """The lock file of a dataset folder (fetch, qa, degrade): ``OUT/.harvest/lock``."""
    return Path(out_dir) / STATE_DIR / LOCK_NAME


def sibling_lock_path(folder: str | os.PathLike[str]) -> Path:
    """The lock file of a folder that is replaced as a whole (a model folder): beside it."""
    path = Path(os.path.abspath(folder))  # "." and "model/" have a usable name too
    return path.parent / f".{path.name}.lock"


def read_holder(lock_file: str | os.PathLike[str]) -> LockHolder | None:
    """The holder recorded in ``lock_file`` (None: no file, or nothing readable in it)."""
    try:
        return LockHolder.parse(Path(lock_file).read_text(errors="replace"))
    except OSError:
        return None


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike[str], lock_file: str | os.PathLike[str]
) -> Iterator[LockHolder]:
    """Hold the lock of ``folder`` (file ``lock_file``) for the block; refuse if it is held.

    Not re-entrant: a second acquisition of the same lock, even in this process, is refused.

    Args:
        folder: The output folder the lock protects (named in messages).
        lock_file: Its lock file (:func:`dataset_lock_path` or :func:`sibling_lock_path`);
            its parent folder is created.

    Yields:
        This run's :class:`LockHolder` record.

    Raises:
        FolderLockedError: another run holds the lock.
        DiskWriteError: the lock file cannot be written (full disk, read-only file system).
    """
    path = Path(lock_file)
    fd, previous = _acquire(Path(folder), path)
    try:
        if previous is not None:
            dead = " (its process is gone)" if previous.is_dead_here() else ""
            logger.warning(
                "%s: taking over the lock of a run that ended without releasing it (%s%s)",
                folder,
                previous.describe(),
                dead,
            )
        me = LockHolder.current()
        with write_guard(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.to_line().encode(), 0)
        yield me
    finally:
        # Delete while still holding the lock (see the module docstring), then let go.
        with contextlib.suppress(OSError):
            if _same_file(fd, path):
                path.unlink()
        os.close(fd)


def _acquire(folder: Path, path: Path) -> tuple[int, LockHolder | None]:
    """Open and lock ``path``; returns the descriptor and the stale record found in it."""
    with write_guard(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with write_guard(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_fd(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderLockedError(
                str(folder), None if holder is None else holder.describe(), str(path)
            ) from None
        if _same_file(fd, path):
            return fd, _read_fd(fd)
        # The previous holder deleted the file between our open and our lock: lock the new one.
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_fd(fd: int) -> LockHolder | None:
    try:
        data = os.pread(fd, 4096, 0)
    except OSError:
        return None
    return LockHolder.parse(data.decode(errors="replace")) if data.strip() else None
