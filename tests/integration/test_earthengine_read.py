"""Earth Engine chip reads (computePixels) through the real earthengine-api client, on loopback.

The fake server (:mod:`tests.integration.ee_server`) answers ``image:computePixels`` with an
``.npy`` structured array whose values are a known smooth field evaluated at the pixel centres of
the grid the request names, so a read is right only if the chip's CRS, affine transform and size
went over the wire exactly (a half-pixel error changes values by about 1 DN, far above float32
rounding). The tests check the wire format, scale/offset and masking, tiling under the
documented limits, the reaction to "User memory limit exceeded." and 429, and the concurrency
bound.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import google.auth.credentials
import numpy as np
import numpy.typing as npt
import pytest
import shapely
from affine import Affine
from ee_server import EEServer, FakeImage, fake_earth_engine, graph_invocations, smooth_field

from harvest.backends.base import AssetMap, AssetRef, SceneRef
from harvest.backends.earthengine.assets import ee_href
from harvest.backends.earthengine.reader import (
    EE_MAX_PIXELS_REQUEST_BYTES,
    EE_MAX_PIXELS_SIDE,
    MASKED_VALUE,
    REDUCE_RESOLUTION_MAX_PIXELS,
    EarthEngineReader,
    plan_pixel_tiles,
)
from harvest.backends.gdal.reader import RasterioReader
from harvest.backends.registry import ReaderSettings
from harvest.errors import AssetReadError, CatalogError, ReadError
from harvest.grid import ChipGrid
from harvest.pairing import RoiFootprint, pair_scenes
from harvest.recipes import load_recipe
from harvest.stages.fetch import FetchJob, FetchSettings, _reader_for
from harvest.stages.fetch import run as run_fetch

S2 = "COPERNICUS/S2_SR_HARMONIZED"
NAIP = "USDA/NAIP/DOQQ"
S2_INDEX = "20210613T184919_20210613T185458_T10SGF"
NAIP_INDEX = "m_3711901_ne_11_060_20210605"
S2_ID, NAIP_ID = f"{S2}/{S2_INDEX}", f"{NAIP}/{NAIP_INDEX}"
S2_SCALE, S2_OFFSET = 1e-4, -0.1  # baseline >= 04.00: reflectance = DN / 10000 - 0.1
NAIP_SCALE = 1.0 / 255.0
RECIPE = load_recipe("sen2naip")

LR_GRID = ChipGrid(32610, Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 4_100_000.0), 121, 121, 10.0)
HR_GRID = ChipGrid(26911, Affine(2.5, 0.0, 300_000.0, 0.0, -2.5, 4_200_000.0), 484, 484, 2.5)


def fake_catalog() -> list[FakeImage]:
    box = shapely.box(-120.2, 36.9, -118.9, 38.1)
    return [
        FakeImage(S2, S2_INDEX, 0, box, {}, ("B2", "B3", "B4", "B8", "SCL"), "EPSG:32610", 10.0),
        FakeImage(NAIP, NAIP_INDEX, 0, box, {}, ("R", "G", "B", "N"), "EPSG:26911", 0.6),
    ]


def s2_assets(*bands: str) -> AssetMap:
    return AssetMap(
        {
            b: AssetRef(ee_href(S2, S2_INDEX, b), scale=S2_SCALE, offset=S2_OFFSET, nodata=0.0)
            for b in bands
        }
    )


NAIP_ASSETS = AssetMap(
    {
        name: AssetRef(ee_href(NAIP, NAIP_INDEX, band), scale=NAIP_SCALE, dtype="uint8")
        for name, band in (("red", "R"), ("green", "G"), ("blue", "B"), ("nir", "N"))
    }
)


def expected_dn(image_id: str, band: str, grid: ChipGrid) -> npt.NDArray[np.float32]:
    """The field at the chip grid's pixel centres, computed here from the grid itself."""
    t = grid.transform
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    x = t.c + t.a * cols + t.b * rows
    y = t.f + t.d * cols + t.e * rows
    return smooth_field(image_id, band, x, y).astype(np.float32)


def reflectance(dn: npt.NDArray[np.float32], scale: float, offset: float = 0.0) -> Any:
    return dn * np.float32(scale) + np.float32(offset)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EEServer]:
    """A fresh fake Earth Engine per test; the client state is reset afterwards."""
    with fake_earth_engine(monkeypatch, fake_catalog()) as srv:
        yield srv


CREDENTIALS = google.auth.credentials.AnonymousCredentials()


def make_reader(srv: EEServer, **kwargs: Any) -> EarthEngineReader:
    return EarthEngineReader(
        project="harvest-test",
        opt_url=srv.url,
        credentials=CREDENTIALS,
        **kwargs,
    )


def calls(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(graph_invocations(body["expression"]))


def grid_body(grid: ChipGrid) -> dict[str, Any]:
    t = grid.transform
    return {
        "dimensions": {"width": grid.width, "height": grid.height},
        "affineTransform": {"scaleX": t.a, "shearX": t.b, "translateX": t.c,
                            "shearY": t.d, "scaleY": t.e, "translateY": t.f},
        "crsCode": f"EPSG:{grid.epsg}",
    }  # fmt: skip


# --- wire format and values -------------------------------------------------------------------


def test_s2_read_sends_the_chip_grid_and_returns_scaled_float32(server: EEServer) -> None:
    reader = make_reader(server)
    chip = reader.read(s2_assets("B4", "B3", "B2", "B8"), ("B4", "B3", "B2", "B8"), LR_GRID)

    (req,) = server.pixel_requests()
    assert req.path.split("?")[0].endswith("/projects/harvest-test/image:computePixels")
    assert req.body["fileFormat"] == "NPY"  # what the client sends for NUMPY_NDARRAY
    assert req.body["grid"] == grid_body(LR_GRID)
    graph = calls(req.body)
    assert graph["Image.load"]["id"] == S2_ID
    assert graph["Image.select"]["bandSelectors"] == ["B4", "B3", "B2", "B8"]
    fill = {"call": "Image.constant", "args": {"value": MASKED_VALUE}}
    assert (
        graph["Image.unmask"]["value"] == fill and graph["Image.unmask"]["sameFootprint"] is False
    )
    assert "Image.toFloat" in graph
    # Sentinel-2 at its native 10 m: no resampling in the expression.
    assert not {"Image.reduceResolution", "Image.reproject", "Image.resample"} & set(graph)

    assert chip.data.dtype == np.float32 and chip.data.shape == (4, 121, 121)
    assert chip.bands == ("B4", "B3", "B2", "B8") and chip.grid == LR_GRID
    for i, band in enumerate(chip.bands):
        want = reflectance(expected_dn(S2_ID, band, LR_GRID), S2_SCALE, S2_OFFSET)
        np.testing.assert_allclose(chip.data[i], want, rtol=0, atol=1e-6)
    assert not chip.invalid.any()


def test_a_half_pixel_shift_would_be_seen() -> None:
    # Guards the test's own power: a grid off by half a pixel reads values ~1 DN apart.
    shifted = ChipGrid(LR_GRID.epsg, Affine.translation(5.0, 0.0) @ LR_GRID.transform,
                       121, 121, 10.0)  # fmt: skip
    diff = np.abs(expected_dn(S2_ID, "B4", shifted) - expected_dn(S2_ID, "B4", LR_GRID))
    assert float(np.median(diff)) > 0.5


def test_naip_is_area_averaged_onto_the_chip_grid(server: EEServer) -> None:
    reader = make_reader(server)
    bands = ("red", "green", "blue", "nir")
    chip = reader.read(NAIP_ASSETS, bands, HR_GRID, "average")

    (req,) = server.pixel_requests()
    graph = calls(req.body)
    assert graph["Image.load"]["id"] == NAIP_ID
    assert graph["Image.select"]["bandSelectors"] == ["R", "G", "B", "N"]
    reduce = graph["Image.reduceResolution"]
    assert reduce["reducer"] == {"call": "Reducer.mean", "args": {}}
    assert reduce["maxPixels"] == REDUCE_RESOLUTION_MAX_PIXELS
    reproject = graph["Image.reproject"]
    assert reproject["crs"] == {"call": "Projection", "args": {"crs": "EPSG:26911"}}
    assert reproject["crsTransform"] == [2.5, 0.0, 300_000.0, 0.0, -2.5, 4_200_000.0]
    assert req.body["grid"] == grid_body(HR_GRID)
    for i, band in enumerate("RGBN"):
        want = reflectance(expected_dn(NAIP_ID, band, HR_GRID), NAIP_SCALE)
        np.testing.assert_allclose(chip.data[i], want, rtol=1e-6)


def test_masked_and_nodata_pixels_become_nan(server: EEServer) -> None:
    # Masked: the five westmost columns of every band; nodata 0 declared by the asset elsewhere.
    server.pixel_mask = lambda image_id, x, y: x < LR_GRID.transform.c + 50.0
    base = server.pixel_value
    server.pixel_value = lambda i, b, x, y: np.where(y < 4_099_000.0, 0.0, base(i, b, x, y))
    chip = make_reader(server).read(s2_assets("B4", "B8"), ("B4", "B8"), LR_GRID)
    assert np.isnan(chip.data[:, :, :5]).all()
    assert np.isnan(chip.data[:, 100:, :]).all()  # rows whose centre lies south of 4 099 000
    assert np.isfinite(chip.data[:, :100, 5:]).all()
    assert chip.invalid[:, :5].all() and chip.invalid[100:].all()
    assert not chip.invalid[:100, 5:].any()


def test_read_raw_is_nearest_without_scale(server: EEServer) -> None:
    scl = s2_assets("SCL")["SCL"]
    raw = make_reader(server).read_raw(scl, LR_GRID)
    np.testing.assert_array_equal(raw, expected_dn(S2_ID, "SCL", LR_GRID))
    graph = calls(server.pixel_requests()[0].body)
    assert graph["Image.select"]["bandSelectors"] == ["SCL"]
    assert "Image.resample" not in graph and "Image.reduceResolution" not in graph


def test_bilinear_resampling_is_sent(server: EEServer) -> None:
    make_reader(server).read(s2_assets("B4"), ("B4",), LR_GRID, "bilinear")
    assert calls(server.pixel_requests()[0].body)["Image.resample"]["mode"] == "bilinear"


# --- limits and splitting ---------------------------------------------------------------------


def _bodies(srv: EEServer) -> list[str]:
    return [json.dumps(r.body, sort_keys=True) for r in srv.pixel_requests()]


def test_a_read_over_the_size_budget_is_tiled_and_stitched_exactly(server: EEServer) -> None:
    bands = ("B4", "B3", "B2", "B8")
    whole = make_reader(server).read(s2_assets(*bands), bands, LR_GRID)
    server.requests.clear()
    budget = 121 * 121 * 4 * 4 // 5  # a fifth of the chip's float32 bytes
    reader = make_reader(server, max_request_bytes=budget)
    tiled = reader.read(s2_assets(*bands), bands, LR_GRID)

    reqs = server.pixel_requests()
    assert len(reqs) >= 5
    covered = np.zeros(LR_GRID.shape, dtype=int)
    for r in reqs:
        dims = r.body["grid"]["dimensions"]
        assert dims["width"] * dims["height"] * len(bands) * 4 <= budget
        aff = r.body["grid"]["affineTransform"]
        col = round((aff["translateX"] - LR_GRID.transform.c) / 10.0)
        row = round((LR_GRID.transform.f - aff["translateY"]) / 10.0)
        assert aff["translateX"] == LR_GRID.transform.c + 10.0 * col  # on the chip's lattice
        covered[row : row + dims["height"], col : col + dims["width"]] += 1
    assert (covered == 1).all()  # every pixel asked for exactly once
    np.testing.assert_array_equal(tiled.data, whole.data)


def test_the_documented_48_mb_limit_is_kept(server: EEServer) -> None:
    # 4 bands x 2000 x 1600 px of float32 = 51.2 MB: one request would be refused.
    grid = ChipGrid(32610, Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 4_100_000.0), 2000, 1600,
                    10.0)  # fmt: skip
    bands = ("B4", "B3", "B2", "B8")
    chip = make_reader(server).read(s2_assets(*bands), bands, grid)
    sizes = [
        r.body["grid"]["dimensions"]["width"] * r.body["grid"]["dimensions"]["height"] * 16
        for r in server.pixel_requests()
    ]
    assert len(sizes) == 2 and max(sizes) <= EE_MAX_PIXELS_REQUEST_BYTES
    want = reflectance(expected_dn(S2_ID, "B8", grid), S2_SCALE, S2_OFFSET)
    np.testing.assert_allclose(chip.data[3], want, rtol=0, atol=1e-6)


def test_tiles_respect_the_side_and_band_limits() -> None:
    tiles = plan_pixel_tiles("X", ["b"], 2, 40_000)
    assert len(tiles) == 2 and all(t.width <= EE_MAX_PIXELS_SIDE for t in tiles)
    assert sum(t.width for t in tiles) == 40_000
    many = [f"b{i}" for i in range(2100)]
    groups = plan_pixel_tiles("X", many, 1, 1)
    assert [len(t.bands) for t in groups] == [1024, 1024, 52]
    assert [b for t in groups for b in t.bands] == many


def test_memory_limit_splits_and_never_resends_the_same_request(server: EEServer) -> None:
    bands = ("B4", "B8")
    want = make_reader(server).read(s2_assets(*bands), bands, LR_GRID).data
    server.requests.clear()
    server.pixel_memory_limit_px = 121 * 121 * 2 // 3  # a third of the chip at most
    reader = make_reader(server)
    chip = reader.read(s2_assets(*bands), bands, LR_GRID)
    np.testing.assert_array_equal(chip.data, want)
    bodies = _bodies(server)
    assert len(bodies) == len(set(bodies))  # no identical body sent twice
    assert reader.n_splits >= 2  # the whole chip, then each half (60 and 61 rows) was halved
    assert len(bodies) == 1 + 2 + 4


def test_memory_limit_gives_up_after_bounded_halvings(server: EEServer) -> None:
    server.pixel_memory_limit_px = 0  # nothing is ever small enough
    reader = make_reader(server, max_split_depth=3)
    with pytest.raises(ReadError, match="after 3 halvings"):
        reader.read(s2_assets("B4"), ("B4",), LR_GRID)
    bodies = _bodies(server)
    assert len(bodies) == 4  # the chip, then one half per level before giving up
    assert len(bodies) == len(set(bodies))


# --- transient errors, failures, concurrency ---------------------------------------------------


def test_429_is_retried_by_the_client(server: EEServer) -> None:
    server.push_fault(429, "Too many concurrent aggregations.", "RESOURCE_EXHAUSTED")
    chip = make_reader(server).read(s2_assets("B4"), ("B4",), LR_GRID)
    want = reflectance(expected_dn(S2_ID, "B4", LR_GRID), S2_SCALE, S2_OFFSET)
    np.testing.assert_allclose(chip.data[0], want, rtol=0, atol=1e-6)
    assert len(server.pixel_requests()) == 2  # the 429, then the client's own retry


def test_503_outliving_the_client_retries_is_a_read_error(server: EEServer) -> None:
    for _ in range(3):
        server.push_fault(503, "Service unavailable.", "UNAVAILABLE")
    with pytest.raises(ReadError, match="run again later") as info:
        make_reader(server, max_retries=1).read(s2_assets("B4"), ("B4",), LR_GRID)
    assert not isinstance(info.value, AssetReadError)
    assert len(server.pixel_requests()) == 2


def test_a_missing_image_is_an_asset_error_naming_the_href(server: EEServer) -> None:
    assets = AssetMap({"B4": AssetRef(ee_href(S2, "NOPE", "B4"))})
    with pytest.raises(AssetReadError, match="ee://COPERNICUS/S2_SR_HARMONIZED/NOPE#B4"):
        make_reader(server).read(assets, ("B4",), LR_GRID)
    with pytest.raises(ReadError, match="no asset for band B5"):
        make_reader(server).read(s2_assets("B4"), ("B5",), LR_GRID)


def test_concurrency_never_exceeds_the_bound(server: EEServer) -> None:
    # Two readers of one project share the per-process bound (each alone could send 3).
    server.pixel_delay_s = 0.05
    readers = [
        make_reader(server, max_concurrent=3, max_request_bytes=121 * 121 * 4 // 8)
        for _ in range(2)
    ]
    errors: list[BaseException] = []

    def work(reader: EarthEngineReader) -> None:
        try:
            reader.read(s2_assets("B4"), ("B4",), LR_GRID)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(readers[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(server.pixel_requests()) >= 4 * 8
    assert 2 <= server.max_pixels_in_flight <= 3


def test_settings_are_checked() -> None:
    with pytest.raises(CatalogError, match="1-40"):
        EarthEngineReader(max_concurrent=41)
    with pytest.raises(CatalogError, match="computePixels limit"):
        EarthEngineReader(max_request_bytes=EE_MAX_PIXELS_REQUEST_BYTES + 1)


def test_fetch_picks_the_earth_engine_reader_for_ee_hrefs(tmp_path: Path) -> None:
    default = FetchSettings(RECIPE, tmp_path)
    assert isinstance(_reader_for(s2_assets("B4"), None, default), EarthEngineReader)
    cog = AssetMap({"B4": AssetRef("/data/B04.tif")})
    assert isinstance(_reader_for(cog, None, default), RasterioReader)
    given = RasterioReader()
    assert _reader_for(s2_assets("B4"), given, default) is given
    # One reader per process for each project and endpoint the settings name.
    settings = FetchSettings(
        RECIPE, tmp_path, reader=ReaderSettings(ee_project="p1", ee_url="http://127.0.0.1:9")
    )
    ee_reader = _reader_for(s2_assets("B4"), None, settings)
    assert isinstance(ee_reader, EarthEngineReader)
    assert (ee_reader.project, ee_reader.opt_url) == ("p1", "http://127.0.0.1:9")
    assert _reader_for(NAIP_ASSETS, None, settings) is ee_reader
    other = FetchSettings(RECIPE, tmp_path, reader=ReaderSettings(ee_project="p2"))
    assert _reader_for(s2_assets("B4"), None, other) is not ee_reader


def test_fetch_writes_earth_engine_chips_billed_to_the_given_project(
    server: EEServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """run_fetch with ee_project / ee_url: every request goes to that endpoint and project."""
    import google.auth

    monkeypatch.setattr(google.auth, "default", lambda scopes=None, **_: (CREDENTIALS, None))
    lon, lat = -119.5, 37.5  # inside the fake images, UTM zone 11
    when = datetime(2021, 6, 13, 18, 49, tzinfo=UTC)
    box = shapely.box(-120.2, 36.9, -118.9, 38.1)
    lr_assets = {
        name: AssetRef(ee_href(S2, S2_INDEX, band), scale=S2_SCALE, offset=S2_OFFSET, nodata=0.0)
        for name, band in (("B04", "B4"), ("B03", "B3"), ("B02", "B2"), ("B08", "B8"))
    }
    lr_assets["SCL"] = AssetRef(ee_href(S2, S2_INDEX, "SCL"))
    lr = SceneRef(S2_ID, "sentinel-2-l2a", "earth-engine", when, box, lr_assets)
    hr = SceneRef(NAIP_ID, "naip", "earth-engine", when, box, NAIP_ASSETS)
    roi = RoiFootprint.square("ROI_000001", lon, lat, RECIPE.lr.chip_side_m, 32611)
    pair = pair_scenes([roi], [lr], [hr], RECIPE).pairs[0]
    job = FetchJob("ROI_000001", lon, lat, 32611, pair)
    summary = run_fetch([job], RECIPE, tmp_path / "ds", ee_project="billed", ee_url=server.url)
    assert summary.n_failed == 0 and summary.n_kept + summary.n_rejected == 1
    pixel = server.pixel_requests()
    assert len(pixel) >= 3  # LR bands, SCL, NAIP
    # Any API version prefix (the client's own), then the project the run named.
    assert all(r.path.split("/", 2)[2].startswith("projects/billed/image:") for r in pixel)
