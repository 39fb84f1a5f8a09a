"""Integration fixtures: a real STAC API (stac-fastapi-pgstac) loaded with known items.

The items are the real provider items of ``tests/fixtures/stac-items`` plus synthetic
Planetary-Computer-style ``sentinel-2-l2a`` and ``naip`` items made by :func:`synthetic_items`
from a seed: footprints on a regular grid, datetimes on fixed days, cloud covers drawn from the
seeded generator. Tests compute the expected answers from these dicts with plain shapely, so
every expectation follows from the construction, not from the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import shapely.geometry
from stac_server import StacServer, StacServerError, start_stac_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stac-items"
SEED = 20260101

S2_TILE_DEG = 1.0
S2_LON0, S2_LAT0, S2_NX, S2_NY = -100.0, 35.0, 4, 3
S2_DAYS = (datetime(2021, 6, 1, 17, 5, 31, tzinfo=UTC), 5, 6)  # first day, step, count
NAIP_DEG = 0.0625
NAIP_LON0, NAIP_LAT0, NAIP_NX, NAIP_NY = -99.5, 35.5, 6, 4
NAIP_DAY = datetime(2021, 6, 12, 16, 0, 0, tzinfo=UTC)


S2_ASSETS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B11",
    "B12",
    "SCL",
)


def _collection(cid: str, description: str) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cid,
        "description": description,
        "license": "proprietary",
        "links": [],
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [["2010-01-01T00:00:00Z", None]]},
        },
    }


def _feature(
    item_id: str, collection: str, geom: shapely.Geometry, props: dict[str, Any], assets: dict
) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id,
        "collection": collection,
        "geometry": shapely.geometry.mapping(geom),
        "bbox": list(geom.bounds),
        "properties": props,
        "assets": assets,
        "links": [],
    }


def synthetic_items(seed: int = SEED) -> list[dict[str, Any]]:
    """Planetary-Computer-style S2 L2A and NAIP items with known footprints, times and clouds.

    S2: a 4 x 3 grid of 1-degree tiles at (-100..-96 E, 35..38 N), 6 passes 5 days apart
    from 2021-06-01, cloud covers uniform in [0, 100) from ``seed``; every third pass of the
    odd tiles covers only the western half of the tile (a swath edge). NAIP: a 6 x 4 grid of
    0.0625-degree quads at (-99.5 E, 35.5 N), one day, no cloud cover (as on PC).
    """
    rng = np.random.default_rng(seed)
    items: list[dict[str, Any]] = []
    first, step, count = S2_DAYS
    for ix in range(S2_NX):
        for iy in range(S2_NY):
            lon, lat = S2_LON0 + ix * S2_TILE_DEG, S2_LAT0 + iy * S2_TILE_DEG
            tile = f"14S{chr(ord('A') + ix)}{chr(ord('A') + iy)}"
            for k in range(count):
                when = first + timedelta(days=step * k, seconds=37 * ix + 11 * iy)
                half = (ix + iy) % 2 == 1 and k % 3 == 0
                geom = shapely.box(
                    lon, lat, lon + (S2_TILE_DEG / 2 if half else S2_TILE_DEG), lat + S2_TILE_DEG
                )
                stamp = when.strftime("%Y%m%dT%H%M%S")
                item_id = f"S2{'AB'[k % 2]}_MSIL2A_{stamp}_R012_T{tile}_{stamp[:8]}T120000"
                base = (
                    f"https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/14/S/"
                    f"{tile[3:]}/{when:%Y/%m/%d}/{item_id}.SAFE"
                )
                props = {
                    "datetime": when.isoformat().replace("+00:00", "Z"),
                    "platform": f"Sentinel-2{'AB'[k % 2]}",
                    "eo:cloud_cover": round(float(rng.uniform(0, 100)), 3),
                    "proj:epsg": 32614,
                    "s2:mgrs_tile": tile,
                    "s2:processing_baseline": "03.00",
                    "view:sun_azimuth": 120.0,
                }
                assets = {
                    a: {"href": f"{base}/{a}_10m.tif", "type": "image/tiff"} for a in S2_ASSETS
                }
                items.append(_feature(item_id, "sentinel-2-l2a", geom, props, assets))
    for ix in range(NAIP_NX):
        for iy in range(NAIP_NY):
            lon, lat = NAIP_LON0 + ix * NAIP_DEG, NAIP_LAT0 + iy * NAIP_DEG
            geom = shapely.box(lon, lat, lon + NAIP_DEG, lat + NAIP_DEG)
            when = NAIP_DAY + timedelta(minutes=3 * ix + iy)
            item_id = f"ok_m_3509{ix}{iy:02d}_ne_14_060_20210612"
            props = {
                "datetime": when.isoformat().replace("+00:00", "Z"),
                "gsd": 0.6,
                "proj:epsg": 26914,
                "naip:state": "ok",
                "naip:year": "2021",
            }
            href = f"https://naipeuwest.blob.core.windows.net/naip/v002/ok/2021/{item_id}.tif"
            assets = {"image": {"href": href, "type": "image/tiff"}}
            items.append(_feature(item_id, "naip", geom, props, assets))
    return items


def fixture_items() -> list[dict[str, Any]]:
    """The real provider items shipped in tests/fixtures/stac-items."""
    return [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]


@dataclass(frozen=True)
class StacTestData:
    """What the test server holds."""

    collections: tuple[dict[str, Any], ...]
    items: tuple[dict[str, Any], ...]

    def expected_ids(
        self,
        footprints: Sequence[shapely.Geometry],
        collections: Sequence[str],
        start: datetime,
        end: datetime,
        max_cloud_pct: float | None,
    ) -> set[tuple[str, str]]:
        """The (collection, id) pairs a correct search must return, by brute force."""
        out: set[tuple[str, str]] = set()
        for item in self.items:
            if item["collection"] not in collections:
                continue
            when = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
            if not start <= when <= end:
                continue
            cloud = item["properties"].get("eo:cloud_cover")
            if max_cloud_pct is not None and cloud is not None and cloud > max_cloud_pct:
                continue
            geom = shapely.geometry.shape(item["geometry"])
            if any(geom.intersects(fp) for fp in footprints):
                out.add((item["collection"], item["id"]))
        return out


def build_test_data() -> StacTestData:
    """Synthetic and real items plus their collections."""
    items = synthetic_items() + fixture_items()
    cids = sorted({it["collection"] for it in items})
    collections = tuple(_collection(c, f"test collection {c}") for c in cids)
    return StacTestData(collections=collections, items=tuple(items))


@pytest.fixture(scope="session")
def stac_data() -> StacTestData:
    """The items loaded into the test STAC API."""
    return build_test_data()


@pytest.fixture(scope="session")
def stac_server(stac_data: StacTestData) -> Iterator[StacServer]:
    """A live stac-fastapi-pgstac on 127.0.0.1 holding :func:`stac_data`, once per session."""
    try:
        server = start_stac_server(stac_data.collections, stac_data.items)
    except StacServerError as exc:
        pytest.fail(f"cannot start the test STAC API: {exc}")
    try:
        yield server
    finally:
        server.close()


def item_mapping(items: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Items by (collection, id)."""
    return {(it["collection"], it["id"]): it for it in items}


@dataclass(frozen=True)
class SearchCase:
    """A named request with known (brute-force) answers."""

    name: str
    footprints: tuple[tuple[str, Any], ...]
    collections: tuple[str, ...]
    start: datetime
    end: datetime
    max_cloud_pct: float | None

    def request(self) -> Any:
        from harvest.backends.base import SearchRequest

        return SearchRequest.from_geometries(
            self.footprints, self.collections, self.start, self.end, self.max_cloud_pct
        )


def search_cases() -> list[SearchCase]:
    """Requests over the synthetic and real items, each with a different difficulty."""
    june = (datetime(2021, 6, 1, tzinfo=UTC), datetime(2021, 6, 30, 23, 59, 59, tzinfo=UTC))
    rng = np.random.default_rng(7)
    naip_rois = tuple(
        (f"naip{i}", shapely.box(x, y, x + 0.01, y + 0.01))
        for i, (x, y) in enumerate(
            zip(rng.uniform(-99.55, -99.2, 25), rng.uniform(35.45, 35.8, 25), strict=True)
        )
    )
    # Small chips straddling S2 tile edges and corners (lon -99, -98; lat 36, 37).
    edge_rois = (
        ("edge-x", shapely.box(-99.005, 35.4, -98.995, 35.41)),
        ("corner", shapely.box(-98.003, 36.997, -97.997, 37.003)),
        ("inside", shapely.box(-97.6, 37.5, -97.59, 37.51)),
        ("halfswath", shapely.box(-96.3, 35.2, -96.29, 35.21)),
    )
    # 300 chips spread over the whole S2 grid: batching must keep requests few.
    many = tuple(
        (f"m{i:03d}", shapely.box(x, y, x + 0.02, y + 0.02))
        for i, (x, y) in enumerate(
            zip(rng.uniform(-100.2, -95.9, 300), rng.uniform(34.9, 38.1, 300), strict=True)
        )
    )
    # Window starting exactly on one pass and ending exactly on another (inclusive ends).
    first, step, _ = S2_DAYS
    exact_start = first + timedelta(days=step)
    exact_end = first + timedelta(days=3 * step)
    return [
        SearchCase("naip-and-s2-cloud40", naip_rois, ("sentinel-2-l2a", "naip"), *june, 40.0),
        SearchCase("edges-no-cloud-limit", edge_rois, ("sentinel-2-l2a",), *june, None),
        SearchCase(
            "exact-window-ends", edge_rois, ("sentinel-2-l2a",), exact_start, exact_end, None
        ),
        SearchCase("many-footprints", many, ("sentinel-2-l2a", "naip"), *june, 50.0),
        SearchCase(
            "real-pc-item-alaska",
            (("ak", shapely.box(-147.9, 60.8, -147.8, 60.85)),),
            ("sentinel-2-l2a",),
            datetime(2019, 6, 1, tzinfo=UTC),
            datetime(2019, 7, 1, tzinfo=UTC),
            5.0,
        ),
        SearchCase(
            "ocean-nothing",
            (("sea", shapely.box(-30.0, 40.0, -29.9, 40.1)),),
            ("sentinel-2-l2a", "naip"),
            *june,
            None,
        ),
    ]


@pytest.fixture(scope="session")
def cases() -> dict[str, SearchCase]:
    """The search cases by name."""
    return {c.name: c for c in search_cases()}


@dataclass
class DemoStac:
    """A second test server holding the demo world's items (as the world wrote them)."""

    server: StacServer
    items: list[dict[str, Any]]


@pytest.fixture(scope="session")
def demo_stac(demo_world: Path) -> Iterator[DemoStac]:
    """stac-fastapi-pgstac loaded with the demo world's items (built once, cached)."""
    from harvest.demo.stac import item_dicts_absolute

    items = item_dicts_absolute(demo_world)
    cids = sorted({it["collection"] for it in items})
    try:
        server = start_stac_server([_collection(c, f"demo {c}") for c in cids], items)
    except StacServerError as exc:
        pytest.fail(f"cannot start the demo-world STAC API: {exc}")
    try:
        yield DemoStac(server=server, items=items)
    finally:
        server.close()
