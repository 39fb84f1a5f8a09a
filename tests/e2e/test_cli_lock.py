"""One run per output folder, a full disk, and failed chips summed up, as a user meets them."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
from test_cli_fetch import write_pairs_file

from harvest.backends.base import AssetMap
from harvest.demo.pairs import truth_pair_rows
from harvest.diskio import is_temporary
from harvest.lock import EXIT_LOCKED, LockHolder, dataset_lock_path, sibling_lock_path
from harvest.recipes import load_recipe
from harvest.tables import PairRow

HARVEST = str(Path(sys.executable).parent / "harvest")
RECIPE = load_recipe("sen2naip")
FAULTS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "faults"
# Holds the lock file argv[2] of folder argv[1] until its stdin closes.
HOLDER = """
import sys
from harvest.lock import folder_lock
with folder_lock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def harvest(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HARVEST, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def demo_rows(world: Path, offsets_m: list[tuple[float, float]]) -> list[PairRow]:
    return truth_pair_rows(world, RECIPE, offsets_m)


def statuses(out: Path) -> dict[str, dict]:
    folder = out / ".harvest" / "status"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


FETCH = ("fetch", "pairs.parquet", "--recipe", "sen2naip", "-o", "ds", "--no-progress")


def test_a_second_fetch_into_a_busy_folder_is_refused_and_the_first_is_unaffected(
    demo_world: Path, tmp_path: Path
) -> None:
    # 63 chips: several seconds of work, so the second run starts and ends while it runs.
    offsets = [(e, n) for e in (-300.0, 0.0, 300.0) for n in (-300.0, 0.0, 300.0)]
    ids = write_pairs_file(tmp_path / "pairs.parquet", demo_rows(demo_world, offsets), demo_world)
    lock = dataset_lock_path(tmp_path / "ds")
    first = subprocess.Popen(
        [HARVEST, *FETCH],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "the first run ended before the second could start"
        # Stricter QA thresholds: today that run would have mixed its decisions into ours.
        second = harvest(*FETCH, "--max-shift-px", "0.1", cwd=tmp_path)
        assert first.poll() is None, "the first run finished early: give it more chips"
        holder = LockHolder.parse(lock.read_text())
        assert holder is not None and holder.pid == first.pid
    finally:
        out, err = first.communicate(timeout=300)
    assert second.returncode == EXIT_LOCKED == 75, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("error: ds is in use by another harvest run (")
    assert f"pid {first.pid} on {socket.gethostname()}, started {holder.started_at}" in lines[0]
    assert second.stdout == ""
    # The first run did all its work as if alone: every chip kept or rejected, none failed.
    assert first.returncode == 0, err
    assert re.match(r"\d+ kept, \d+ rejected, 0 failed \(0 done before;", out), out
    manifest = gpd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    assert sorted(manifest["roi_id"]) == ids
    assert set(manifest["status"]) <= {"kept", "rejected"}
    assert not [p for p in (tmp_path / "ds").rglob("*") if is_temporary(p)]
    assert not lock.exists()
    assert all(st["status"] in ("kept", "rejected") for st in statuses(tmp_path / "ds").values())


def _hold(folder: Path, lock: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_degrade_fit_and_qa_into_a_busy_folder_exit_75_naming_the_holder(
    demo_pairs: Path, tmp_path: Path
) -> None:
    synth, model = tmp_path / "synth", tmp_path / "model"
    holders = [_hold(synth, dataset_lock_path(synth)), _hold(model, sibling_lock_path(model))]
    try:
        for args, holder in (
            (("degrade", str(demo_pairs), "--model", "sen2naip", "-o", str(synth)), holders[0]),
            (("degradation", "fit", str(demo_pairs), "-o", str(model)), holders[1]),
        ):
            t0 = time.monotonic()
            r = harvest(*args, "--no-progress", cwd=tmp_path)
            assert r.returncode == 75, r.stderr
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ")
            assert re.search(rf"\(pid {holder.pid} on .+, started \d{{4}}-", lines[0]), lines[0]
            assert time.monotonic() - t0 < 60  # refused before any fitting or degrading
        assert not (synth / "synthetic").exists() and not model.exists()
    finally:
        for h in holders:
            _release(h)
    qa_holder = _hold(demo_pairs, dataset_lock_path(demo_pairs))
    try:
        r = harvest("qa", str(demo_pairs), "--no-progress", cwd=tmp_path)
    finally:
        _release(qa_holder)
    assert r.returncode == 75 and f"pid {qa_holder.pid} on " in r.stderr, r.stderr


def test_a_lock_left_by_a_killed_run_is_taken_over_with_one_notice(
    demo_world: Path, tmp_path: Path
) -> None:
    rows = demo_rows(demo_world, [(0.0, 0.0)])[:2]
    write_pairs_file(tmp_path / "pairs.parquet", rows, demo_world)
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(ended.stdout)  # a process of this machine that is gone
    lock = dataset_lock_path(tmp_path / "ds")
    lock.parent.mkdir(parents=True)
    stale = LockHolder(dead_pid, socket.gethostname(), "2024-01-02T03:04:05Z", "harvest fetch")
    lock.write_text(stale.to_line())
    r = harvest(*FETCH, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "taking over the lock of a run that ended without releasing it" in lines[0]
    assert f"pid {dead_pid} on {socket.gethostname()}, started 2024-01-02T03:04:05Z" in lines[0]
    assert re.match(r"\d+ kept, \d+ rejected, 0 failed \(0 done before;", r.stdout), r.stdout
    assert not lock.exists()


def test_a_full_disk_stops_fetch_with_one_line_and_the_rerun_resumes(
    demo_world: Path, tmp_path: Path
) -> None:
    ids = write_pairs_file(
        tmp_path / "pairs.parquet", demo_rows(demo_world, [(0.0, 0.0)]), demo_world
    )
    # run.json, then two chips of 4 files and a status file each fit: 1 + 2 x 5 writes.
    full = {"PYTHONPATH": str(FAULTS_DIR), "HARVEST_TEST_ENOSPC_AFTER": "11"}
    r = harvest(*FETCH, cwd=tmp_path, env=full)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    # The path as the user named the folder (-o ds): the chip file being written.
    assert re.match(r"error: cannot write ds/cross-sensor/\S+/LR\.tif: No space left on ", lines[0])
    assert "free space on that disk" in lines[0] and "run the same command again" in lines[0]
    done = statuses(tmp_path / "ds")
    assert len(done) == 2 and all(st["status"] != "failed" for st in done.values())
    assert not [p for p in (tmp_path / "ds").rglob("*") if is_temporary(p)]
    again = harvest(*FETCH, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "(2 done before;" in again.stdout and " 0 failed" in again.stdout
    assert sorted(statuses(tmp_path / "ds")) == ids


def test_failed_chips_are_summed_up_once_per_kind_and_listed_with_v(
    demo_world: Path, tmp_path: Path
) -> None:
    rows = demo_rows(demo_world, [(0.0, 0.0)])[:4]

    def broken(row: PairRow) -> PairRow:
        hr = row.pair.hr
        missing = str(tmp_path / "gone" / f"{row.roi_id}.tif")
        assets = {k: replace(a, href=missing) for k, a in hr.assets.items()}
        return replace(row, pair=replace(row.pair, hr=replace(hr, assets=AssetMap(assets))))

    rows = [broken(r) if i in (1, 3) else r for i, r in enumerate(rows)]
    write_pairs_file(tmp_path / "pairs.parquet", rows, demo_world)
    r = harvest(*FETCH, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert " 2 failed " in r.stdout and len(r.stdout.strip().splitlines()) == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("warning: 2 chips failed; the error column of ")
    assert "manifest.parquet" in lines[0] and "-v" in lines[0]
    assert len(lines) == 2, r.stderr  # one line per kind of error, not one per chip
    assert lines[1].startswith(f"  2 x AssetReadError, e.g. {rows[1].roi_id}: ")
    assert "gone" in lines[1]
    assert "WARNING" not in r.stderr and rows[3].roi_id not in r.stderr
    # With -v each failed chip is named as it fails (failed chips are retried).
    v = harvest("-v", *FETCH, cwd=tmp_path)
    assert v.returncode == 0, v.stderr
    for row in (rows[1], rows[3]):
        pattern = rf"DEBUG harvest\.stages\.fetch: chip {row.roi_id} failed: .*gone"
        assert re.search(pattern, v.stderr)
    assert "warning: 2 chips failed" in v.stderr
