"""The output-folder lock (harvest.lock) and the fatal-write guard (harvest.diskio)."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harvest.diskio import write_file, write_guard
from harvest.errors import DiskWriteError, FolderLockedError, HarvestError
from harvest.lock import (
    EXIT_LOCKED,
    LockHolder,
    dataset_lock_path,
    folder_lock,
    read_holder,
    sibling_lock_path,
)

# Holds the lock of argv[1] until its stdin closes; says "locked" once it holds it.
HOLDER = """
import sys
from harvest.lock import dataset_lock_path, folder_lock
with folder_lock(sys.argv[1], dataset_lock_path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def start_holder(folder: Path) -> subprocess.Popen[str]:
    """Another process holding ``folder``'s lock (a real second run, as far as flock goes)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_is_refused_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    holder = start_holder(out)
    try:
        recorded = read_holder(dataset_lock_path(out))
        assert recorded is not None and recorded.pid == holder.pid
        assert recorded.host == socket.gethostname() and "-c" in recorded.command
        t0 = time.perf_counter()
        with pytest.raises(FolderLockedError) as caught, folder_lock(out, dataset_lock_path(out)):
            pytest.fail("the lock was taken twice")
        assert time.perf_counter() - t0 < 1.0  # refused, not waited for
        message = str(caught.value)
        assert f"pid {holder.pid} on {socket.gethostname()}, started {recorded.started_at}" in (
            message
        )
        assert "\n" not in message and "another folder" in message
        assert caught.value.exit_code == EXIT_LOCKED == 75
        assert isinstance(caught.value, HarvestError)
        # The refused run left the holder's record alone.
        assert read_holder(dataset_lock_path(out)) == recorded
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    # Released cleanly: no lock file left, and the next run takes it without a notice.
    assert not dataset_lock_path(out).exists()
    with folder_lock(out, dataset_lock_path(out)) as me:
        assert me.pid == os.getpid()
        assert read_holder(dataset_lock_path(out)) == me
    assert not dataset_lock_path(out).exists()


def test_the_lock_is_refused_within_one_process_too(tmp_path: Path) -> None:
    lock = dataset_lock_path(tmp_path)
    with (
        folder_lock(tmp_path, lock),
        pytest.raises(FolderLockedError, match=f"pid {os.getpid()} "),
        folder_lock(tmp_path, lock),
    ):
        pass
    with folder_lock(tmp_path, dataset_lock_path(tmp_path)):
        pass


def test_a_killed_holder_leaves_a_stale_record_that_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "ds"
    holder = start_holder(out)
    os.kill(holder.pid, signal.SIGKILL)  # no finally block runs: the record stays
    holder.wait(timeout=30)
    stale = read_holder(dataset_lock_path(out))
    assert stale is not None and stale.pid == holder.pid
    with (
        caplog.at_level(logging.WARNING, logger="harvest.lock"),
        folder_lock(out, dataset_lock_path(out)) as me,
    ):
        assert read_holder(dataset_lock_path(out)) == me
    notices = [r.getMessage() for r in caplog.records if r.name == "harvest.lock"]
    assert len(notices) == 1
    assert (
        f"taking over the lock of a run that ended without releasing it (pid {stale.pid}"
        in (notices[0])
    )
    assert "its process is gone" in notices[0] and "\n" not in notices[0]


def test_a_record_without_a_held_lock_is_stale_whatever_it_says(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A record naming a live process (this one) but no flock held: flock decides, not the file.
    lock = dataset_lock_path(tmp_path)
    lock.parent.mkdir(parents=True)
    old = LockHolder(os.getpid(), socket.gethostname(), "2020-01-01T00:00:00Z", "harvest fetch")
    lock.write_text(old.to_line())
    with caplog.at_level(logging.WARNING, logger="harvest.lock"), folder_lock(tmp_path, lock):
        pass
    assert any("2020-01-01T00:00:00Z" in r.getMessage() for r in caplog.records)
    # Garbage or an empty file is no record: taken without a notice.
    caplog.clear()
    lock.write_text("not json")
    with caplog.at_level(logging.WARNING, logger="harvest.lock"), folder_lock(tmp_path, lock):
        pass
    assert not caplog.records


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), folder_lock(tmp_path, dataset_lock_path(tmp_path)):
        _ = 1 / 0
    assert not dataset_lock_path(tmp_path).exists()
    with folder_lock(tmp_path, dataset_lock_path(tmp_path)):
        pass


def test_lock_paths(tmp_path: Path) -> None:
    assert dataset_lock_path(tmp_path / "ds") == tmp_path / "ds" / ".harvest" / "lock"
    assert sibling_lock_path(tmp_path / "model") == tmp_path / ".model.lock"
    assert sibling_lock_path(f"{tmp_path}/model/") == tmp_path / ".model.lock"


def test_errors_survive_pickling_for_dask() -> None:
    locked = FolderLockedError("/ds", "pid 1 on h, started t", "/ds/.harvest/lock")
    again = pickle.loads(pickle.dumps(locked))
    assert str(again) == str(locked) and again.exit_code == 75
    disk = DiskWriteError("/ds/x", errno.ENOSPC, "No space left on device", "free space")
    again_disk = pickle.loads(pickle.dumps(disk))
    assert str(again_disk) == str(disk) and again_disk.errno == errno.ENOSPC


def test_a_full_disk_is_one_error_naming_the_path(
    tmp_path: Path, disk_full_after: Callable[[int], None]
) -> None:
    disk_full_after(1)
    write_file(tmp_path / "a", b"x")
    with pytest.raises(DiskWriteError) as caught:
        write_file(tmp_path / "b", b"x" * 100_000)  # write() raises ENOSPC, naming no file
    message = str(caught.value)
    assert message.startswith(f"cannot write {tmp_path / 'b'}: No space left on device; free ")
    assert "MiB free there" in message and "run the same command again to resume" in message
    assert caught.value.errno == errno.ENOSPC and "\n" not in message


@pytest.mark.parametrize(
    ("code", "hint"),
    [(errno.EROFS, "read-only"), (errno.EIO, "I/O error"), (errno.EDQUOT, "quota")],
)
def test_other_fatal_write_errors_name_the_path(tmp_path: Path, code: int, hint: str) -> None:
    target = tmp_path / "f"
    with (
        pytest.raises(DiskWriteError, match=f"cannot write {target}: .*{hint}"),
        write_guard(target),
    ):
        raise OSError(code, os.strerror(code))
    # An error naming its own file names that file; other errors pass unchanged.
    with pytest.raises(DiskWriteError, match="cannot write /elsewhere/g:"), write_guard(target):
        raise OSError(code, os.strerror(code), "/elsewhere/g")
    with pytest.raises(PermissionError), write_guard(target):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_full_disk_while_locking_names_the_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    lock = dataset_lock_path(tmp_path)
    with pytest.raises(DiskWriteError, match=f"cannot write {lock}"), folder_lock(tmp_path, lock):
        pytest.fail("ran without a lock record")
    monkeypatch.undo()
    assert not dataset_lock_path(tmp_path).exists()  # nothing left that looks held
    with folder_lock(tmp_path, dataset_lock_path(tmp_path)):
        pass


def test_the_record_is_one_json_line() -> None:
    me = LockHolder.current()
    line = me.to_line()
    assert line.endswith("\n") and line.count("\n") == 1
    assert set(json.loads(line)) == {"pid", "host", "started_at", "command"}
    assert LockHolder.parse(line) == me
