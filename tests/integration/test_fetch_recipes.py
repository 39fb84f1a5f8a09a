"""Fetch and QA of the recipes that are not SEN2NAIP, on the demo world: SEN2VENuS (three band
groups, 5 m over 10 m and 20 m), SEN1-2 (SAR against optical) and a non-integer LR/HR ratio
(Sentinel-HR's 2.5). They are written in the generic per-chip layout (ADR 0005).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from harvest.demo.pairs import truth_pair_rows
from harvest.demo.truth import load_truth
from harvest.qa import QaThresholds, Reason
from harvest.recipes import Recipe, load_recipe
from harvest.stages.fetch import run as run_fetch
from harvest.stages.qa import run as run_qa
from harvest.store import KEPT_DIR, REJECTED_DIR, sha256_file

OFFSETS_M = ((-50.0, 0.0), (50.0, 20.0))


def _status(out: Path) -> dict[str, dict[str, Any]]:
    return {
        p.stem: json.loads(p.read_text()) for p in sorted((out / ".harvest/status").glob("*.json"))
    }


def _demo_sen12() -> Recipe:
    # SEN1-2's 256 px chip (2560 m) is wider than a demo site: the same recipe with 120 px.
    data = load_recipe("sen12").model_dump(mode="json")
    data["lr"]["groups"][0]["chip_px"] = data["hr"]["groups"][0]["chip_px"] = 120
    return Recipe.model_validate(data)


def _fetch(world: Path, recipe: Recipe, out: Path) -> dict[str, Any]:
    rows = truth_pair_rows(world, recipe, OFFSETS_M, id_digits=5)
    truth = load_truth(world)
    by_pair = {(p.lr_item_id, p.hr_item_id): p for p in truth.pairs_for(recipe.name)}
    summary = run_fetch(rows, recipe, out)
    return {"out": out, "rows": rows, "summary": summary, "truth": by_pair, "recipe": recipe}


@pytest.fixture(scope="module")
def venus(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _fetch(demo_world, load_recipe("sen2venus"), tmp_path_factory.mktemp("v") / "ds")


@pytest.fixture(scope="module")
def sen12(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _fetch(demo_world, _demo_sen12(), tmp_path_factory.mktemp("s") / "ds")


def _no_failed_and_reasons_for_every_rejection(run: dict[str, Any]) -> None:
    status = _status(run["out"])
    assert set(status) == {r.roi_id for r in run["rows"]}
    assert run["summary"].n_failed == 0, run["summary"].failure_lines()
    for row in run["rows"]:
        st = status[row.roi_id]
        assert st["status"] in ("kept", "rejected"), st.get("error")
        reasons = set(st["reasons"].split(";")) - {""}
        assert (st["status"] == "rejected") == bool(reasons), (row.roi_id, reasons)
        pt = run["truth"][(row.pair.lr.item_id, row.pair.hr.item_id)]
        if pt.clean:
            assert st["status"] == "kept", (row.roi_id, pt.site_id, reasons)
        for issue in pt.issues:
            assert issue in reasons, (row.roi_id, issue, reasons)


def _group_files(
    run: dict[str, Any], row: Any, want: dict[str, tuple[int, int, int]]
) -> tuple[dict[str, Any], Path]:
    """Open every group's COG of a chip; check shapes, CRS and one shared footprint.

    Returns the chip's metadata.json and folder.
    """
    status = _status(run["out"])[row.roi_id]
    folder = run["out"] / status["folder"]
    meta = json.loads((folder / "metadata.json").read_text())
    bounds = []
    for name, shape in want.items():
        with rasterio.open(folder / name) as ds:
            assert (ds.count, ds.height, ds.width) == shape, name
            assert ds.crs.to_epsg() == row.utm_epsg
            bounds.append(ds.bounds)
            assert status["sha256"][name] == sha256_file(folder / name)
    for b in bounds[1:]:
        assert np.allclose(b, bounds[0], rtol=0, atol=0.01)
    return meta, folder


def test_sen2venus_fetch_ends_with_no_failed_row(venus: dict[str, Any]) -> None:
    _no_failed_and_reasons_for_every_rejection(venus)
    s = venus["summary"]
    assert s.n_kept >= 4 and s.n_rejected >= 1  # il-ses's cloudy pair is rejected


def test_sen2venus_groups_5_10_and_20_m_cover_one_footprint(venus: dict[str, Any]) -> None:
    want = {
        "hr_5m.tif": (7, 256, 256),
        "lr_10m.tif": (4, 128, 128),
        "lr_20m.tif": (4, 64, 64),
        "lr_scl.tif": (1, 128, 128),
    }
    recipe = venus["recipe"]
    for row in venus["rows"]:
        meta, folder = _group_files(venus, row, want)
        with rasterio.open(folder / meta["groups"]["lr_20m"]["file"]) as ds:
            assert ds.descriptions == ("B05", "B06", "B07", "B8A")
            assert ds.transform.c % 20 == 0 and ds.transform.f % 20 == 0  # S2 20 m pixel edges
        # Every QA decision is recorded: the checks, the band correspondence, the numbers.
        qa = meta["qa"]
        assert qa["checks"] == [c.value for c in recipe.qa.checks]
        assert qa["correspondence"] == recipe.qa.correspondence
        assert qa["kept"] == (meta["roi_id"] in _kept(venus))
        assert {(g["role"], g["name"]) for g in qa["groups"]} == {
            ("lr", "10m"),
            ("lr", "20m"),
            ("hr", "5m"),
        }
        assert meta["lr_id"] == row.pair.lr.item_id and meta["hr_id"] == row.pair.hr.item_id
        assert qa["thresholds"]["max_shift_px"] == QaThresholds().max_shift_px


def _kept(run: dict[str, Any]) -> set[str]:
    return {r for r, st in _status(run["out"]).items() if st["status"] == "kept"}


def test_generic_manifest_names_its_scene_ids_and_files(venus: dict[str, Any]) -> None:
    out = venus["out"]
    m = gpd.read_parquet(out / "manifest.parquet")
    assert sorted(m["roi_id"]) == sorted(r.roi_id for r in venus["rows"])
    for col in ("lr_id", "hr_id", "sha256_lr_10m", "sha256_lr_20m", "sha256_hr_5m"):
        assert col in m.columns, col
    assert "s2_id" not in m.columns and "sha256_lr" not in m.columns
    for row in m.itertuples():
        folder = out / row.folder
        assert (KEPT_DIR if row.status == "kept" else REJECTED_DIR) in row.folder
        assert row.sha256_hr_5m == sha256_file(folder / "hr_5m.tif")
        assert row.sha256_metadata == sha256_file(folder / "metadata.json")
        assert math.isfinite(row.qa2_deg)


def test_harvest_qa_decides_again_on_the_generic_layout(
    venus: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(venus["out"], out)
    angles = {r: st["qa"]["qa2_deg"] for r, st in _status(out).items()}
    kept = _kept(venus)
    limit = float(np.median([angles[r] for r in kept]))
    strict = run_qa(out, QaThresholds(max_spectral_angle_deg=limit))
    moved = {r for r in kept if angles[r] > limit}
    assert moved and strict.n_kept == len(kept) - len(moved)
    for rid in moved:
        st = _status(out)[rid]
        assert st["status"] == "rejected" and Reason.SPECTRAL.value in st["reasons"]
        assert (out / REJECTED_DIR / rid).is_dir() and not (out / KEPT_DIR / rid).exists()
        meta = json.loads((out / st["folder"] / "metadata.json").read_text())
        assert meta["qa"]["kept"] is False and "spectral" in meta["qa"]["reasons"]
        assert meta["qa"]["thresholds"]["max_spectral_angle_deg"] == limit
        assert st["sha256"]["metadata.json"] == sha256_file(out / st["folder"] / "metadata.json")
    # Rejected chips stay re-decidable: the default thresholds give the fetch's decisions back.
    again = run_qa(out)
    assert _kept({"out": out}) == kept and again.n_rejected == venus["summary"].n_rejected


def test_sen12_fetch_ends_with_no_failed_row_and_sar_checks(sen12: dict[str, Any]) -> None:
    _no_failed_and_reasons_for_every_rejection(sen12)
    want = {"lr_vv.tif": (1, 120, 120), "hr_rgb.tif": (3, 120, 120), "hr_scl.tif": (1, 120, 120)}
    status = _status(sen12["out"])
    for row in sen12["rows"]:
        meta, _ = _group_files(sen12, row, want)
        st = status[row.roi_id]
        # No band of a SAR image corresponds to an optical band: no shift, no spectral angle.
        assert st["qa"]["qa1_px"] is None and st["qa"]["qa2_deg"] is None
        assert st["qa"]["shift_method"] == "none"
        for reason in ("shift", "registration_failed", "spectral", "implausible_reflectance"):
            assert reason not in st["reasons"].split(";")
        assert "backscatter_range" in meta["qa"]["checks"]
        assert meta["groups"]["lr_vv"]["values"].startswith("sigma0 dB")
    assert sen12["summary"].n_kept > 0


def test_a_non_integer_ratio_is_fetched(demo_world: Path, tmp_path: Path) -> None:
    # Sentinel-HR's 2.5: Sentinel-2 area-averaged to 12.5 m against VENuS at 5 m.
    data = load_recipe("sen2venus").model_dump(mode="json")
    data["lr"]["resampling"] = "average"
    data["lr"]["groups"] = [
        {"name": "12m5", "bands": ["B02", "B03", "B04", "B08"], "gsd_m": 12.5, "chip_px": 64}
    ]
    data["hr"]["groups"][0]["chip_px"] = 160
    data["qa"]["correspondence"] = {"B02": "B3", "B03": "B4", "B04": "B7", "B08": "B11"}
    run = _fetch(demo_world, Recipe.model_validate(data), tmp_path / "ds")
    _no_failed_and_reasons_for_every_rejection(run)
    want = {"lr_12m5.tif": (4, 64, 64), "hr_5m.tif": (7, 160, 160), "lr_scl.tif": (1, 64, 64)}
    for row in run["rows"]:
        _group_files(run, row, want)


def test_sen2venus_shift_is_measured_between_corresponding_bands(
    venus: dict[str, Any], demo_world: Path
) -> None:
    # Truth: each scene is displaced by its own shift; the LR-vs-HR shift is their difference.
    truth = load_truth(demo_world)
    status = _status(venus["out"])
    checked = 0
    for row in venus["rows"]:
        pt = venus["truth"][(row.pair.lr.item_id, row.pair.hr.item_id)]
        if "cloud" in pt.issues:  # clouds move the content: no registration to compare
            continue
        s2, vns = truth.scene(pt.lr_item_id), truth.scene(pt.hr_item_id)
        east_m = s2.shift_m[0] - vns.shift_m[0]
        north_m = s2.shift_m[1] - vns.shift_m[1]
        qa = status[row.roi_id]["qa"]
        assert abs(qa["shift_dx_px"] - east_m / 10.0) <= 0.1, (pt.site_id, qa, east_m)
        assert abs(qa["shift_dy_px"] + north_m / 10.0) <= 0.1, (pt.site_id, qa, north_m)
        checked += 1
    assert checked >= 4


def test_harvest_qa_finds_the_recipe_of_older_and_broken_run_files(
    venus: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    from harvest.errors import StoreError

    out = tmp_path / "copy"
    shutil.copytree(venus["out"], out)
    run_file = out / ".harvest" / "run.json"
    run_info = json.loads(run_file.read_text())
    assert run_info["recipe_spec"] == venus["recipe"].model_dump(mode="json")
    # A folder fetched before run.json held the recipe: the shipped recipe of that name.
    run_file.write_text(json.dumps({k: run_info[k] for k in ("recipe", "config_hash")}))
    assert run_qa(out).n_kept == venus["summary"].n_kept
    run_file.write_text(json.dumps({**run_info, "recipe_spec": {"name": "x"}}))
    with pytest.raises(StoreError, match="names no recipe this harvest can read") as err:
        run_qa(out)
    assert "\n" not in str(err.value)
