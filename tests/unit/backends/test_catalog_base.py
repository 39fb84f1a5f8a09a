from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shapely.geometry import Point, Polygon, box

from harvest.backends.base import (
    RECORD_COLUMNS,
    AssetMap,
    AssetRef,
    Catalog,
    Footprint,
    SceneRef,
    SearchRequest,
    dedupe_scenes,
)
from harvest.backends.memory import MemoryCatalog, filter_scenes
from harvest.errors import CatalogError, HarvestError

T0 = datetime(2021, 7, 3, 17, 40, 12, 345678, tzinfo=UTC)


def scene(item_id: str = "S2A_X", **kw: object) -> SceneRef:
    defaults: dict[str, object] = {
        "collection": "sentinel-2-l2a",
        "provider": "demo",
        "datetime": T0,
        "geometry": box(-100.0, 40.0, -99.0, 41.0),
        "assets": {
            "B04": AssetRef("https://x/B04.tif", scale=1e-4, offset=-0.1, nodata=0, dtype="uint16"),
            "B03": AssetRef("https://x/B03.tif", scale=1e-4, offset=-0.1, nodata=0),
        },
        "cloud_cover_pct": 12.5,
        "platform": "sentinel-2a",
        "epsg": 32614,
        "processing_baseline": "04.00",
        "view_off_nadir_deg": 3.5,
        "sun_azimuth_deg": 140.0,
        "sun_elevation_deg": 60.0,
        "mgrs_tile": "14TLL",
        "gsd_m": 10.0,
    }
    defaults.update(kw)
    return SceneRef(item_id=item_id, **defaults)  # type: ignore[arg-type]


def test_catalog_error_is_a_harvest_error() -> None:
    assert issubclass(CatalogError, HarvestError) and issubclass(CatalogError, RuntimeError)


def test_datetime_is_converted_to_utc_and_naive_is_rejected() -> None:
    local = datetime(2021, 7, 3, 19, 40, tzinfo=timezone(timedelta(hours=2)))
    s = scene(datetime=local)
    assert s.datetime == datetime(2021, 7, 3, 17, 40, tzinfo=UTC)
    assert s.datetime.utcoffset() == timedelta(0)
    with pytest.raises(CatalogError, match="S2A_X has no time zone"):
        scene(datetime=datetime(2021, 7, 3))


def test_bad_scene_fields_are_rejected() -> None:
    with pytest.raises(CatalogError, match="no footprint"):
        scene(geometry=Point(0, 0).buffer(0))
    with pytest.raises(CatalogError, match="cloud cover 120"):
        scene(cloud_cover_pct=120.0)
    with pytest.raises(CatalogError, match="empty href"):
        AssetRef("")


def test_scenes_are_frozen_and_hashable() -> None:
    a, b = scene(), scene()
    assert a == b and hash(a) == hash(b)
    assert len({a, b, scene("other")}) == 2
    with pytest.raises(AttributeError):
        a.item_id = "x"  # type: ignore[misc]
    assert isinstance(a.assets, AssetMap)
    with pytest.raises(TypeError):
        a.assets["B02"] = AssetRef("y")  # type: ignore[index]
    assert a.bbox == (-100.0, 40.0, -99.0, 41.0)
    assert a.key == ("sentinel-2-l2a", "S2A_X")


def test_missing_band_names_the_bands_it_has() -> None:
    with pytest.raises(CatalogError, match="has no band B08: it has B03, B04"):
        scene().asset("B08")
    assert scene().asset("B04").href == "https://x/B04.tif"


def test_record_round_trip_is_exact() -> None:
    s = scene()
    row = s.to_record()
    assert tuple(row) == RECORD_COLUMNS
    assert SceneRef.from_record(row) == s
    # Rows from CSV or JSON carry ISO strings.
    assert SceneRef.from_record({**row, "datetime": "2021-07-03T19:40:12.345678+02:00"}) == s


def test_record_round_trip_through_parquet(tmp_path: Path) -> None:
    scenes = [
        scene(),
        scene(
            "NAIP_1",
            collection="naip",
            cloud_cover_pct=None,
            processing_baseline=None,
            view_off_nadir_deg=None,
            epsg=None,
            assets={"red": AssetRef("s3://n/i.tif", band_index=1, nodata=float("nan"))},
        ),
    ]
    path = tmp_path / "scenes.parquet"
    pq.write_table(pa.Table.from_pylist([s.to_record() for s in scenes]), path)
    back_arrow = [SceneRef.from_record(r) for r in pq.read_table(path).to_pylist()]
    assert back_arrow[0] == scenes[0]
    assert back_arrow[1].cloud_cover_pct is None and back_arrow[1].epsg is None
    assert math.isnan(back_arrow[1].asset("red").nodata or 0.0)
    # pandas hands back NaN for missing numbers and Timestamps for datetimes.
    frame = pd.read_parquet(path)
    back_pandas = [SceneRef.from_record(r) for r in frame.to_dict("records")]
    assert back_pandas[0] == scenes[0]
    assert back_pandas[1].epsg is None and back_pandas[1].view_off_nadir_deg is None


def test_record_without_required_columns_is_rejected() -> None:
    row = scene().to_record()
    del row["datetime"]
    with pytest.raises(CatalogError, match="lacks column.*datetime"):
        SceneRef.from_record(row)


def test_dedupe_keeps_first_of_each_item() -> None:
    a = scene("A")
    a_again = scene("A", cloud_cover_pct=99.0)
    naip_a = scene("A", collection="naip")
    out = dedupe_scenes([a, a_again, naip_a, scene("B")])
    assert [s.key for s in out] == [
        ("sentinel-2-l2a", "A"),
        ("naip", "A"),
        ("sentinel-2-l2a", "B"),
    ]
    assert out[0].cloud_cover_pct == 12.5


def test_search_request_validation() -> None:
    fp = [("r1", box(0, 0, 1, 1)), ("r2", box(1, 1, 2, 2))]
    end = T0 + timedelta(days=1)
    req = SearchRequest.from_geometries(fp, ["sentinel-2-l2a"], T0, end, 20)
    assert [f.key for f in req.footprints] == ["r1", "r2"]
    assert isinstance(req.collections, tuple)
    with pytest.raises(CatalogError, match="unique; repeated: r1"):
        SearchRequest.from_geometries(fp + [("r1", box(5, 5, 6, 6))], ["naip"], T0, end)
    with pytest.raises(CatalogError, match="after end"):
        SearchRequest.from_geometries(fp, ["naip"], end, T0)
    with pytest.raises(CatalogError, match="search start has no time zone"):
        SearchRequest.from_geometries(fp, ["naip"], datetime(2020, 1, 1), end)
    with pytest.raises(CatalogError, match="at least one collection"):
        SearchRequest.from_geometries(fp, [], T0, end)
    with pytest.raises(CatalogError, match="max_cloud_pct 101"):
        SearchRequest.from_geometries(fp, ["naip"], T0, end, 101)
    with pytest.raises(CatalogError, match="not a valid geometry"):
        Footprint("bowtie", Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)]))


def test_filter_scenes_applies_every_rule_exactly() -> None:
    fp = [("r1", box(-99.5, 40.5, -99.49, 40.51))]
    req = SearchRequest.from_geometries(fp, ["sentinel-2-l2a"], T0, T0 + timedelta(days=2), 20)
    keep = scene("keep")
    on_end = scene("on_end", datetime=T0 + timedelta(days=2))
    unknown_cloud = scene("unknown_cloud", cloud_cover_pct=None)
    drops = [
        scene("too_cloudy", cloud_cover_pct=20.01),
        scene("before", datetime=T0 - timedelta(seconds=1)),
        scene("other_collection", collection="naip"),
        # Its bbox contains the footprint but the L-shaped footprint itself misses it.
        scene("bbox_only", geometry=box(-100, 40, -99, 41).difference(box(-99.6, 40.4, -99, 41))),
    ]
    got = filter_scenes([on_end, *drops, unknown_cloud, keep, keep], req)
    assert [s.item_id for s in got] == ["keep", "unknown_cloud", "on_end"]


def test_memory_catalog_is_a_catalog_and_reports_stats() -> None:
    cat = MemoryCatalog([scene("a"), scene("b", geometry=box(10, 10, 11, 11))], provider="demo")
    assert isinstance(cat, Catalog)
    req = SearchRequest.from_geometries(
        [("r1", box(-99.5, 40.5, -99.4, 40.6)), ("r2", box(-99.3, 40.5, -99.2, 40.6))],
        ["sentinel-2-l2a"],
        T0 - timedelta(days=1),
        T0 + timedelta(days=1),
    )
    res = cat.search(req)
    assert [s.item_id for s in res.scenes] == ["a"]
    assert res.by_collection("naip") == ()
    assert (res.stats.n_footprints, res.stats.n_requests, res.stats.n_scenes) == (2, 0, 1)
