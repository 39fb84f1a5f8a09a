"""Ctrl-C and SIGTERM end every command with one line, exit 128 + signal, nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import geopandas as gpd
import pytest
from test_cli_fetch import HARVEST, _temporaries, harvest, write_demo_pairs

MESSAGE = "interrupted: run the same command again to resume"
OFFSETS = [(-300.0, -300.0), (300.0, 0.0), (0.0, 300.0), (-300.0, 300.0)]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    # A session of its own: the test can signal the whole process group as a terminal's Ctrl-C
    # does (the Dask workers included).
    return subprocess.Popen(
        [HARVEST, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_statuses(run: subprocess.Popen[str], status_dir: Path, n: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and run.poll() is None:
        if status_dir.exists() and len(list(status_dir.glob("*.json"))) >= n:
            return
        time.sleep(0.02)
    assert run.poll() is None, "the run ended before it could be interrupted: give it more work"
    raise AssertionError("no chip finished within 180 s")


def _check_resumes(tmp_path: Path, args: list[str], ids: list[str]) -> None:
    n_before = len(list((tmp_path / "ds" / ".harvest" / "status").glob("*.json")))
    proc = harvest(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"({n_before} done before;" in proc.stdout
    manifest = gpd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    assert sorted(manifest["roi_id"]) == sorted(ids)  # every chip exactly once
    assert set(manifest["status"]) <= {"kept", "rejected"}
    assert _temporaries(tmp_path / "ds") == []


def test_ctrl_c_stops_a_dask_fetch_quietly_with_130(demo_world: Path, tmp_path: Path) -> None:
    ids = write_demo_pairs(demo_world, tmp_path / "pairs.parquet", OFFSETS)
    args = ["fetch", "pairs.parquet", "--recipe", "sen2naip", "-o", "ds", "--no-progress"]
    run = _start([*args, "--workers", "2"], tmp_path)
    try:
        _wait_for_statuses(run, tmp_path / "ds" / ".harvest" / "status", 2)
        os.killpg(run.pid, signal.SIGINT)  # what a terminal does: parent and workers
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines == [MESSAGE], err  # no worker tracebacks, nothing else
    _check_resumes(tmp_path, args, ids)


def test_sigterm_stops_a_fetch_with_143(demo_world: Path, tmp_path: Path) -> None:
    ids = write_demo_pairs(demo_world, tmp_path / "pairs.parquet", OFFSETS)
    args = ["fetch", "pairs.parquet", "--recipe", "sen2naip", "-o", "ds", "--no-progress"]
    run = _start(args, tmp_path)
    try:
        _wait_for_statuses(run, tmp_path / "ds" / ".harvest" / "status", 2)
        run.send_signal(signal.SIGTERM)  # the process alone, as a scheduler's stop does
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 143, err
    assert err.strip().splitlines() == [MESSAGE]
    assert out == ""  # no summary: the run did not finish
    _check_resumes(tmp_path, args, ids)


def test_ctrl_c_while_building_a_demo_world(tmp_path: Path) -> None:
    run = _start(["demo", "world", "w", "--seed", "5"], tmp_path)
    try:
        time.sleep(2.0)
        assert run.poll() is None, run.communicate()
        os.killpg(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 130
    assert err.strip().splitlines()[-1] == MESSAGE
    assert "Traceback" not in err
    again = harvest("demo", "world", "w", "--seed", "5", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "built in" in again.stdout  # a half-built world is never taken for a finished one


def test_main_maps_signals_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The in-process entry point returns 130 / 143, prints one line, restores the handlers."""
    import harvest.stages.sample
    from harvest.cli import main

    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):

        def signalled(*args: object, _sig: int = sig, **kwargs: object) -> None:
            os.kill(os.getpid(), _sig)
            time.sleep(30)  # the handler interrupts this at once
            raise AssertionError("the signal did not interrupt the command")

        monkeypatch.setattr(harvest.stages.sample, "run", signalled)
        before = signal.getsignal(sig)
        assert main(["sample", "--n", "1", "-o", str(tmp_path / "r.parquet")]) == code
        assert signal.getsignal(sig) is before
