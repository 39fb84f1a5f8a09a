from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import box, shape

from harvest.backends.profiles import (
    PROVIDER_DIR,
    ProviderProfile,
    baseline_at_least,
    known_profiles,
    load_profile,
    normalize_baseline,
    parse_item,
)
from harvest.errors import CatalogError, ConfigError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "stac-items"
PC_ID = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531"
ES_OLD_ID = "S2A_28QCH_20200714_0_L2A"
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
ES_KEYS = {
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
    "SCL": "scl",
}


def load_item(item_id: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{item_id}.json").read_text())


@pytest.fixture(scope="module")
def pc() -> ProviderProfile:
    return load_profile("planetary-computer")


@pytest.fixture(scope="module")
def es() -> ProviderProfile:
    return load_profile("earth-search")


def test_shipped_profiles() -> None:
    assert known_profiles() == (
        "demo",
        "earth-engine",
        "earth-search",
        "earthdaily",
        "planetary-computer",
    )
    pc, es, ee, demo = (
        load_profile(n) for n in ("planetary-computer", "earth-search", "earth-engine", "demo")
    )
    assert pc.stac_api_url == "https://planetarycomputer.microsoft.com/api/stac/v1"
    assert pc.sign_hrefs and not es.sign_hrefs and not demo.sign_hrefs
    assert es.stac_api_url == "https://earth-search.aws.element84.com/v1"
    assert demo.stac_api_url is None and demo.local_catalog == "demo"
    assert ee.kind == "earth-engine" and ee.stac_api_url is None
    # Collection ids per provider.
    assert pc.collection("sentinel-1-grd").id == "sentinel-1-grd"
    assert es.collection("sentinel-2-l2a").id == "sentinel-2-l2a"
    assert es.collection_for_id("sentinel-s2-l2a-cogs").canonical == "sentinel-2-l2a"
    assert ee.collection("sentinel-2-l2a").id == "COPERNICUS/S2_SR_HARMONIZED"
    assert ee.collection("naip").id == "USDA/NAIP/DOQQ"
    assert ee.collection("sentinel-1-grd").id == "COPERNICUS/S1_GRD"
    # Band vocabularies.
    assert pc.collection("sentinel-2-l2a").bands["B02"].asset == "B02"
    assert es.collection("sentinel-2-l2a").bands["B02"].asset == "blue"
    assert es.collection_for_id("sentinel-s2-l2a-cogs").bands["B02"].asset == "B02"
    assert ee.collection("sentinel-2-l2a").bands["B02"].asset == "B2"
    assert ee.collection("sentinel-2-l2a").bands["B8A"].asset == "B8A"
    naip = pc.collection("naip").bands
    assert [(naip[b].asset, naip[b].band_index) for b in ("red", "green", "blue", "nir")] == [
        ("image", 1),
        ("image", 2),
        ("image", 3),
        ("image", 4),
    ]
    # Radiometry and cloud information.
    ee_s2 = ee.collection("sentinel-2-l2a")
    assert ee_s2.radiometry.baseline_offset is None  # HARMONIZED removed it already
    assert ee_s2.cloud.score_collection == "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
    assert ee_s2.cloud.score_band == "cs_cdf"
    pc_rule = pc.collection("sentinel-2-l2a").radiometry.baseline_offset
    assert pc_rule is not None and (pc_rule.min_baseline, pc_rule.offset_dn) == ("04.00", -1000)
    assert es.collection("sentinel-2-l2a").radiometry.from_item
    assert pc.collection("sentinel-2-l2a").cloud.mask_band == "SCL"


def test_unknown_collection_and_provider_errors(pc: ProviderProfile) -> None:
    with pytest.raises(CatalogError, match="planetary-computer has no collection 'venus-l2a'"):
        pc.collection("venus-l2a")
    assert load_profile("demo").collection("venus-l2a").bands["B11"].asset == "B11"
    with pytest.raises(CatalogError, match="'sentinel-s2-l2a-cogs' is not in provider profile"):
        pc.collection_for_id("sentinel-s2-l2a-cogs")
    with pytest.raises(ConfigError, match="unknown provider 'nope': use one of demo, "):
        load_profile("nope")


def test_profile_validation(tmp_path: Path) -> None:
    text = (PROVIDER_DIR / "earth-search.yaml").read_text()
    no_url = tmp_path / "no-url.yaml"
    no_url.write_text(text.replace("stac_api_url: https://earth-search.aws.element84.com/v1", ""))
    with pytest.raises(ConfigError, match="needs stac_api_url"):
        load_profile(no_url)
    bad_mask = tmp_path / "bad-mask.yaml"
    bad_mask.write_text(text.replace("mask_band: SCL", "mask_band: CLOUDS", 1))
    with pytest.raises(ConfigError, match="mask_band CLOUDS of sentinel-2-l2a is not in its bands"):
        load_profile(bad_mask)
    typo = tmp_path / "typo.yaml"
    typo.write_text(text.replace("sign_hrefs:", "sign_href:"))
    with pytest.raises(ConfigError, match="unknown key 'sign_href'"):
        load_profile(typo)


def test_band_nodata_and_dtype_overrides(tmp_path: Path) -> None:
    text = (PROVIDER_DIR / "earth-search.yaml").read_text()
    custom = tmp_path / "custom.yaml"
    custom.write_text(
        text.replace(
            "SCL: {asset: scl, raw: true}", "SCL: {asset: scl, raw: true, nodata: none}", 1
        ).replace("B01: {asset: coastal}", "B01: {asset: coastal, nodata: -1, dtype: int16}", 1)
    )
    prof = load_profile(custom)
    item = _earth_search_v1_item()  # every asset publishes raster:bands nodata 0
    s = parse_item(item, prof)
    assert (s.asset("SCL").nodata, s.asset("SCL").dtype) == (None, "uint8")  # dtype: the item's
    assert (s.asset("B01").nodata, s.asset("B01").dtype) == (-1.0, "int16")
    assert (s.asset("B02").nodata, s.asset("B02").dtype) == (0.0, "uint16")  # not overridden
    for asset in item["assets"].values():
        del asset["raster:bands"]
    s = parse_item(item, prof)
    assert s.asset("SCL").nodata is None and s.asset("B02").nodata == 0.0  # the collection's
    # Without overrides a profile behaves as before: the shipped one takes the item's values.
    assert (
        parse_item(_earth_search_v1_item(), load_profile("earth-search")).asset("SCL").nodata == 0
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("SCL: {asset: scl, raw: true}", "SCL: {asset: scl, nodata: nil}"))
    with pytest.raises(ConfigError, match="nodata"):
        load_profile(bad)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("04.00", "04.00"), ("4.0", "04.00"), (5.11, "05.11"), ("N0214", "02.14"), ("x", None)],
)
def test_normalize_baseline(raw: object, expected: str | None) -> None:
    assert normalize_baseline(raw) == expected


def test_baseline_comparison_is_numeric() -> None:
    assert baseline_at_least("04.00", "04.00") and baseline_at_least("05.09", "04.00")
    assert baseline_at_least("10.00", "04.00")  # not a string comparison
    assert not baseline_at_least("03.99", "04.00")


def test_planetary_computer_item(pc: ProviderProfile) -> None:
    item = load_item(PC_ID)
    s = parse_item(item, pc)
    assert (s.item_id, s.collection, s.provider) == (PC_ID, "sentinel-2-l2a", "planetary-computer")
    assert s.datetime == datetime(2019, 6, 29, 21, 25, 29, 24000, tzinfo=UTC)
    assert s.geometry.equals(shape(item["geometry"]))
    assert s.bbox == pytest.approx(item["bbox"])
    assert s.cloud_cover_pct == pytest.approx(0.314306)
    assert s.platform == "sentinel-2b"
    assert s.epsg == 32606
    assert s.mgrs_tile == "06VVN"
    assert s.processing_baseline == "02.12"
    assert s.sun_azimuth_deg == pytest.approx(170.148039164397)
    assert s.sun_elevation_deg == pytest.approx(90 - 37.9128805424161)
    assert s.view_off_nadir_deg is None  # PC publishes no off-nadir angle
    assert s.gsd_m == 10.0
    assert set(s.assets) == {*S2_BANDS, "SCL"}
    for band in S2_BANDS:
        ref = s.asset(band)
        assert ref.href == item["assets"][band]["href"]
        assert (ref.scale, ref.offset, ref.nodata, ref.dtype) == (1e-4, 0.0, 0.0, "uint16")
    assert s.asset("B02").href.endswith("/R10m/T06VVN_20190629T212529_B02_10m.tif")
    scl = s.asset("SCL")
    assert (scl.scale, scl.offset) == (1.0, 0.0)


def test_baseline_04_offset_is_applied_on_planetary_computer(pc: ProviderProfile) -> None:
    item = load_item(PC_ID)
    item["properties"]["s2:processing_baseline"] = "04.00"
    s = parse_item(item, pc)
    assert s.processing_baseline == "04.00"
    b04 = s.asset("B04")
    assert b04.scale == 1e-4
    assert b04.offset == pytest.approx(-0.1)
    # reflectance = (DN - 1000) / 10000
    dn = 1234
    assert dn * b04.scale + b04.offset == pytest.approx((dn - 1000) / 10000)
    assert s.asset("SCL").offset == 0.0  # a class band is never shifted


def test_signed_hrefs_are_stored_unsigned(pc: ProviderProfile) -> None:
    item = load_item(PC_ID)
    plain = item["assets"]["B04"]["href"]
    item["assets"]["B04"]["href"] = plain + "?st=2024-01-01&se=2024-01-02&sig=abc%3D"
    assert parse_item(item, pc).asset("B04").href == plain


def test_old_earth_search_item(es: ProviderProfile) -> None:
    item = load_item(ES_OLD_ID)
    s = parse_item(item, es)
    assert (s.item_id, s.collection, s.provider) == (ES_OLD_ID, "sentinel-2-l2a", "earth-search")
    assert s.datetime == datetime(2020, 7, 14, 11, 55, 52, tzinfo=UTC)
    assert s.cloud_cover_pct == 2.36
    assert s.platform == "sentinel-2a"
    assert s.epsg == 32628
    # sentinel:latitude_band + grid_square, zone from proj:epsg.
    assert s.mgrs_tile == "28QCH"
    # No baseline property: read from the product id (..._N0214_...).
    assert s.processing_baseline == "02.14"
    assert s.view_off_nadir_deg == 0.0
    assert s.sun_azimuth_deg is None and s.sun_elevation_deg is None
    assert s.asset("B8A").href == item["assets"]["B8A"]["href"]
    assert s.asset("B02").href.endswith("/S2A_28QCH_20200714_0_L2A/B02.tif")
    assert s.asset("B02").offset == 0.0 and s.asset("B02").scale == 1e-4


def test_unknown_baseline_is_inferred_from_the_acquisition_date(es: ProviderProfile) -> None:
    item = load_item(ES_OLD_ID)
    del item["properties"]["sentinel:product_id"]
    assert parse_item(item, es).processing_baseline is None
    assert parse_item(item, es).asset("B04").offset == 0.0
    item["properties"]["datetime"] = "2022-06-01T11:55:52Z"
    s = parse_item(item, es)
    assert s.processing_baseline is None
    assert s.asset("B04").offset == pytest.approx(-0.1)


def _earth_search_v1_item() -> dict[str, Any]:
    """The old Earth Search fixture rewritten the way v1 publishes items."""
    item = load_item(ES_OLD_ID)
    item["collection"] = "sentinel-2-l2a"
    item["id"] = "S2A_28QCH_20230714_0_L2A"
    props = item["properties"]
    props["datetime"] = "2023-07-14T11:55:52.123456789Z"
    for key in ("sentinel:latitude_band", "sentinel:grid_square", "sentinel:product_id"):
        del props[key]
    props.update(
        {
            "s2:processing_baseline": "05.09",
            "mgrs:utm_zone": 28,
            "mgrs:latitude_band": "Q",
            "mgrs:grid_square": "CH",
            "view:sun_azimuth": 80.5,
            "view:sun_elevation": 70.25,
        }
    )
    assets = {}
    for band, key in ES_KEYS.items():
        asset = copy.deepcopy(item["assets"][band])
        asset["raster:bands"] = [{"nodata": 0, "data_type": "uint8" if band == "SCL" else "uint16"}]
        if band != "SCL":
            asset["raster:bands"][0].update({"scale": 0.0001, "offset": -0.1})
        assets[key] = asset
    item["assets"] = assets
    return item


def test_earth_search_v1_item_uses_published_scale_offset(es: ProviderProfile) -> None:
    item = _earth_search_v1_item()
    s = parse_item(item, es)
    assert s.datetime == datetime(2023, 7, 14, 11, 55, 52, 123456, tzinfo=UTC)
    assert s.mgrs_tile == "28QCH"
    assert s.processing_baseline == "05.09"
    assert (s.sun_azimuth_deg, s.sun_elevation_deg) == (80.5, 70.25)
    assert s.asset("B02").href == item["assets"]["blue"]["href"]
    assert s.asset("B8A").href == item["assets"]["nir08"]["href"]
    assert (s.asset("B02").scale, s.asset("B02").offset) == (0.0001, -0.1)
    scl = s.asset("SCL")
    assert (scl.scale, scl.offset, scl.dtype) == (1.0, 0.0, "uint8")
    # Published values win over the rule: an item that says offset 0 keeps 0.
    for asset in item["assets"].values():
        if "offset" in asset["raster:bands"][0]:
            asset["raster:bands"][0]["offset"] = 0.0
    assert parse_item(item, es).asset("B04").offset == 0.0
    # Without raster:bands the baseline rule is the fallback.
    for asset in item["assets"].values():
        del asset["raster:bands"]
    assert parse_item(item, es).asset("B04").offset == pytest.approx(-0.1)


def _naip_item() -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "tx_m_2609719_se_14_060_20201217",
        "collection": "naip",
        "geometry": box(-97.31, 26.93, -97.25, 27.0).__geo_interface__,
        "bbox": [-97.31, 26.93, -97.25, 27.0],
        "properties": {
            "datetime": "2020-12-17T00:00:00Z",
            "gsd": 0.6,
            "naip:year": "2020",
            "naip:state": "tx",
            "proj:epsg": 26914,
        },
        "assets": {
            "image": {"href": "https://naipeuwest.blob.core.windows.net/naip/v002/tx/x.tif"},
            "thumbnail": {"href": "https://naipeuwest.blob.core.windows.net/naip/v002/tx/x.jpg"},
        },
    }


def test_naip_bands_come_from_one_file(pc: ProviderProfile) -> None:
    s = parse_item(_naip_item(), pc)
    assert (s.collection, s.gsd_m, s.epsg, s.cloud_cover_pct, s.mgrs_tile) == (
        "naip",
        0.6,
        26914,
        None,
        None,
    )
    refs = [s.asset(b) for b in ("red", "green", "blue", "nir")]
    assert {r.href for r in refs} == {"https://naipeuwest.blob.core.windows.net/naip/v002/tx/x.tif"}
    assert [r.band_index for r in refs] == [1, 2, 3, 4]
    assert refs[0].scale == pytest.approx(1 / 255) and refs[0].dtype == "uint8"


def test_optional_band_may_be_missing(pc: ProviderProfile) -> None:
    item = {
        "id": "S1A_IW_GRDH_1SDV_X",
        "collection": "sentinel-1-grd",
        "geometry": box(0, 0, 1, 1).__geo_interface__,
        "properties": {"datetime": "2017-05-01T06:00:00Z", "platform": "SENTINEL-1A"},
        "assets": {"vv": {"href": "https://x/vv.tif"}},
    }
    s = parse_item(item, pc)
    assert set(s.assets) == {"VV"} and s.platform == "sentinel-1a"
    with pytest.raises(CatalogError, match="lacks asset 'vh' \\(band VH\\)"):
        parse_item(item, pc, bands=["VV", "VH"])


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda it: it["properties"].pop("datetime"), f"item {PC_ID} has no datetime"),
        (lambda it: it.pop("geometry"), f"item {PC_ID} has no geometry"),
        (lambda it: it["assets"].pop("B04"), f"item {PC_ID} lacks asset 'B04' \\(band B04\\)"),
        (lambda it: it.update(collection="landsat-c2-l2"), "'landsat-c2-l2' is not in provider"),
        (lambda it: it.pop("id"), "has no id"),
        (
            lambda it: it["properties"].update(datetime="yesterday"),
            f"item {PC_ID} has an unreadable datetime",
        ),
        (
            lambda it: it["properties"].update(datetime="2019-06-29T21:25:29"),
            "without time zone",
        ),
    ],
    ids=["datetime", "geometry", "asset", "collection", "id", "bad-datetime", "naive"],
)
def test_bad_items_are_rejected_with_their_id(
    pc: ProviderProfile, breakage: Any, message: str
) -> None:
    item = load_item(PC_ID)
    breakage(item)
    with pytest.raises(CatalogError, match=message):
        parse_item(item, pc)


def test_requested_bands_limit_what_is_required(pc: ProviderProfile) -> None:
    item = load_item(PC_ID)
    del item["assets"]["B01"]
    with pytest.raises(CatalogError, match="lacks asset 'B01'"):
        parse_item(item, pc)
    s = parse_item(item, pc, bands=["B04", "B03", "B02", "B08"])
    assert "B01" not in s.assets and "B12" in s.assets
    with pytest.raises(CatalogError, match="bands B99 are not mapped"):
        parse_item(item, pc, bands=["B99"])
