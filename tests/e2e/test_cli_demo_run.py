"""`harvest demo run`: every stage on the demo world, then a summary table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import shapely

from harvest.demo.truth import load_truth


def run_demo(out: Path, world: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harvest.cli", "demo", "run", str(out), "--world", str(world)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_run_runs_every_stage_and_resumes(tmp_path: Path, demo_world: Path) -> None:
    out = tmp_path / "demo"
    res = run_demo(out, demo_world)
    assert res.returncode == 0, res.stderr
    stages = ("demo world", "sample (demo sites)", "sample (CONUS)", "search (sen2naip)", "fetch")
    stages += ("degrade", "embed + prune")
    for stage in stages:
        assert stage in res.stdout
    truth = load_truth(demo_world / "truth.json")
    assert f"{len(truth.pairs_for('sen2naip'))} sen2naip" in res.stdout

    rois = gpd.read_parquet(out / "rois.parquet")
    region = gpd.read_file(demo_world / "region.geojson").union_all()
    assert len(rois) == len(truth.sites)
    assert shapely.contains_xy(region, rois.geometry.x, rois.geometry.y).all()
    assert len(gpd.read_parquet(out / "rois-conus.parquet")) == 18_000
    # One ROI per site, so the paired ROIs are the sites truth gives a sen2naip pair.
    pairs = gpd.read_parquet(out / "pairs-sen2naip.parquet")
    assert len(pairs) == len({p.site_id for p in truth.pairs_for("sen2naip")})
    # Every chip of the search is fetched and decided; clean pairs of the truth are kept.
    manifest = gpd.read_parquet(out / "sen2naip" / "manifest.parquet")
    assert sorted(manifest.roi_id) == sorted(pairs.roi_id)
    clean = {(p.lr_item_id, p.hr_item_id) for p in truth.pairs_for("sen2naip") if p.clean}
    for row in manifest.itertuples():
        chosen = pairs.loc[pairs.roi_id == row.roi_id].iloc[0]
        if (chosen.lr_item_id, chosen.hr_item_id) in clean:
            assert row.status == "kept", (row.roi_id, row.reasons)
        else:
            assert row.status == "rejected", row.roi_id

    # The kept HR chips are degraded by each method of the published model.
    kept = (manifest.status == "kept").sum()
    assert kept >= 1
    assert len(list((out / "sen2naip-synthetic" / "synthetic").glob("*/*/metadata.json"))) == kept

    # One synthetic image per cluster, with the report and contact sheet beside the selection.
    selection = gpd.read_parquet(out / "selection.parquet")
    assert len(selection) == kept
    assert selection.selected.sum() == selection.cluster[selection.selected].nunique() >= 1
    assert (out / "selection.report.md").is_file() and (out / "selection.clusters.png").is_file()

    # Running again reuses every finished stage and changes nothing.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = run_demo(out, demo_world)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(reused)") == 7
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == before
