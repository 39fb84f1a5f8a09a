"""StacParquetCatalog: the same items as the live STAC API, written as stac-geoparquet.

The parquet path must return the same scenes as the API path for the same request, with one
SQL query however many footprints there are.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
import shapely.geometry
import stac_geoparquet.arrow as sga
from stac_server import StacServer

from harvest.backends.base import Catalog
from harvest.backends.profiles import ProviderProfile, load_profile
from harvest.backends.stac_api.catalog import StacApiCatalog
from harvest.backends.stac_parquet.catalog import StacParquetCatalog
from harvest.errors import CatalogError

CASES = [
    "naip-and-s2-cloud40",
    "edges-no-cloud-limit",
    "exact-window-ends",
    "many-footprints",
    "real-pc-item-alaska",
    "ocean-nothing",
]


def _write(items: list[dict[str, Any]], path: Path) -> Path:
    table = sga.parse_stac_items_to_arrow(items)
    sga.to_parquet(table.read_all() if hasattr(table, "read_all") else table, path)
    return path


@pytest.fixture(scope="module")
def snapshot(stac_data: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All test items in one stac-geoparquet file."""
    out = tmp_path_factory.mktemp("geoparquet") / "items.parquet"
    return _write([dict(i) for i in stac_data.items], out)


@pytest.fixture(scope="module")
def snapshot_dir(stac_data: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same items split into one file per collection inside nested folders."""
    root = tmp_path_factory.mktemp("geoparquet-dir")
    for coll in sorted({i["collection"] for i in stac_data.items}):
        sub = root / f"collection={coll}"
        sub.mkdir()
        _write(
            [dict(i) for i in stac_data.items if i["collection"] == coll], sub / "part-0.parquet"
        )
    return root


@pytest.fixture(scope="module")
def pc() -> ProviderProfile:
    return load_profile("planetary-computer")


@pytest.mark.parametrize("name", CASES)
def test_parquet_returns_the_same_scenes_as_the_api(
    stac_server: StacServer,
    stac_data: Any,
    cases: Any,
    snapshot: Path,
    pc: ProviderProfile,
    name: str,
) -> None:
    case = cases[name]
    request = case.request()
    api = StacApiCatalog(stac_server.url, pc).search(request)
    catalog = StacParquetCatalog(snapshot, pc)
    assert isinstance(catalog, Catalog)
    bulk = catalog.search(request)
    want = stac_data.expected_ids(
        [g for _, g in case.footprints],
        case.collections,
        case.start,
        case.end,
        case.max_cloud_pct,
    )
    assert {s.key for s in bulk.scenes} == {s.key for s in api.scenes} == want
    # Same scenes field by field (geometry compared topologically).
    for a, b in zip(api.scenes, bulk.scenes, strict=True):
        assert a.key == b.key
        assert a.geometry.equals(b.geometry)
        fields = (
            "datetime",
            "assets",
            "cloud_cover_pct",
            "platform",
            "epsg",
            "processing_baseline",
            "mgrs_tile",
            "gsd_m",
            "sun_azimuth_deg",
            "sun_elevation_deg",
            "view_off_nadir_deg",
        )
        for f in fields:
            assert getattr(a, f) == getattr(b, f), f
    assert bulk.stats.n_requests == 1  # one SQL query, however many footprints
    assert bulk.stats.n_scenes == len(want)


def test_one_query_for_many_footprints_and_sql_prefilter_narrows(
    cases: Any, snapshot: Path, stac_data: Any, pc: ProviderProfile
) -> None:
    case = cases["many-footprints"]
    catalog = StacParquetCatalog(snapshot, pc)
    result = catalog.search(case.request())
    assert result.stats.n_footprints == 300 and result.stats.n_requests == 1
    table = catalog.query_table(case.request())
    # The SQL already removed other collections, cloudy S2 and out-of-window items.
    assert table.num_rows == result.stats.n_items
    assert table.num_rows < len(stac_data.items)
    assert set(table.column("collection").to_pylist()) <= {"sentinel-2-l2a", "naip"}
    clouds = [c for c in table.column("eo:cloud_cover").to_pylist() if c is not None]
    assert clouds and max(clouds) <= 50.0


@pytest.mark.parametrize("cell_deg", [0.1, 0.5, 3.0, 20.0])
def test_result_does_not_depend_on_the_join_grid(
    cases: Any, snapshot: Path, pc: ProviderProfile, cell_deg: float
) -> None:
    case = cases["many-footprints"]
    reference = StacParquetCatalog(snapshot, pc).search(case.request())
    other = StacParquetCatalog(snapshot, pc, cell_deg=cell_deg).search(case.request())
    assert other.scenes == reference.scenes


def test_folder_of_files_gives_the_same_answer(
    cases: Any, snapshot: Path, snapshot_dir: Path, pc: ProviderProfile
) -> None:
    case = cases["naip-and-s2-cloud40"]
    one = StacParquetCatalog(snapshot, pc).search(case.request())
    many = StacParquetCatalog(snapshot_dir, pc)
    assert len(many.files) == 3
    result = many.search(case.request())
    assert result.scenes == one.scenes
    assert result.stats.n_requests == 1


def test_hrefs_are_stored_unsigned_and_signed_on_demand(
    cases: Any, snapshot: Path, pc: ProviderProfile
) -> None:
    catalog = StacParquetCatalog(snapshot, pc, sign=lambda h: h + "?sig=T")
    scene = catalog.search(cases["naip-and-s2-cloud40"].request()).scenes[0]
    assert all("?" not in a.href for a in scene.assets.values())
    assert all(a.href.endswith("?sig=T") for a in catalog.signed_assets(scene).values())


def test_bad_sources_are_one_line_errors(tmp_path: Path, pc: ProviderProfile) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        StacParquetCatalog(tmp_path / "nope.parquet", pc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="holds no .parquet files"):
        StacParquetCatalog(tmp_path / "empty", pc)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["a"], "value": [1.0]}), plain)
    with pytest.raises(CatalogError, match=r"not stac-geoparquet: it lacks column\(s\) collection"):
        StacParquetCatalog(plain, pc)
    text = tmp_path / "notes.parquet"
    text.write_text("not parquet at all")
    with pytest.raises(CatalogError, match="not a readable parquet file") as info:
        StacParquetCatalog(text, pc)
    assert "\n" not in str(info.value)


def test_unknown_collection_is_a_catalog_error(
    snapshot: Path, cases: Any, pc: ProviderProfile
) -> None:
    case = cases["ocean-nothing"]
    from harvest.backends.base import SearchRequest

    request = SearchRequest.from_geometries(
        [("x", shapely.box(0, 0, 1, 1))], ["venus-l2a"], case.start, case.end
    )
    with pytest.raises(CatalogError, match="has no collection 'venus-l2a'"):
        StacParquetCatalog(snapshot, pc).search(request)


def test_demo_world_api_and_parquet_agree_with_brute_force(
    demo_stac: Any, demo_world: Path, tmp_path: Path
) -> None:
    from harvest.backends.base import SearchRequest
    from harvest.demo.stac import write_geoparquet

    items = demo_stac.items
    profile = load_profile("demo")
    colls = sorted({i["collection"] for i in items})
    canon = tuple(profile.collection_for_id(c).canonical for c in colls)
    bounds = shapely.total_bounds([shapely.geometry.shape(i["geometry"]) for i in items])
    x0, y0, x1, y1 = bounds
    # A grid of small chips over the world's extent.
    chips = [
        (f"c{i}-{j}", shapely.box(x, y, x + 0.005, y + 0.005))
        for i, x in enumerate(np.linspace(x0, x1 - 0.005, 12))
        for j, y in enumerate(np.linspace(y0, y1 - 0.005, 12))
    ]
    times = sorted(i["properties"]["datetime"] for i in items)
    start = datetime.fromisoformat(times[0].replace("Z", "+00:00"))
    end = datetime.fromisoformat(times[-1].replace("Z", "+00:00"))
    request = SearchRequest.from_geometries(chips, canon, start, end, 50.0)
    api = StacApiCatalog(demo_stac.server.url, profile).search(request)
    files = write_geoparquet(demo_world, tmp_path / "gp")
    bulk = StacParquetCatalog(sorted(files.values()), profile).search(request)
    want = set()
    for it in items:
        cloud = it["properties"].get("eo:cloud_cover")
        if cloud is not None and cloud > 50.0:
            continue
        geom = shapely.geometry.shape(it["geometry"])
        if any(geom.intersects(g) for _, g in chips):
            want.add((profile.collection_for_id(it["collection"]).canonical, it["id"]))
    assert want
    assert {s.key for s in api.scenes} == {s.key for s in bulk.scenes} == want
    assert api.stats.n_invalid == 0 and bulk.stats.n_invalid == 0
