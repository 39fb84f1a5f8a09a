"""`harvest fetch` and `harvest qa` on a pairs table of the demo world, killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pytest

from harvest import __version__
from harvest.config import config_hash
from harvest.demo.pairs import truth_pair_rows
from harvest.recipes import load_recipe
from harvest.tables import PairRow, SearchMetadata, write_pairs

HARVEST = str(Path(sys.executable).parent / "harvest")
RECIPE = load_recipe("sen2naip")


def harvest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HARVEST, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def write_demo_pairs(world: Path, path: Path, offsets_m: list[tuple[float, float]]) -> list[str]:
    """A pairs.parquet with one row per (sen2naip truth pair, offset in its chip-safe area)."""
    return write_pairs_file(path, truth_pair_rows(world, RECIPE, offsets_m), world)


def write_pairs_file(path: Path, rows: list[PairRow], world: Path) -> list[str]:
    """A sen2naip pairs.parquet of ``rows``, as a search of the demo world ``world`` writes it."""
    meta = SearchMetadata(
        recipe=RECIPE.name,
        recipe_hash=config_hash(RECIPE),
        catalog=str(world),
        provider="demo",
        start="2011-01-01",
        end="2024-12-31",
        n_requests=0,
        n_rois=len(rows),
        all_candidates=False,
        harvest_version=__version__,
    )
    write_pairs(path, rows, [], meta)
    return [r.roi_id for r in rows]


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def test_fetch_then_qa_with_other_thresholds(demo_world: Path, tmp_path: Path) -> None:
    ids = write_demo_pairs(demo_world, tmp_path / "pairs.parquet", [(0.0, 0.0)])
    args = ["fetch", "pairs.parquet", "--recipe", "sen2naip", "-o", "ds", "--no-progress"]
    proc = harvest(*args[:-1], "--progress", "--workers", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # The bar goes to stderr (chips/s and counts); stdout holds the summary line only.
    assert proc.stdout.startswith("4 kept, 3 rejected, 0 failed")
    assert len(proc.stdout.strip().splitlines()) == 1
    assert "7/7" in proc.stderr and "chips/s" in proc.stderr and "kept 4" in proc.stderr
    manifest = gpd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    assert sorted(manifest["roi_id"]) == ids
    kept = sorted(p.name for p in (tmp_path / "ds" / "cross-sensor").iterdir())
    assert kept == sorted(manifest.loc[manifest["status"] == "kept", "roi_id"])
    again = harvest(*args, cwd=tmp_path)  # every chip done: no rate to report
    assert again.returncode == 0, again.stderr
    assert "(7 done before; nothing left to fetch)" in again.stdout
    proc = harvest("qa", "ds", "--max-shift-px", "0.2", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    strict = gpd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    assert (strict["status"] == "kept").sum() < (manifest["status"] == "kept").sum()
    assert strict["reasons"].str.contains("shift").any()
    # Same folder, other recipe: a one-line error, nothing touched.
    bad = harvest("fetch", "pairs.parquet", "--recipe", "sen2venus", "-o", "ds", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "sen2naip" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = harvest("qa", "nowhere", cwd=tmp_path)
    assert missing.returncode == 1 and "harvest fetch" in missing.stderr
    nowhere = harvest(*args[:5], "other", "--scheduler", "no-port-here", cwd=tmp_path)
    assert nowhere.returncode == 1 and nowhere.stderr.startswith("error: cannot reach the Dask")
    assert len(nowhere.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_killed_fetch_resumes_without_loss_or_duplicates(demo_world: Path, tmp_path: Path) -> None:
    offsets = [(-300.0, -300.0), (300.0, 0.0), (0.0, 300.0)]
    ids = write_demo_pairs(demo_world, tmp_path / "pairs.parquet", offsets)
    args = ["fetch", "pairs.parquet", "--recipe", "sen2naip", "-o", "ds", "--no-progress"]
    status_dir = tmp_path / "ds" / ".harvest" / "status"
    run = subprocess.Popen(
        [HARVEST, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = len(list(status_dir.glob("*.json"))) if status_dir.exists() else 0
            if done >= 4 or run.poll() is not None:
                break
            time.sleep(0.02)
        assert run.poll() is None, "the run finished before it could be killed: give it more work"
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.wait(timeout=30)
    n_before = len(list(status_dir.glob("*.json")))
    assert 4 <= n_before < len(ids)
    assert not (tmp_path / "ds" / "manifest.parquet").exists()

    proc = harvest(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"({n_before} done before;" in proc.stdout
    manifest = gpd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    assert sorted(manifest["roi_id"]) == ids  # every chip exactly once
    assert set(manifest["status"]) <= {"kept", "rejected"}
    ds = tmp_path / "ds"
    for rid in ids:
        places = [(ds / sub / rid).is_dir() for sub in ("cross-sensor", "rejected")]
        assert sum(places) == 1, rid
        status = json.loads((status_dir / f"{rid}.json").read_text())
        folder = ds / status["folder"]
        assert sorted(p.name for p in folder.iterdir()) == [
            "HR.tif",
            "LR.tif",
            "SCL.tif",
            "metadata.json",
        ]
    assert _temporaries(ds) == []


def test_fetch_passes_the_earth_engine_project_and_endpoint(
    demo_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ee-project (default $EE_PROJECT) and --ee-url reach the fetch stage's settings."""
    from typer.testing import CliRunner

    import harvest.stages.fetch
    from harvest.cli import app
    from harvest.records import FetchSummary

    write_demo_pairs(demo_world, tmp_path / "pairs.parquet", [(0.0, 0.0)])
    seen: list[dict[str, object]] = []

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return FetchSummary(
            out_dir=tmp_path / "ds", manifest=tmp_path / "m.parquet", n_total=0,
            n_done_before=0, n_kept=0, n_rejected=0, n_failed=0, seconds=0.0, chips_per_s=0.0,
        )  # fmt: skip

    monkeypatch.setattr(harvest.stages.fetch, "run", spy)
    monkeypatch.setenv("EE_PROJECT", "from-env")
    base = ["fetch", str(tmp_path / "pairs.parquet"), "--recipe", "sen2naip", "-o", "ds"]
    runner = CliRunner()
    assert runner.invoke(app, [*base, "--no-progress"]).exit_code == 0
    url = "https://earthengine-highvolume.googleapis.com"
    flags = ["--ee-project", "given", "--ee-url", url, "--no-progress"]
    assert runner.invoke(app, [*base, *flags]).exit_code == 0
    assert [(s["ee_project"], s["ee_url"]) for s in seen] == [("from-env", None), ("given", url)]
