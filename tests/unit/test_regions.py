import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import LineString, Point, Polygon, box

from harvest.errors import RegionError
from harvest.regions import load_region


def _write_geojson(path: Path, geoms: list, crs_name: str | None = None) -> Path:
    data: dict = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(g)}
            for g in geoms
        ],
    }
    if crs_name is not None:
        data["crs"] = {"type": "name", "properties": {"name": crs_name}}
    path.write_text(json.dumps(data))
    return path


def test_bundled_regions() -> None:
    conus = load_region("conus")
    assert conus.geometry.geom_type == "Polygon"
    # CONUS is about 8.08 million km^2.
    assert 7.9e12 < conus.area_m2 < 8.2e12
    world = load_region("world-land")
    assert world.geometry.geom_type == "MultiPolygon"
    # Land (without Antarctic ice shelves) is about 147-149 million km^2.
    assert 1.40e14 < world.area_m2 < 1.52e14
    assert load_region("World_Land").area_m2 == world.area_m2


def test_user_geojson_merges_features(tmp_path: Path) -> None:
    path = _write_geojson(tmp_path / "r.geojson", [box(0, 0, 1, 1), box(0.5, 0, 2, 1)])
    region = load_region(path)
    assert region.geometry.geom_type == "Polygon"
    assert region.geometry.equals(box(0, 0, 2, 1))
    # 2 x 1 degree at the equator: about 222.6 km x 110.6 km.
    assert region.area_m2 == pytest.approx(2.46e10, rel=0.01)


def test_unknown_name() -> None:
    with pytest.raises(RegionError, match="unknown region 'mars'"):
        load_region("mars")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RegionError, match="not found"):
        load_region(tmp_path / "nope.geojson")


def test_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(RegionError, match="cannot read"):
        load_region(bad)
    gpkg = tmp_path / "bad.gpkg"
    gpkg.write_bytes(b"garbage" * 10)
    with pytest.raises(RegionError, match="cannot read"):
        load_region(gpkg)
    other = tmp_path / "r.kml"
    other.write_text("<kml/>")
    with pytest.raises(RegionError, match="unsupported region file type"):
        load_region(other)


def test_empty_layer(tmp_path: Path) -> None:
    with pytest.raises(RegionError, match="empty"):
        load_region(_write_geojson(tmp_path / "e.geojson", []))


def test_invalid_polygon_is_refused_not_repaired(tmp_path: Path) -> None:
    bowtie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    with pytest.raises(RegionError, match=r"invalid polygon \(Self-intersection.*make_valid"):
        load_region(_write_geojson(tmp_path / "bow.geojson", [bowtie]))


@pytest.mark.parametrize("geom", [Point(1, 1), LineString([(0, 0), (1, 1)])])
def test_non_polygon(tmp_path: Path, geom: object) -> None:
    with pytest.raises(RegionError, match="not polygons"):
        load_region(_write_geojson(tmp_path / "p.geojson", [geom]))


def test_unknown_crs_in_geojson(tmp_path: Path) -> None:
    path = _write_geojson(tmp_path / "c.geojson", [box(0, 0, 1, 1)], crs_name="urn:bogus:crs")
    with pytest.raises(RegionError, match="unknown CRS"):
        load_region(path)


def test_projected_coordinates_without_crs(tmp_path: Path) -> None:
    path = _write_geojson(tmp_path / "m.geojson", [box(500000, 4000000, 600000, 4100000)])
    with pytest.raises(RegionError, match="outside longitude/latitude range"):
        load_region(path)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_geopackage_without_crs(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]).to_file(path, driver="GPKG")
    with pytest.raises(RegionError, match="has no CRS"):
        load_region(path)


def test_geoparquet_without_crs(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.parquet"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=None).to_parquet(path)
    with pytest.raises(RegionError, match="has no CRS"):
        load_region(path)


def test_projected_geopackage_is_reprojected(tmp_path: Path) -> None:
    square = box(-500_000, 1_500_000, -300_000, 1_700_000)  # 200 km x 200 km in EPSG:5070
    path = tmp_path / "albers.gpkg"
    gpd.GeoDataFrame(geometry=[square], crs="EPSG:5070").to_file(path, driver="GPKG")
    region = load_region(path)
    xmin, ymin, xmax, ymax = region.geometry.bounds
    assert -110 < xmin < xmax < -90 and 25 < ymin < ymax < 45
    # Albers is equal-area: the reprojected polygon keeps its 40,000 km^2.
    assert region.area_m2 == pytest.approx(4.0e10, rel=0.002)


def test_geoparquet_points_refused_and_polygons_accepted(tmp_path: Path) -> None:
    pts = tmp_path / "pts.parquet"
    gpd.GeoDataFrame(geometry=[Point(0, 0)], crs="EPSG:4326").to_parquet(pts)
    with pytest.raises(RegionError, match="Point"):
        load_region(pts)
    polys = tmp_path / "polys.parquet"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_parquet(polys)
    assert load_region(polys).geometry.equals(box(0, 0, 1, 1))
