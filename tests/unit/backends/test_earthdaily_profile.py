"""The ``earthdaily`` provider profile (VENuS L2A and Sentinel-2 L2A for SEN2VENuS, issue 17).

The items are written from EarthDaily's public documentation (``tests/fixtures/
stac-items-from-docs``; sources in the profile's header), not captured, so every expectation here
restates that documentation: the SRE asset keys, ``reflectance = 0.0001 * DN - 0.1`` with nodata
0 for VENuS, and MAJA masks where 0 means clear.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import shape

from harvest.backends.profiles import ProviderProfile, load_profile, parse_item
from harvest.errors import CatalogError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "stac-items-from-docs"
VENUS_ID = "VENUS-XS_20200923-105325-000_L2A_SUDOUE-1_D"
S2_ID = "S2B_31TCJ_20200923_0_L2A"
VENUS_BANDS = tuple(f"B{n}" for n in range(1, 13))
VENUS_MASKS = {"CLM": "detailed_cloud_mask", "EDG": "edge_image", "SAT": "saturation_mask"}
S2_KEYS = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
}


def load_item(item_id: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{item_id}.json").read_text())


@pytest.fixture(scope="module")
def eds() -> ProviderProfile:
    return load_profile("earthdaily")


def test_profile_serves_both_sen2venus_collections(eds: ProviderProfile) -> None:
    assert eds.kind == "stac-api" and not eds.sign_hrefs
    assert eds.stac_api_url == "https://api.earthdaily.com/platform/v1/stac"
    assert eds.collection("venus-l2a").id == "venus-l2a"
    assert eds.collection("sentinel-2-l2a").id == "sentinel-2-l2a"
    venus = eds.collection("venus-l2a").bands
    # Surface reflectance with adjacency correction (SRE), as SEN2VENuS used; never FRE.
    assert {b: venus[b].asset for b in VENUS_BANDS} == {
        b: f"image_file_SRE_{b}" for b in VENUS_BANDS
    }
    required = {b for b, m in venus.items() if m.required}
    assert required == {"B3", "B4", "B7", "B8", "B9", "B10", "B11"}  # what sen2venus reads
    for name, key in VENUS_MASKS.items():
        m = venus[name]
        assert (m.asset, m.raw, m.required, m.nodata, m.dtype) == (
            key,
            True,
            False,
            "none",
            "uint8",
        )


def test_venus_item(eds: ProviderProfile) -> None:
    item = load_item(VENUS_ID)
    s = parse_item(item, eds)
    assert (s.item_id, s.collection, s.provider) == (VENUS_ID, "venus-l2a", "earthdaily")
    assert s.datetime == datetime(2020, 9, 23, 10, 53, 25, tzinfo=UTC)
    assert s.geometry.equals(shape(item["geometry"]))
    assert s.epsg == 32631
    assert s.cloud_cover_pct == 3.0
    assert s.gsd_m == 5.0
    assert s.mgrs_tile is None  # a VENuS site, not an S2 tile (theia:location names it)
    assert s.processing_baseline is None
    assert set(s.assets) == {*VENUS_BANDS, *VENUS_MASKS}
    for band in VENUS_BANDS:
        ref = s.asset(band)
        assert ref.href == item["assets"][f"image_file_SRE_{band}"]["href"]
        assert ref.href.endswith(f"_L2A_SUDOUE-1_C_V3-1_SRE_{band}.tif")
        assert (ref.scale, ref.offset, ref.nodata, ref.dtype) == (1e-4, -0.1, 0.0, "uint16")
    # reflectance = 0.0001 * DN - 0.1 (the open-data README)
    b7 = s.asset("B7")
    assert 1234 * b7.scale + b7.offset == pytest.approx(0.0234)
    for name, key in VENUS_MASKS.items():
        ref = s.asset(name)
        assert ref.href == item["assets"][key]["href"]
        assert "/MASKS/" in ref.href
        # Raw: stored values as they are; 0 (clear) is data, so no nodata value.
        assert (ref.scale, ref.offset, ref.nodata, ref.dtype) == (1.0, 0.0, None, "uint8")


def test_venus_masks_keep_zero_as_data_whatever_the_item_says(eds: ProviderProfile) -> None:
    item = load_item(VENUS_ID)
    for key in VENUS_MASKS.values():
        item["assets"][key]["raster:bands"] = [{"nodata": 0, "data_type": "uint16"}]
    s = parse_item(item, eds)
    for name in VENUS_MASKS:
        assert (s.asset(name).nodata, s.asset(name).dtype) == (None, "uint8")
    assert s.asset("B3").nodata == 0.0  # reflectance bands still take the item's nodata


def test_venus_radiometry_without_raster_bands(eds: ProviderProfile) -> None:
    item = load_item(VENUS_ID)
    for asset in item["assets"].values():
        asset.pop("raster:bands", None)
    ref = parse_item(item, eds).asset("B11")
    assert (ref.scale, ref.offset, ref.nodata, ref.dtype) == (1e-4, -0.1, 0.0, "uint16")


def test_venus_item_without_masks_still_parses(eds: ProviderProfile) -> None:
    item = load_item(VENUS_ID)
    for key in VENUS_MASKS.values():
        del item["assets"][key]
    assert set(parse_item(item, eds).assets) == set(VENUS_BANDS)


def test_venus_item_missing_a_required_band_is_one_line_naming_it(eds: ProviderProfile) -> None:
    item = load_item(VENUS_ID)
    del item["assets"]["image_file_SRE_B7"]
    with pytest.raises(CatalogError) as err:
        parse_item(item, eds)
    message = str(err.value)
    assert message == (
        f"item {VENUS_ID} lacks asset 'image_file_SRE_B7' (band B7) required by profile earthdaily"
    )
    assert "\n" not in message
    # The FRE twin is not taken in its place.
    assert "image_file_FRE_B7" in item["assets"]


def test_sentinel2_item(eds: ProviderProfile) -> None:
    item = load_item(S2_ID)
    s = parse_item(item, eds)
    assert (s.item_id, s.collection, s.provider) == (S2_ID, "sentinel-2-l2a", "earthdaily")
    assert s.datetime == datetime(2020, 9, 23, 10, 56, 41, 964000, tzinfo=UTC)
    assert s.epsg == 32631
    assert s.mgrs_tile == "31TCJ"
    assert s.cloud_cover_pct == 1.25
    assert s.platform == "sentinel-2b"
    assert s.processing_baseline == "02.14"
    assert (s.sun_azimuth_deg, s.sun_elevation_deg) == (163.4, 43.9)
    assert set(s.assets) == {*S2_KEYS, "SCL"}
    for band, key in S2_KEYS.items():
        ref = s.asset(band)
        assert ref.href == item["assets"][key]["href"]
        assert (ref.scale, ref.offset, ref.nodata, ref.dtype) == (1e-4, 0.0, 0.0, "uint16")
    scl = s.asset("SCL")
    assert scl.href == item["assets"]["scl"]["href"]
    assert (scl.scale, scl.offset, scl.nodata, scl.dtype) == (1.0, 0.0, 0.0, "uint8")
    # Same UTC day and UTM zone as the VENuS item: a sen2venus pair.
    venus = parse_item(load_item(VENUS_ID), eds)
    assert venus.datetime.date() == s.datetime.date() and venus.epsg == s.epsg


def test_sentinel2_baseline_rule_without_raster_bands(eds: ProviderProfile) -> None:
    item = load_item(S2_ID)
    for asset in item["assets"].values():
        asset.pop("raster:bands", None)
    assert parse_item(item, eds).asset("B04").offset == 0.0  # baseline 02.14
    item["properties"]["s2:processing_baseline"] = "05.00"
    assert parse_item(item, eds).asset("B04").offset == pytest.approx(-0.1)


def test_sentinel2_item_missing_a_required_band(eds: ProviderProfile) -> None:
    item = load_item(S2_ID)
    del item["assets"]["nir08"]
    with pytest.raises(CatalogError, match=f"^item {S2_ID} lacks asset 'nir08' \\(band B8A\\)"):
        parse_item(item, eds)
    del item["assets"]["coastal"]  # optional: B01 is not needed by sen2venus
    item["assets"]["nir08"] = load_item(S2_ID)["assets"]["nir08"]
    assert "B01" not in parse_item(item, eds).assets
