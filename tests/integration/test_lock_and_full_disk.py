"""One run per output folder, and a full disk stops a run (fetch, qa, degrade) without damage.

The disk fills up by injection (``disk_full_after``, ``tests/fixtures/faults``): harvest's
guarded writes then fail the way the kernel fails a write on a full disk (``write()`` raises
ENOSPC and names no file). Another run is a real second process holding the folder's lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from harvest.demo.pairs import truth_pair_rows
from harvest.diskio import is_temporary
from harvest.errors import DiskWriteError, FolderLockedError
from harvest.lock import dataset_lock_path
from harvest.recipes import load_recipe
from harvest.stages.fetch import FetchJob
from harvest.stages.fetch import run as run_fetch
from harvest.stages.qa import run as run_qa
from harvest.store import sha256_file

RECIPE = load_recipe("sen2naip")
FAULTS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "faults"
HOLDER = """
import sys
from harvest.lock import dataset_lock_path, folder_lock
with folder_lock(sys.argv[1], dataset_lock_path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""
FILES_PER_CHIP = 4  # LR.tif, HR.tif, SCL.tif, metadata.json
# Every guarded write counts: the run file first, then each chip's files and its status file.
RUN_FILES = 1
WRITES_PER_CHIP = FILES_PER_CHIP + 1


def demo_jobs(world: Path) -> list[FetchJob]:
    rows = truth_pair_rows(world, RECIPE, ((0.0, 0.0),), id_digits=5)
    return [FetchJob(r.roi_id, r.lon_deg, r.lat_deg, r.utm_epsg, r.pair) for r in rows]


def statuses(out: Path) -> dict[str, dict]:
    folder = out / ".harvest" / "status"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if is_temporary(p)]


def assert_intact(out: Path, done: dict[str, dict]) -> None:
    """Every finished chip's folder holds exactly the files its status vouches for."""
    for st in done.values():
        folder = out / st["folder"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(st["sha256"])
        for name, digest in st["sha256"].items():
            assert sha256_file(folder / name) == digest, (folder, name)


@pytest.fixture
def holder() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Start another process that holds a folder's lock until the test ends."""
    procs: list[subprocess.Popen[str]] = []

    def start(folder: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_full_disk_stops_fetch_at_once_and_the_next_run_resumes(
    demo_world: Path, tmp_path: Path, disk_full_after: Callable[[int], None]
) -> None:
    jobs = demo_jobs(demo_world)
    out = tmp_path / "ds"
    disk_full_after(RUN_FILES + 3 * WRITES_PER_CHIP)  # three chips fit, the fourth's LR.tif not
    with pytest.raises(DiskWriteError) as caught:
        run_fetch(jobs, RECIPE, out)
    message = str(caught.value)
    # One line naming the file (inside the chip's temporary folder) and what to do.
    assert "\n" not in message and "No space left on device" in message
    assert message.startswith(f"cannot write {out}{os.sep}") and "LR.tif" in message
    assert "run the same command again to resume" in message
    # Stopped at the first full write: no failed rows, nothing half-written, finished chips intact.
    done = statuses(out)
    assert len(done) == 3 and {st["status"] for st in done.values()} <= {"kept", "rejected"}
    assert_intact(out, done)
    assert temporaries(out) == []
    assert not dataset_lock_path(out).exists()  # released on the way out

    disk_full_after(10_000)  # space again
    again = run_fetch(jobs, RECIPE, out)
    assert again.n_done_before == 3 and again.n_failed == 0
    assert again.n_kept + again.n_rejected == len(jobs)
    assert statuses(out).keys() == {j.roi_id for j in jobs}
    assert {k: v["sha256"] for k, v in statuses(out).items() if k in done} == {
        k: v["sha256"] for k, v in done.items()
    }  # the chips of the first run were not fetched again


def test_a_full_disk_on_a_dask_worker_stops_the_run(
    demo_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = demo_jobs(demo_world)
    out = tmp_path / "ds"
    # Worker processes start with this environment: each lets one chip through, then is full.
    monkeypatch.setenv("PYTHONPATH", str(FAULTS_DIR))
    monkeypatch.setenv("HARVEST_TEST_ENOSPC_AFTER", str(WRITES_PER_CHIP))
    with pytest.raises(DiskWriteError, match=f"cannot write {out}.*No space left on device"):
        run_fetch(jobs, RECIPE, out, workers=2)
    done = statuses(out)
    assert 1 <= len(done) <= 2 and {st["status"] for st in done.values()} <= {"kept", "rejected"}
    assert_intact(out, done)
    assert temporaries(out) == []
    monkeypatch.delenv("HARVEST_TEST_ENOSPC_AFTER")
    again = run_fetch(jobs, RECIPE, out)
    assert again.n_done_before == len(done) and again.n_failed == 0
    assert again.n_kept + again.n_rejected == len(jobs)


def test_fetch_and_qa_are_refused_while_another_run_holds_the_folder(
    demo_world: Path,
    tmp_path: Path,
    holder: Callable[[Path], subprocess.Popen[str]],
) -> None:
    jobs = demo_jobs(demo_world)[:2]
    out = tmp_path / "ds"
    run_fetch(jobs, RECIPE, out)
    # The other run's chip in progress: a second run's start-up clean-up used to delete it.
    in_progress = out / "cross-sensor" / f".{jobs[0].roi_id}.tmp-999999-0badcafe"
    in_progress.mkdir()
    other = holder(out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(FolderLockedError, match=f"pid {other.pid} on .*started "):
        run_fetch(demo_jobs(demo_world), RECIPE, out)  # five more chips to fetch: refused
    with pytest.raises(FolderLockedError, match=f"pid {other.pid} on "):
        run_qa(out)
    assert in_progress.is_dir()  # not swept
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert after == before  # nothing written, moved or removed (the holder's record included)


def _hr_tif(path: Path, seed: int) -> None:
    """A 4-band 64 x 64 HR GeoTIFF of float reflectance at 2.5 m."""
    data = np.random.default_rng(seed).uniform(0.05, 0.4, (4, 64, 64)).astype(np.float32)
    profile = {
        "driver": "GTiff",
        "width": 64,
        "height": 64,
        "count": 4,
        "dtype": "float32",
        "crs": "EPSG:32615",
        "transform": Affine(2.5, 0, 500_000, 0, -2.5, 4_000_000),
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)


def test_a_full_disk_stops_degrade_and_the_next_run_resumes(
    tmp_path: Path, disk_full_after: Callable[[int], None]
) -> None:
    from harvest.stages import degrade

    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    for k in range(3):
        _hr_tif(hr_dir / f"tile_{k}.tif", k)
    out = tmp_path / "synth"
    # Per image: HR.tif, HR_statistical.tif, LR_statistical.tif, histograms.npz, metadata.json.
    disk_full_after(5 + 2)
    with pytest.raises(DiskWriteError) as caught:
        degrade.run(hr_dir, "sen2naip", out, methods=("statistical",))
    message = str(caught.value)
    assert message.startswith(f"cannot write {out}{os.sep}") and "\n" not in message
    assert "No space left on device" in message
    images = sorted((out / "synthetic").glob("*/*"))
    assert [p.parent.name for p in images] == ["tile_0"]  # the first image, complete
    assert (images[0] / "metadata.json").is_file()
    assert temporaries(out) == []
    disk_full_after(10_000)
    summary = degrade.run(hr_dir, "sen2naip", out, methods=("statistical",))
    assert (summary.n_done_before, summary.n_written) == (1, 2)


def test_degrade_is_refused_while_another_run_holds_the_folder(
    tmp_path: Path, holder: Callable[[Path], subprocess.Popen[str]]
) -> None:
    from harvest.stages import degrade

    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    _hr_tif(hr_dir / "tile_0.tif", 0)
    out = tmp_path / "synth"
    # The first run's image in progress: the second run's start-up sweep deleted it.
    in_progress = out / "synthetic" / "tile_0" / ".image.tmp-999999-0badcafe"
    in_progress.mkdir(parents=True)
    other = holder(out)
    with pytest.raises(FolderLockedError, match=f"pid {other.pid} on .*started "):
        degrade.run(hr_dir, "sen2naip", out, methods=("statistical",))
    assert in_progress.is_dir()
    assert not (out / "synthetic" / "tile_0" / "image").exists()
