"""The embedded demo world: files, STAC, truth, physics, determinism and the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from scipy import ndimage

from harvest.demo import sensors
from harvest.demo.stac import item_dicts_absolute, resolve_parquet_href
from harvest.demo.truth import NaipSceneTruth, S2SceneTruth, WorldTruth, load_truth
from harvest.demo.validation import OfflineValidator, validate_item_dict
from harvest.demo.world import MARKER, run_demo_world
from harvest.errors import DemoWorldError

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "stac-items"
if not FIXTURES.exists():
    FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "stac-items"
PC_S2 = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"


@pytest.fixture(scope="module")
def truth(demo_world: Path) -> WorldTruth:
    return load_truth(demo_world)


@pytest.fixture(scope="module")
def raw_items(demo_world: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    out = {}
    for path in sorted(demo_world.glob("*/*/*.json")):
        d = json.loads(path.read_text())
        if d.get("type") == "Feature":
            out[d["id"]] = (path, d)
    return out


def _asset_path(item_json: Path, d: dict[str, Any], key: str) -> Path:
    return (item_json.parent / d["assets"][key]["href"]).resolve()


# --- world layout and truth ---------------------------------------------------------------


def test_world_has_the_planned_sites_and_products(truth: WorldTruth, demo_world: Path) -> None:
    assert len(truth.sites) == 7
    assert sum(s.conus for s in truth.sites) == 5
    assert len({s.state for s in truth.sites if s.conus}) == 5
    assert {s.country for s in truth.sites if not s.conus} == {"FR", "IL"}
    for s in truth.sites:
        assert 32601 <= s.utm_epsg <= 32660
        b = s.bounds
        # S2-like grids: pixel edges on multiples of 10 m and 20 m (60 m site origin).
        assert b.xmin % 60 == 0 and b.ymax % 60 == 0
        assert b.xmax - b.xmin == b.ymax - b.ymin == 2400
        assert re.fullmatch(r"\d{2}[C-X][A-Z]{2}", s.mgrs_tile)
    kinds = {s.kind for s in truth.scenes}
    assert kinds == {"naip", "sentinel-2-l2a", "venus-l2a", "sentinel-1-grd"}
    marker = json.loads((demo_world / MARKER).read_text())
    assert marker["seed"] == truth.seed == 0


def test_truth_json_is_pretty_and_canonical(demo_world: Path, truth: WorldTruth) -> None:
    text = (demo_world / "truth.json").read_text()
    assert text.startswith("{\n  ")
    assert json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n" == text
    for scene in truth.scenes:
        if isinstance(scene, S2SceneTruth):
            assert [b.band for b in scene.bands] == [
                "B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A",
            ]  # fmt: skip
            assert all(0.001 <= b.noise_std <= 0.0025 for b in scene.bands)
            assert np.hypot(*scene.shift_m) <= 6.0 + 1e-9


def test_load_truth_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DemoWorldError, match="no demo world truth"):
        load_truth(tmp_path)
    (tmp_path / "truth.json").write_text('{"seed": 1}')
    with pytest.raises(DemoWorldError, match="does not match") as exc:
        load_truth(tmp_path / "truth.json")
    assert "\n" not in str(exc.value)


def _dt(d: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(d["properties"]["datetime"].replace("Z", "+00:00"))


def test_expected_pairs_follow_the_rules_from_the_items(
    truth: WorldTruth, raw_items: dict[str, tuple[Path, dict[str, Any]]]
) -> None:
    """Recompute every recipe's pairs from the STAC items alone and compare with the truth."""
    items = [d for _, d in raw_items.values()]

    def site(d: dict[str, Any]) -> tuple[float, ...]:
        return tuple(d["bbox"])

    s2 = [d for d in items if d["collection"] == "sentinel-2-l2a"]
    found: dict[str, set[tuple[str, str]]] = {"sen2naip": set(), "sen2venus": set(), "sen12": set()}
    for a in s2:
        for b in items:
            if site(a) != site(b):
                continue
            hours = abs((_dt(a) - _dt(b)).total_seconds()) / 3600
            days = abs((_dt(a).date() - _dt(b).date()).days)
            if b["collection"] == "naip" and hours <= 24:
                assert days <= 1
                found["sen2naip"].add((a["id"], b["id"]))
            if b["collection"] == "naip" and hours > 24:
                assert days >= 3, "no ambiguous 1-day-but-more-than-24-h case"
            if b["collection"] == "venus-l2a" and days == 0:
                found["sen2venus"].add((a["id"], b["id"]))
            season = {12: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 2}
            if (
                b["collection"] == "sentinel-1-grd"
                and season.get(_dt(a).month, 3) == season.get(_dt(b).month, 3)
                and _dt(a).year == _dt(b).year
                and a["properties"]["eo:cloud_cover"] <= 1.0
            ):
                found["sen12"].add((b["id"], a["id"]))
    for recipe, pairs in found.items():
        expected = {(p.lr_item_id, p.hr_item_id) for p in truth.pairs_for(recipe)}
        assert pairs == expected, recipe
    naip_pairs = truth.pairs_for("sen2naip")
    assert len(naip_pairs) == 7
    assert sum(p.clean for p in naip_pairs) == 4
    assert sorted(i for p in naip_pairs for i in p.issues) == ["blank", "cloud", "nodata"]
    assert any(abs(p.dt_hours) < 12 and p.dt_hours < 0 for p in naip_pairs)  # one day before
    assert any(p.dt_hours > 12 for p in naip_pairs)  # same day
    # Cloud, nodata and blank cover the site centre, which every chip of the site contains.
    for p in truth.pairs:
        lr = truth.scene(p.lr_item_id if p.recipe != "sen12" else p.hr_item_id)
        assert isinstance(lr, S2SceneTruth)
        assert lr.clouds.centre_clear == ("cloud" not in p.issues and "nodata" not in p.issues)
        if "blank" in p.issues:
            naip = truth.scene(p.hr_item_id)
            assert isinstance(naip, NaipSceneTruth)
            site = truth.site(p.site_id)
            cx, cy = (
                (site.bounds.xmin + site.bounds.xmax) / 2,
                (site.bounds.ymin + site.bounds.ymax) / 2,
            )
            box = naip.blank_boxes[0]
            assert box.xmin < cx < box.xmax and box.ymin < cy < box.ymax
    assert len(truth.pairs_for("sen2venus")) == 4
    assert sum(p.clean for p in truth.pairs_for("sen2venus")) == 3
    assert len(truth.pairs_for("sen12")) >= 6
    # Scenes days apart exist (never a pair).
    s2_near_naip = {p.lr_item_id for p in naip_pairs}
    assert any(
        s.kind == "sentinel-2-l2a" and s.hr_source != "landscape" and s.item_id not in s2_near_naip
        for s in truth.scenes
    )


# --- STAC --------------------------------------------------------------------------------


def test_every_item_validates_offline(
    demo_world: Path, raw_items: dict[str, tuple[Path, dict[str, Any]]]
) -> None:
    """Items as written (provider schema) and as pystac reads them (migrated) both validate."""
    for path, d in raw_items.values():
        validate_item_dict(d, href=str(path))
    validator = OfflineValidator()
    catalog = pystac.Catalog.from_file(str(demo_world / "catalog.json"))
    catalog.validate(validator=validator)
    n = 0
    for coll in catalog.get_children():
        coll.validate(validator=validator)
        for item in coll.get_items():
            item.validate(validator=validator)
            roundtrip = pystac.Item.from_dict(item.to_dict(), migrate=False)
            assert roundtrip.to_dict() == item.to_dict()
            n += 1
    assert n == len(raw_items) == 37


def test_offline_validation_catches_bad_items(
    raw_items: dict[str, tuple[Path, dict[str, Any]]],
) -> None:
    _, good = next(iter(raw_items.values()))
    bad = json.loads(json.dumps(good))
    bad["properties"]["proj:epsg"] = "32615"
    with pytest.raises(pystac.errors.STACValidationError):
        validate_item_dict(bad)
    bad = json.loads(json.dumps(good))
    del bad["geometry"]
    with pytest.raises(pystac.errors.STACValidationError):
        validate_item_dict(bad)


def test_s2_items_have_the_planetary_computer_schema(
    raw_items: dict[str, tuple[Path, dict[str, Any]]],
) -> None:
    ref = json.loads((FIXTURES / PC_S2).read_text())
    s2 = [d for _, d in raw_items.values() if d["collection"] == "sentinel-2-l2a"]
    assert len(s2) == 19
    pattern = re.compile(r"S2[AB]_MSIL2A_\d{8}T\d{6}_R\d{3}_T\d{2}[A-Z]{3}_\d{8}T\d{6}")
    for d in s2:
        assert pattern.fullmatch(d["id"]), d["id"]
        missing = set(ref["properties"]) - set(d["properties"])
        assert not missing, missing
        assert d["properties"]["s2:mgrs_tile"] in d["id"]
        for key in ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "SCL"):
            a = d["assets"][key]
            assert a["type"] == ref["assets"][key]["type"]
            assert a["roles"] == ["data"]
            assert a["gsd"] == (10 if key in ("B02", "B03", "B04", "B08") else 20)
            if key != "SCL":
                assert a["eo:bands"] == ref["assets"][key]["eo:bands"]
                rb = a["raster:bands"][0]
                new = d["properties"]["s2:processing_baseline"] >= "04.00"
                assert rb["offset"] == (-0.1 if new else 0.0) and rb["scale"] == 0.0001
        assert {"view:off_nadir", "view:sun_azimuth", "view:sun_elevation"} <= set(d["properties"])
    baselines = {d["properties"]["s2:processing_baseline"] for d in s2}
    assert any(b >= "04.00" for b in baselines) and any(b < "04.00" for b in baselines)


def test_naip_s1_venus_items_have_their_provider_schema(
    raw_items: dict[str, tuple[Path, dict[str, Any]]],
) -> None:
    items = [d for _, d in raw_items.values()]
    naip = [d for d in items if d["collection"] == "naip"]
    assert len(naip) == 7
    for d in naip:
        assert re.fullmatch(r"[a-z]{2}_m_\d{7}_(ne|nw|se|sw)_\d{2}_1_\d{8}", d["id"])
        p = d["properties"]
        assert {"naip:year", "naip:state", "gsd", "proj:epsg", "proj:shape", "proj:transform"} <= (
            set(p)
        )
        assert p["gsd"] == 1.0 and p["datetime"].endswith("T00:00:00Z")
        assert list(d["assets"]) == ["image"]
        assert [b["common_name"] for b in d["assets"]["image"]["eo:bands"]] == [
            "red", "green", "blue", "nir",
        ]  # fmt: skip
    s1 = [d for d in items if d["collection"] == "sentinel-1-grd"]
    assert len(s1) == 7
    for d in s1:
        p = d["properties"]
        assert p["sar:instrument_mode"] == "IW" and p["sar:polarizations"] == ["VV", "VH"]
        assert p["sat:orbit_state"] in ("ascending", "descending")
        assert set(d["assets"]) == {"vv", "vh"}
        assert re.fullmatch(
            r"S1[AB]_IW_GRDH_1SDV_\d{8}T\d{6}_\d{8}T\d{6}_\d{6}_[0-9A-F]{6}", d["id"]
        )
    venus = [d for d in items if d["collection"] == "venus-l2a"]
    assert len(venus) == 4
    for d in venus:
        assert {"B3", "B4", "B7", "B8", "B9", "B10", "B11", "B12", "CLM", "EDG"} == set(d["assets"])
        assert d["assets"]["B3"]["raster:bands"][0]["scale"] == 0.001


def test_catalog_hrefs_are_relative_and_resolve(
    demo_world: Path, raw_items: dict[str, tuple[Path, dict[str, Any]]]
) -> None:
    root = json.loads((demo_world / "catalog.json").read_text())
    children = [link for link in root["links"] if link["rel"] == "child"]
    assert {c["href"].split("/")[1] for c in children} == {
        "sentinel-2-l2a", "naip", "venus-l2a", "sentinel-1-grd",
    }  # fmt: skip
    for c in children:
        coll = json.loads((demo_world / c["href"]).read_text())
        assert coll["extent"]["spatial"]["bbox"] and coll["extent"]["temporal"]["interval"]
    for path, d in raw_items.values():
        for link in d["links"]:
            assert not os.path.isabs(link["href"]) and "://" not in link["href"]
            assert (path.parent / link["href"]).resolve().exists()
        for key, asset in d["assets"].items():
            assert not os.path.isabs(asset["href"])
            assert _asset_path(path, d, key).is_file()
    assert str(demo_world) not in "".join(p.read_text() for p in demo_world.rglob("*.json"))
    absolute = item_dicts_absolute(demo_world)
    assert all(os.path.isabs(a["href"]) for d in absolute for a in d["assets"].values())


def test_stac_geoparquet_matches_the_catalog(
    demo_world: Path, raw_items: dict[str, tuple[Path, dict[str, Any]]]
) -> None:
    import duckdb

    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    for coll in ("sentinel-2-l2a", "naip", "venus-l2a", "sentinel-1-grd"):
        path = demo_world / "stac-geoparquet" / f"{coll}.parquet"
        rows = con.execute(
            "SELECT id, collection, bbox.xmin, bbox.ymax, assets FROM read_parquet(?) ORDER BY id",
            [str(path)],
        ).fetchall()
        expected = sorted(i for i, (_, d) in raw_items.items() if d["collection"] == coll)
        assert [r[0] for r in rows] == expected
        for item_id, collection, xmin, ymax, assets in rows:
            assert collection == coll
            assert list(raw_items[item_id][1]["bbox"])[0] == pytest.approx(xmin)
            assert list(raw_items[item_id][1]["bbox"])[3] == pytest.approx(ymax)
            for asset in assets.values():
                if asset is not None:
                    assert resolve_parquet_href(path, asset["href"]).is_file()
    n_clear = con.execute(
        'SELECT count(*) FROM read_parquet(?) WHERE "eo:cloud_cover" <= 1',
        [str(demo_world / "stac-geoparquet" / "sentinel-2-l2a.parquet")],
    ).fetchone()
    assert n_clear is not None and 0 < n_clear[0] < 19


def test_region_geojson_holds_chip_safe_areas(demo_world: Path, truth: WorldTruth) -> None:
    from pyproj import Transformer
    from shapely.geometry import shape

    region = json.loads((demo_world / "region.geojson").read_text())
    sites = json.loads((demo_world / "sites.geojson").read_text())
    assert len(region["features"]) == len(sites["features"]) == 7
    for feat, full in zip(region["features"], sites["features"], strict=True):
        s = truth.site(feat["properties"]["site_id"])
        poly, foot = shape(feat["geometry"]), shape(full["geometry"])
        assert poly.is_valid and poly.area > 0 and foot.contains(poly)
        assert poly.bounds[0] >= -180 and poly.bounds[3] <= 90  # lon/lat (CRS84)
        tr = Transformer.from_crs(4326, s.utm_epsg, always_xy=True)
        for lon, lat in poly.exterior.coords:
            x, y = tr.transform(lon, lat)
            # a 1210 m chip centred anywhere in the region lies inside the site
            assert s.bounds.xmin <= x - 605 and x + 605 <= s.bounds.xmax
            assert s.bounds.ymin <= y - 605 and y + 605 <= s.bounds.ymax


# --- COGs --------------------------------------------------------------------------------

DTYPES = {
    "sentinel-2-l2a": "uint16",
    "naip": "uint8",
    "venus-l2a": "int16",
    "sentinel-1-grd": "float32",
}


def test_every_cog_is_tiled_with_overviews_on_its_utm_grid(
    raw_items: dict[str, tuple[Path, dict[str, Any]]],
) -> None:
    n = 0
    for path, d in raw_items.values():
        epsg = d["properties"]["proj:epsg"]
        for key, asset in d["assets"].items():
            with rasterio.open(_asset_path(path, d, key)) as src:
                assert src.driver == "GTiff"
                assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
                assert src.crs.to_epsg() == epsg and 32601 <= epsg <= 32660
                bh, bw = src.block_shapes[0]
                assert bh < src.height and bw < src.width
                assert len(src.overviews(1)) >= 1
                assert [src.height, src.width] == asset["proj:shape"]
                assert list(src.transform)[:6] == pytest.approx(asset["proj:transform"])
                expected = "uint8" if key in ("SCL", "CLM", "EDG") else DTYPES[d["collection"]]
                assert src.dtypes[0] == expected
                data = src.read()  # reading every block proves the file is whole
                assert np.isfinite(data.astype(np.float64)).all()
                n += 1
    assert n > 200


# --- physics -----------------------------------------------------------------------------

NAIP_ORDER = {"red": 0, "green": 1, "blue": 2, "nir": 3}


def _naip_at_hr(path: Path) -> np.ndarray:
    """NAIP area-averaged to 2.5 m with GDAL's warper (independent of harvest.demo)."""
    with rasterio.open(path) as src:
        t = src.transform
        with WarpedVRT(
            src,
            transform=t @ Affine.scale(2.5),
            width=src.width * 2 // 5,
            height=src.height * 2 // 5,
            resampling=Resampling.average,
            dtype="float32",
        ) as vrt:
            return vrt.read().astype(np.float64)


def _redegrade_ratios(
    demo_world: Path,
    scene: S2SceneTruth,
    naip: NaipSceneTruth,
    raw_items: dict[str, tuple[Path, dict[str, Any]]],
    sigma_delta: float = 0.0,
    ignore_shift: bool = False,
) -> list[float]:
    npath, nd = raw_items[naip.item_id]
    hr = _naip_at_hr(_asset_path(npath, nd, "image"))
    spath, sd = raw_items[scene.item_id]
    with rasterio.open(_asset_path(spath, sd, "SCL")) as src:
        scl10 = np.kron(src.read(1), np.ones((2, 2), dtype=np.uint8))
    valid = np.isin(scl10, (4, 5, 6))
    valid[:4], valid[-4:], valid[:, :4], valid[:, -4:] = False, False, False, False
    for box in naip.blank_boxes:  # blank fill: S2 was rendered from the NAIP before it
        x0, y0 = sd["assets"]["B02"]["proj:transform"][2], sd["assets"]["B02"]["proj:transform"][5]
        r0, r1 = int((y0 - box.ymax) // 10) - 4, int((y0 - box.ymin) // 10) + 5
        c0, c1 = int((box.xmin - x0) // 10) - 4, int((box.xmax - x0) // 10) + 5
        valid[max(0, r0) : r1, max(0, c0) : c1] = False
    ratios = []
    for b in scene.bands[:4]:
        assert b.transfer.kind == "gamma" and b.transfer.gamma == naip.gamma[b.transfer.source_band]
        x = sensors.gamma_transfer(hr[NAIP_ORDER[b.transfer.source_band]], b.transfer.gamma)
        shift = (0.0, 0.0) if ignore_shift else scene.shift_m
        lr = sensors.degrade_band(x, b.psf_sigma_hr_px + sigma_delta, 4, 2.5, shift)
        with rasterio.open(_asset_path(spath, sd, b.band)) as src:
            dn = src.read(1).astype(np.float64)
        ok = valid & (dn > 1)
        resid = (dn - scene.dn_offset) / 10000.0 - lr
        ratios.append(float(resid[ok].std() / b.noise_std))
    return ratios


def test_redegrading_naip_reproduces_s2_within_noise(
    demo_world: Path, truth: WorldTruth, raw_items: dict[str, tuple[Path, dict[str, Any]]]
) -> None:
    checked = 0
    for scene in truth.scenes:
        if not isinstance(scene, S2SceneTruth) or scene.hr_source == "landscape":
            continue
        naip = truth.scene(scene.hr_source)
        assert isinstance(naip, NaipSceneTruth)
        ratios = _redegrade_ratios(demo_world, scene, naip, raw_items)
        assert all(0.85 < r < 1.2 for r in ratios), (scene.item_id, ratios)
        checked += 1
    assert checked == 13


def test_redegrading_with_wrong_parameters_does_not_reproduce_s2(
    demo_world: Path, truth: WorldTruth, raw_items: dict[str, tuple[Path, dict[str, Any]]]
) -> None:
    """The check above is sensitive: a wrong sigma or a missed shift shows up."""
    shifted = max(
        (s for s in truth.scenes if isinstance(s, S2SceneTruth) and s.hr_source != "landscape"),
        key=lambda s: float(np.hypot(*s.shift_m)),
    )
    assert np.hypot(*shifted.shift_m) > 4.0
    naip = truth.scene(shifted.hr_source)
    assert isinstance(naip, NaipSceneTruth)
    no_shift = _redegrade_ratios(demo_world, shifted, naip, raw_items, ignore_shift=True)
    wrong_sigma = _redegrade_ratios(demo_world, shifted, naip, raw_items, sigma_delta=0.6)
    # Low-contrast bands (blue) react least; every band moves, NIR by far the most.
    assert min(no_shift) > 1.1 and max(no_shift) > 2.0
    assert min(wrong_sigma) > 1.02 and max(wrong_sigma) > 1.3


def test_area_average_matches_gdal_warp_average(
    demo_world: Path, truth: WorldTruth, raw_items: dict[str, tuple[Path, dict[str, Any]]]
) -> None:
    naip = next(s for s in truth.scenes if isinstance(s, NaipSceneTruth))
    path, d = raw_items[naip.item_id]
    with rasterio.open(_asset_path(path, d, "image")) as src:
        dn = src.read(1, window=((0, 500), (0, 500)))
    ours = sensors.area_downsample(dn, 1.0, 2.5)
    gdal = _naip_at_hr(_asset_path(path, d, "image"))[0, :200, :200]
    assert np.abs(ours - gdal).max() < 1e-3


def test_clouds_shadows_nodata_and_blank_are_where_the_truth_says(
    truth: WorldTruth, raw_items: dict[str, tuple[Path, dict[str, Any]]]
) -> None:
    seen = set()
    for scene in truth.scenes:
        if isinstance(scene, S2SceneTruth):
            path, d = raw_items[scene.item_id]
            with rasterio.open(_asset_path(path, d, "SCL")) as src:
                scl = src.read(1)
            with rasterio.open(_asset_path(path, d, "B04")) as src:
                b04 = src.read(1)
            c = scl.shape[0] // 2
            centre = scl[c - 1 : c + 1, c - 1 : c + 1]
            cloudy = np.isin(scl, (8, 9, 10)).mean()
            assert d["properties"]["eo:cloud_cover"] == pytest.approx(
                100 * cloudy / max((scl != 0).mean(), 1e-9), abs=1e-3
            )
            assert ((b04 == 0) == np.kron(scl == 0, np.ones((2, 2), dtype=bool))).mean() > 0.99
            assert (b04 == 0).mean() == pytest.approx(scene.clouds.nodata_fraction, abs=1e-6)
            assert set(np.unique(scl)) <= {0, 3, 4, 5, 6, 8, 9, 10}
            if scene.clean:
                assert set(np.unique(scl)) <= {4, 5, 6}
                continue
            if scene.clouds.nodata_fraction > 0:
                seen.add("nodata")
                assert 0.3 < scene.clouds.nodata_fraction < 0.7
                assert not scene.clouds.centre_clear and 0 in centre
            if scene.clouds.cloud_fraction > 0:
                seen.add("cloud")
                assert (scl == 3).any() and np.isin(scl, (8, 9, 10)).any()
                bright = b04[np.kron(scl == 9, np.ones((2, 2), dtype=bool))]
                assert bright.mean() > 3000 + scene.dn_offset  # clouds are bright
                assert scene.clouds.cloud_boxes
        elif isinstance(scene, NaipSceneTruth) and scene.blank_boxes:
            seen.add("blank")
            path, d = raw_items[scene.item_id]
            with rasterio.open(_asset_path(path, d, "image")) as src:
                img = src.read().astype(np.float64)
                x0, y0 = src.transform.c, src.transform.f
            box = scene.blank_boxes[0]
            r0, c0 = int(y0 - box.ymax), int(box.xmin - x0)
            r1, c1 = int(y0 - box.ymin), int(box.xmax - x0)
            assert img[:, r0:r1, c0:c1].std(axis=(1, 2)).max() == 0.0
            # 19 x 19 local variance is zero exactly inside the patch, nowhere else
            m = ndimage.uniform_filter(img[0], 19)
            var = ndimage.uniform_filter(img[0] ** 2, 19) - m**2
            zero = var < 1e-6
            zero[r0 + 9 : r1 - 9, c0 + 9 : c1 - 9] = False
            assert zero[9:-9, 9:-9].sum() == 0
    assert seen == {"nodata", "cloud", "blank"}


def test_venus_and_s1_scenes_are_consistent_with_s2(
    truth: WorldTruth, raw_items: dict[str, tuple[Path, dict[str, Any]]]
) -> None:
    pair = next(p for p in truth.pairs_for("sen2venus") if p.clean)
    vpath, vd = raw_items[pair.hr_item_id]
    spath, sd = raw_items[pair.lr_item_id]
    with rasterio.open(_asset_path(vpath, vd, "B7")) as src:
        v = src.read(1).astype(np.float64) / 1000.0
    with rasterio.open(_asset_path(spath, sd, "B04")) as src:
        s2 = src.read(1).astype(np.float64)
    s2 = (s2 - truth.scene(pair.lr_item_id).dn_offset) / 10000.0  # type: ignore[union-attr]
    v10 = v.reshape(s2.shape[0], 2, s2.shape[1], 2).mean(axis=(1, 3))
    assert np.corrcoef(v10.ravel(), s2.ravel())[0, 1] > 0.9
    assert abs(v10.mean() - s2.mean()) < 0.01
    s1 = next(s for s in truth.scenes if s.kind == "sentinel-1-grd")
    path, d = raw_items[s1.item_id]
    with rasterio.open(_asset_path(path, d, "vv")) as src:
        vv = src.read(1)
    with rasterio.open(_asset_path(path, d, "vh")) as src:
        vh = src.read(1)
    assert vv.dtype == np.float32 and np.isfinite(vv).all()
    assert -25 < float(vv.mean()) < -3 and float(vh.mean()) < float(vv.mean())
    # multiplicative speckle: linear sigma0 varies strongly pixel to pixel
    lin = 10 ** (vv.astype(np.float64) / 10)
    assert np.median(np.abs(np.diff(lin, axis=1)) / lin[:, 1:]) > 0.2


def test_world_is_within_the_disk_budget(demo_world: Path) -> None:
    size = sum(p.stat().st_size for p in demo_world.rglob("*") if p.is_file())
    assert size <= 300e6


# --- determinism, idempotence, atomicity -------------------------------------------------


def _pixels(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*.tif")):
        with rasterio.open(p) as src:
            out[str(p.relative_to(root))] = src.read().tobytes()
    return out


def test_same_seed_same_world_any_worker_count(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"site_size_m": 600.0, "site_ids": ("us-wa", "il-ses")}
    a = run_demo_world(tmp_path / "a", seed=3, workers=1, **kw)
    b = run_demo_world(tmp_path / "b", seed=3, workers=2, **kw)
    assert not a.reused and not b.reused
    ta, tb = (
        (tmp_path / "a" / "truth.json").read_bytes(),
        (tmp_path / "b" / "truth.json").read_bytes(),
    )
    assert ta == tb
    assert _pixels(tmp_path / "a") == _pixels(tmp_path / "b")
    # A site renders the same whatever other sites are built with it.
    run_demo_world(tmp_path / "c", seed=3, workers=1, site_size_m=600.0, site_ids=("us-wa",))
    tc = load_truth(tmp_path / "c")
    wa = [s for s in load_truth(tmp_path / "a").scenes if s.site_id == "us-wa"]
    assert wa == list(tc.scenes)
    # Another seed draws another world.
    run_demo_world(tmp_path / "d", seed=4, workers=1, **kw)
    assert (tmp_path / "d" / "truth.json").read_bytes() != ta


def test_run_demo_world_reuses_rebuilds_and_never_leaves_half_worlds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw: dict[str, Any] = {"site_size_m": 600.0, "site_ids": ("us-ia",), "workers": 1}
    out = tmp_path / "w.v1"
    first = run_demo_world(out, seed=5, **kw)
    again = run_demo_world(out, seed=5, **kw)
    assert again.reused and not first.reused and again.seconds < first.seconds
    marker_time = (out / MARKER).stat().st_mtime_ns
    forced = run_demo_world(out, seed=5, force=True, **kw)
    assert not forced.reused and (out / MARKER).stat().st_mtime_ns != marker_time
    # A build that dies half way leaves the previous world and no temporary folder.
    import harvest.demo.world as world

    def boom(spec: Any, root: Path, **_: Any) -> None:
        (root / "partial.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / "partial.txt").write_text("half")
        raise RuntimeError("killed")

    monkeypatch.setattr(world, "build_world", boom)
    with pytest.raises(RuntimeError):
        run_demo_world(out, seed=6, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.v1"]
    assert load_truth(out).seed == 5
    with pytest.raises(RuntimeError):
        run_demo_world(tmp_path / "new", seed=6, **kw)
    assert not (tmp_path / "new").exists()


def test_bad_targets_give_one_line_errors(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DemoWorldError, match="not a folder"):
        run_demo_world(f)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    with pytest.raises(DemoWorldError, match="not empty"):
        run_demo_world(busy)
    assert (busy / "mine.txt").read_text() == "keep me"
    with pytest.raises(DemoWorldError, match="multiple of 60"):
        run_demo_world(tmp_path / "x", site_size_m=1000.0)


# --- CLI ---------------------------------------------------------------------------------


def _harvest() -> list[str]:
    exe = Path(sys.executable).parent / "harvest"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "harvest.cli"]


def test_cli_reuses_a_built_world(demo_world: Path) -> None:
    res = subprocess.run(
        [*_harvest(), "demo", "world", str(demo_world), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "already built, reused" in res.stdout
    assert "19 sentinel-2-l2a" in res.stdout


def test_cli_bad_out_path_is_a_one_line_error(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    res = subprocess.run(
        [*_harvest(), "demo", "world", str(target)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not a folder" in lines[0]
    assert "Traceback" not in res.stderr


def test_cli_builds_a_world_end_to_end(tmp_path: Path) -> None:
    """The real command on a fresh, relative folder (small sites, hidden size option)."""
    out = tmp_path / "world"
    res = subprocess.run(
        [*_harvest(), "demo", "world", "world", "--seed", "0", "--no-progress"]
        + ["--site-size-m", "600"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "built in" in res.stdout
    assert load_truth(out).seed == 0 and load_truth(out).site_size_m == 600
    assert (out / MARKER).exists() and (out / "stac-geoparquet" / "naip.parquet").exists()
    for d in item_dicts_absolute(out):
        assert all(Path(a["href"]).is_file() for a in d["assets"].values())
    # A quicklook sheet per site: a PNG with one panel per scene (and SCL per S2 scene).
    truth = load_truth(out)
    for site in truth.sites:
        png = out / "quicklooks" / f"{site.site_id}.png"
        with rasterio.open(png) as src:
            sheet = src.read()
        assert sheet.shape[0] >= 3 and sheet.shape[1] > 200 and sheet.std() > 10
    shutil.rmtree(out)


def test_cli_sites_adds_seeded_conus_sites_with_their_pairs(tmp_path: Path) -> None:
    """`--sites N` above the standard 7 adds CONUS sites, each with a NAIP / S2 pair."""
    from shapely.geometry import Point

    from harvest.regions import load_region

    out = tmp_path / "world"
    res = subprocess.run(
        [*_harvest(), "demo", "world", str(out), "--sites", "9", "--no-progress"]
        + ["--site-size-m", "600"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "(9 sites;" in res.stdout
    truth = load_truth(out)
    extra = [s for s in truth.sites if s.site_id.startswith("us-x")]
    assert [s.site_id for s in extra] == ["us-x001", "us-x002"]
    conus = load_region("conus").geometry
    pairs = truth.pairs_for("sen2naip")
    for site in extra:
        lon, lat = site.lon, site.lat
        assert conus.contains(Point(lon, lat))
        assert [p for p in pairs if p.site_id == site.site_id]
        assert (out / "quicklooks" / f"{site.site_id}.png").is_file()
    # --sites below 7: the first standard sites; 0 is refused in one line.
    res = subprocess.run(
        [*_harvest(), "demo", "world", str(tmp_path / "w0"), "--sites", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "--sites" in res.stderr


# --- the world's physics, conventions ------------------------------------------------------


def test_bilinear_decimation_is_torch_interpolate_without_antialias() -> None:
    """Zero shift: the sampler equals F.interpolate(1/4, bilinear, align_corners=False)."""
    import torch

    rng = np.random.default_rng(0)
    hr = ndimage.gaussian_filter(rng.random((96, 96)), 1.5)
    ours = sensors.bilinear_sample(hr, (24, 24), 4, 2.5)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(hr)[None, None],
        scale_factor=0.25,
        mode="bilinear",
        align_corners=False,
        antialias=False,
    )[0, 0].numpy()
    assert np.abs(ours - ref).max() < 1e-12


def test_shift_moves_the_lr_content_by_plus_shift() -> None:
    """A bright blob at (x, y) appears in LR at (x + dx, y + dy) metres."""
    n, gsd = 400, 2.5
    yy, xx = np.mgrid[0:n, 0:n]
    cy, cx = 200.3, 180.7  # HR pixel indices of the blob centre
    hr = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))
    dx, dy = 4.2, -3.1
    lr = sensors.degrade_band(hr, 3.0, 4, gsd, (dx, dy))
    r, c = ndimage.center_of_mass(lr)
    # LR pixel centre (r, c) -> metres from the top-left corner (x right, y up)
    x_lr, y_lr = (c + 0.5) * 10.0, -(r + 0.5) * 10.0
    x_hr, y_hr = (cx + 0.5) * gsd, -(cy + 0.5) * gsd
    assert x_lr - x_hr == pytest.approx(dx, abs=0.05)
    assert y_lr - y_hr == pytest.approx(dy, abs=0.05)


def test_area_downsample_is_exact_on_fractional_ratios() -> None:
    x = np.arange(10, dtype=np.float64)[None, :].repeat(5, 0)
    out = sensors.area_downsample(x, 1.0, 2.5)
    assert out.shape == (2, 4)
    assert out[0, 0] == pytest.approx((0 + 1 + 0.5 * 2) / 2.5)
    assert out[0, 1] == pytest.approx((0.5 * 2 + 3 + 4) / 2.5)
    with pytest.raises(ValueError, match="whole number"):
        sensors.area_downsample(np.zeros((4, 4)), 1.0, 2.5)


def test_harvest_sample_draws_rois_inside_the_world(
    demo_world: Path, truth: WorldTruth, tmp_path: Path
) -> None:
    """region.geojson is usable as a sampling region: every ROI's chip lies in a site."""
    import geopandas as gpd
    from pyproj import Transformer

    out = tmp_path / "rois.parquet"
    res = subprocess.run(
        [*_harvest(), "sample", "--n", "10", "--region", str(demo_world / "region.geojson")]
        + ["--min-distance-km", "1", "--seed", "2", "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    rois = gpd.read_parquet(out)
    assert len(rois) == 10
    for _, roi in rois.iterrows():
        homes = []
        for s in truth.sites:
            x, y = Transformer.from_crs(4326, s.utm_epsg, always_xy=True).transform(
                roi.geometry.x, roi.geometry.y
            )
            b = s.bounds
            if b.xmin + 605 <= x <= b.xmax - 605 and b.ymin + 605 <= y <= b.ymax - 605:
                homes.append(s)
        assert len(homes) == 1
        assert int(roi["utm_epsg"]) == homes[0].utm_epsg
