"""`harvest build configs/builds/demo-sen2venus.yaml`: SEN2VENuS's published layout.

On the demo world, whose VENuS scenes are ``gain * landscape + offset`` of the Sentinel-2
bands, displaced by known shifts, with known invalid areas: every clean same-day pair must be
written (and registered close to the truth), every pair the truth calls unclean dropped, and
the files must read back as the paper describes (torch.load, int16, [n, 4, 256|128|64, ...],
tab-separated index.csv with the published columns, patch footprints).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch

from harvest.backends.base import AssetMap, AssetRef
from harvest.backends.registry import open_catalog, reader_for
from harvest.demo.truth import load_truth
from harvest.recipes import load_recipe
from harvest.stages import _sen2venus as stage
from harvest.writers.sen2venus import INDEX_COLUMNS

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "builds" / "demo-sen2venus.yaml"


def build(out: Path, world: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harvest.cli", "build", str(CONFIG), "--set", f"output={out}",
         "--set", f"catalog.world={world}", "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip


@pytest.fixture(scope="module")
def built(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("sen2venus") / "ds"
    res = build(out, demo_world)
    assert res.returncode == 0, res.stderr
    return {"out": out, "stdout": res.stdout, "world": demo_world}


def _status(out: Path) -> dict[str, dict[str, Any]]:
    return {
        p.stem: json.loads(p.read_text()) for p in (out / ".harvest" / "sen2venus").glob("*.json")
    }


def test_clean_pairs_are_written_and_the_others_dropped(built: dict[str, Any]) -> None:
    out, world = built["out"], built["world"]
    truth = load_truth(world / "truth.json")
    status = _status(out)
    by_items = {}
    for site in {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}:
        for row in csv.DictReader((out / site / "index.csv").open(), delimiter="\t"):
            by_items[(row["sentinel2_product_id"], row["venus_product_id"])] = row
    pairs = truth.pairs_for("sen2venus")
    assert pairs and any(p.clean for p in pairs) and any(not p.clean for p in pairs)
    for p in pairs:
        assert ((p.lr_item_id, p.hr_item_id) in by_items) == p.clean, (p, status)
    record = json.loads((out / "dataset.json").read_text())
    counts = record["counts"]
    assert counts["pairs_written"] == len(by_items) == sum(p.clean for p in pairs)
    assert counts["patches"] == sum(int(r["nb_patches"]) for r in by_items.values()) >= 1
    assert len(record["dropped_pairs"]) == counts["pairs_found"] - counts["pairs_written"]
    card = (out / "README.md").read_text()
    assert f"| pairs written | {counts['pairs_written']} |" in card
    assert f"| patches (256 px at 5 m) | {counts['patches']} |" in card
    for dropped in record["dropped_pairs"]:
        assert f"- {dropped['pair']}: {dropped['reason']}" in card


def test_registration_matches_the_worlds_shifts(built: dict[str, Any]) -> None:
    out, world = built["out"], built["world"]
    truth = load_truth(world / "truth.json")
    for pid, st in _status(out).items():
        if st["status"] != "written":
            continue
        site = next(s for s in truth.sites if pid.startswith(s.site_id + "_"))
        day = pid.rsplit("_", 1)[1]
        s2 = next(
            s for s in truth.scenes
            if s.collection == "sentinel-2-l2a" and s.site_id == site.site_id
            and s.datetime[:10] == day
        )  # fmt: skip
        venus = next(
            s for s in truth.scenes
            if s.collection == "venus-l2a" and s.site_id == site.site_id and s.datetime[:10] == day
        )  # fmt: skip
        # S2 relative to VENuS, in 10 m px (rows southwards); the truth's shifts are (east, north).
        want = ((s2.shift_m[0] - venus.shift_m[0]) / 10, -(s2.shift_m[1] - venus.shift_m[1]) / 10)
        assert np.allclose(st["shift_px"], want, atol=0.15), (pid, st["shift_px"], want)


def test_written_patches_meet_the_papers_radiometric_quality(built: dict[str, Any]) -> None:
    # SEN2VENuS reports MAE < 0.01 in every band and RMSE < 0.03 between S2 and the mapped
    # VENuS brought to S2 resolution (Gaussian matched to the MTF, then decimation).
    from harvest.sen2venus import mtf_downsample

    out = built["out"]
    for index in out.glob("*/index.csv"):
        for row in csv.DictReader(index.open(), delimiter="\t"):
            for hr_key, lr_key, factor in (
                ("tensor_05m_b2b3b4b8", "tensor_10m_b2b3b4b8", 2),
                ("tensor_05m_b5b6b7b8a", "tensor_20m_b5b6b7b8a", 4),
            ):
                hr = torch.load(index.parent / row[hr_key]).numpy() / 10000.0
                lr = torch.load(index.parent / row[lr_key]).numpy() / 10000.0
                err = np.stack([mtf_downsample(p, factor) for p in hr]) - lr
                mae = np.abs(err).mean(axis=(0, 2, 3))
                rmse = np.sqrt((err**2).mean(axis=(0, 2, 3)))
                assert np.all(mae < 0.01) and np.all(rmse < 0.03), (row[hr_key], mae, rmse)


def test_the_files_read_back_as_the_paper_describes(built: dict[str, Any]) -> None:
    from harvest.demo.stac import load_world_items

    out = built["out"]
    items = {i.id: i for i in load_world_items(built["world"])}
    shapes = {"05m_b2b3b4b8": 256, "10m_b2b3b4b8": 128, "05m_b5b6b7b8a": 256, "20m_b5b6b7b8a": 64}
    n_rows = 0
    for index in out.glob("*/index.csv"):
        with index.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        assert rows and tuple(rows[0]) == INDEX_COLUMNS
        for row in rows:
            n_rows += 1
            n = int(row["nb_patches"])
            for key, side in shapes.items():
                t = torch.load(index.parent / row[f"tensor_{key}"])
                assert t.dtype == torch.int16 and tuple(t.shape) == (n, 4, side, side)
                assert 0 < float(t.float().mean()) / 10000 < 1  # reflectance x 10000
            frame = gpd.read_file(index.parent / row["patches_gpkg"])
            assert len(frame) == n and frame.crs.is_projected
            assert frame.geometry[0].area == pytest.approx(1280.0**2)
            pair_id = f"{index.parent.name}_{row['s2_tile']}_{row['date']}"
            assert row["tensor_05m_b2b3b4b8"] == f"{pair_id}_05m_b2b3b4b8.pt"
            # The VENuS viewing zenith angle, from the item's view:incidence_angle.
            item = items[row["venus_product_id"]]
            assert float(row["venus_zenith_angle"]) == item.properties["view:incidence_angle"]
        # VENuS sees a site under one viewing angle, whatever the date.
        assert len({row["venus_zenith_angle"] for row in rows}) == 1
    assert n_rows >= 1


def test_a_second_build_does_nothing_and_changes_nothing(built: dict[str, Any]) -> None:
    out = built["out"]
    files = {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and ".harvest" not in p.parts
        and p.name not in ("dataset.json", "CHANGELOG.md")
    }
    res = build(out, built["world"])
    assert res.returncode == 0, res.stderr
    assert "0 written" in res.stdout and "done before" in res.stdout
    after = {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and ".harvest" not in p.parts
        and p.name not in ("dataset.json", "CHANGELOG.md")
    }
    assert after == files
    # extend: nothing new on an unchanged catalog (exit 3); no ROIs to sample on whole sites.
    res = subprocess.run(
        [sys.executable, "-m", "harvest.cli", "extend", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 3, res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "harvest.cli", "extend", str(out), "--n", "2", "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 1 and "covers whole sites" in res.stderr


def test_maja_masks_of_either_product_invalidate_their_pixels(
    demo_world: Path, tmp_path: Path
) -> None:
    # A MAJA provider's geophysical mask (MG2: water, relief shadows...) on Sentinel-2 and on
    # VENuS: any set bit makes the pixel invalid, as the paper's union of masks.
    sites = stage.read_sites(demo_world / "sites.geojson")
    catalog = open_catalog(str(demo_world)).catalog
    pairs = stage.find_pairs(
        catalog, sites, load_recipe("sen2venus"), date(2015, 1, 1), date(2030, 1, 1)
    )
    pair = pairs[0]
    grids = stage.pair_grids(pair)
    assert grids is not None
    g5, _, g20 = grids

    def mask_file(name: str, grid: Any, rows: slice, cols: slice, value: int) -> AssetRef:
        data = np.zeros((grid.height, grid.width), np.uint8)
        data[rows, cols] = value
        path = tmp_path / f"{name}.tif"
        with rasterio.open(
            path, "w", driver="GTiff", width=grid.width, height=grid.height, count=1,
            dtype="uint8", crs=f"EPSG:{grid.epsg}", transform=grid.transform,
        ) as ds:  # fmt: skip
            ds.write(data, 1)
        return AssetRef(str(path))

    def with_mask(scene: Any, ref: AssetRef) -> Any:
        return dataclasses.replace(scene, assets=AssetMap({**scene.assets, "MG2": ref}))

    def read(p: Any) -> Any:
        return stage.read_pair(
            reader_for(p.s2.assets, None), reader_for(p.venus.assets, None), p, grids
        )

    before = read(pair)
    s2_mg2 = mask_file("s2_mg2", g20, slice(2, 6), slice(3, 9), 1)  # water
    venus_mg2 = mask_file("venus_mg2", g5, slice(40, 60), slice(10, 30), 16)  # relief shadow
    masked = dataclasses.replace(
        pair, s2=with_mask(pair.s2, s2_mg2), venus=with_mask(pair.venus, venus_mg2)
    )
    after = read(masked)
    assert before.valid_s2_20m[2:6, 3:9].all() and not after.valid_s2_20m[2:6, 3:9].any()
    assert not after.valid_s2_10m[4:12, 6:18].any()
    assert before.valid_venus[40:60, 10:30].all() and not after.valid_venus[40:60, 10:30].any()
    # Elsewhere nothing changes.
    outside = np.ones_like(after.valid_s2_20m)
    outside[2:6, 3:9] = False
    assert (after.valid_s2_20m[outside] == before.valid_s2_20m[outside]).all()
    assert after.valid_venus.sum() == before.valid_venus.sum() - 20 * 20
