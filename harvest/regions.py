"""Regions to sample ROIs in: the bundled ones and user polygon layers, as lon/lat geometry.

A region is always returned in WGS84 longitude/latitude (OGC:CRS84 axis order). Its edges are
straight lines in longitude/latitude, the GeoJSON convention; layers in another CRS are densified
before they are reprojected so that their edges keep their shape.

Bundled regions (Natural Earth, public domain): ``conus`` (the contiguous United States) and
``world-land`` (all land). User files: GeoJSON (``.geojson``/``.json``, CRS84 by the
specification, or the CRS its legacy ``crs`` member names), GeoPackage (``.gpkg``) and GeoParquet
(``.parquet``/``.geoparquet``); these two must declare their CRS. All polygons of the layer are
merged into one region. Invalid polygons are refused, not repaired, so that the region is exactly
what the user drew.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from harvest.errors import RegionError
from harvest.geoio import first_line

BUNDLED_REGIONS = {"conus": "conus.geojson", "world-land": "world_land.geojson"}
GEOJSON_SUFFIXES = (".geojson", ".json")
GPKG_SUFFIXES = (".gpkg",)
PARQUET_SUFFIXES = (".parquet", ".geoparquet")
_FILE_HINT = "give 'conus', 'world-land' or a GeoJSON / GeoPackage / GeoParquet polygon file"
_FIX_HINT = "fix it (e.g. QGIS 'Fix geometries' or shapely.make_valid) and try again"
# Segments of reprojected layers are split so that none spans more than this share of the layer.
_DENSIFY_FRACTION = 1.0 / 500.0


@dataclass(frozen=True)
class Region:
    """A polygon region in WGS84 longitude/latitude.

    Attributes:
        name: The bundled name or the file path the region came from.
        geometry: Valid Polygon or MultiPolygon, lon/lat degrees.
        area_m2: Geodesic area on the WGS84 ellipsoid.
        perimeter_m: Geodesic perimeter on the WGS84 ellipsoid.
    """

    name: str
    geometry: BaseGeometry
    area_m2: float
    perimeter_m: float


def load_region(spec: str | Path) -> Region:
    """Load a bundled region by name or a polygon layer from a file.

    Args:
        spec: ``"conus"``, ``"world-land"``, or a path to a GeoJSON / GeoPackage / GeoParquet
            polygon layer.

    Returns:
        The region in lon/lat.

    Raises:
        RegionError: The name is unknown, or the file is missing, unreadable, empty, not
            polygons, invalid, or in an unknown CRS.
    """
    text = str(spec)
    key = text.strip().lower().replace("_", "-")
    if key in BUNDLED_REGIONS and not Path(text).exists():
        ref = resources.files("harvest.data").joinpath(BUNDLED_REGIONS[key])
        data = json.loads(ref.read_text(encoding="utf-8"))
        geoms, crs = _geojson_geometries(data, key)
        return _build_region(key, geoms, crs)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    known = GEOJSON_SUFFIXES + GPKG_SUFFIXES + PARQUET_SUFFIXES
    if not path.exists():
        if suffix in known or "/" in text or "\\" in text or suffix:
            raise RegionError(f"region file not found: {text}; check the path ({_FILE_HINT})")
        names = ", ".join(sorted(BUNDLED_REGIONS))
        raise RegionError(f"unknown region '{text}': use one of {names}, or {_FILE_HINT}")
    if path.is_dir():
        raise RegionError(f"region path is a folder, not a file: {text}; {_FILE_HINT}")
    if suffix in GEOJSON_SUFFIXES:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegionError(
                f"cannot read region file {text} as GeoJSON ({first_line(exc)}); "
                "check that it is a valid GeoJSON file"
            ) from exc
        geoms, crs = _geojson_geometries(data, text)
    elif suffix in GPKG_SUFFIXES or suffix in PARQUET_SUFFIXES:
        geoms, crs = _layer_geometries(path, text, parquet=suffix in PARQUET_SUFFIXES)
    else:
        raise RegionError(
            f"unsupported region file type '{suffix or path.name}': {text}; "
            "use .geojson, .gpkg or .parquet"
        )
    return _build_region(text, geoms, crs)


def _geojson_geometries(data: Any, name: str) -> tuple[list[BaseGeometry], CRS]:
    crs = CRS.from_user_input("OGC:CRS84")
    if isinstance(data, dict) and isinstance(data.get("crs"), dict):
        # Legacy (2008) GeoJSON may name its CRS; RFC 7946 files are CRS84 without saying so.
        crs_name = data["crs"].get("properties", {}).get("name")
        try:
            crs = CRS.from_user_input(crs_name)
        except (CRSError, TypeError) as exc:
            raise RegionError(
                f"region file {name} names an unknown CRS {crs_name!r}; "
                "reproject it to WGS84 lon/lat (EPSG:4326) and drop the 'crs' member"
            ) from exc
    if not isinstance(data, dict) or "type" not in data:
        raise RegionError(f"region file {name} is not GeoJSON (no 'type'); {_FILE_HINT}")
    kind = data["type"]
    if kind == "FeatureCollection":
        raw = [f.get("geometry") if isinstance(f, dict) else None for f in data.get("features", [])]
    elif kind == "Feature":
        raw = [data.get("geometry")]
    else:
        raw = [data]
    geoms: list[BaseGeometry] = []
    for item in raw:
        if item is None:
            continue
        try:
            geoms.append(shape(item))
        except Exception as exc:  # shapely raises several types for malformed coordinates
            raise RegionError(
                f"region file {name} has a malformed geometry ({first_line(exc)}); "
                "check the file in a GIS (e.g. QGIS)"
            ) from exc
    return geoms, crs


def _layer_geometries(path: Path, name: str, *, parquet: bool) -> tuple[list[BaseGeometry], CRS]:
    import geopandas as gpd

    try:
        if parquet:
            frame = gpd.read_parquet(path)
        else:
            import pyogrio

            layers = pyogrio.list_layers(path)
            if len(layers) > 1:
                names = ", ".join(str(row[0]) for row in layers)
                raise RegionError(
                    f"region file {name} holds {len(layers)} layers ({names}); "
                    "save the polygon layer alone in its own file"
                )
            frame = gpd.read_file(path)
    except RegionError:
        raise
    except Exception as exc:  # pyogrio/pyarrow raise many types for damaged files
        raise RegionError(
            f"cannot read region file {name} ({first_line(exc)}); "
            "check that it is a valid GeoPackage / GeoParquet polygon layer"
        ) from exc
    if frame.crs is None:
        raise RegionError(
            f"region file {name} has no CRS; set it (e.g. QGIS 'Assign projection' or "
            "GeoDataFrame.set_crs) and try again"
        )
    geoms = [g for g in frame.geometry.to_numpy() if g is not None]
    return geoms, CRS.from_user_input(frame.crs)


def _to_lonlat(geoms: list[BaseGeometry], crs: CRS, name: str) -> list[BaseGeometry]:
    lonlat = CRS.from_user_input("OGC:CRS84")
    if crs == lonlat or crs.equals(lonlat, ignore_axis_order=True):
        return geoms
    try:
        transformer = Transformer.from_crs(crs, lonlat, always_xy=True)
    except CRSError as exc:
        raise RegionError(
            f"cannot transform region {name} from its CRS {crs.name!r} to WGS84 lon/lat; "
            "reproject it to EPSG:4326"
        ) from exc
    out = []
    for geom in geoms:
        xmin, ymin, xmax, ymax = geom.bounds
        step = max(xmax - xmin, ymax - ymin) * _DENSIFY_FRACTION
        dense = shapely.segmentize(geom, step) if step > 0 else geom
        out.append(shapely.transform(dense, lambda xy: _transform_xy(transformer, xy)))
    return out


def _transform_xy(transformer: Transformer, xy: Any) -> Any:
    x, y = transformer.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def _build_region(name: str, geoms: list[BaseGeometry], crs: CRS) -> Region:
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        raise RegionError(f"region {name} is empty (no polygon in the layer); {_FILE_HINT}")
    for geom in geoms:
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise RegionError(
                f"region {name} holds a {geom.geom_type}, not polygons; "
                "give a polygon layer (buffer points or lines into polygons first)"
            )
    for geom in geoms:
        if not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            raise RegionError(f"region {name} has an invalid polygon ({reason}); {_FIX_HINT}")
    geoms = _to_lonlat(geoms, crs, name)
    merged = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
    xmin, ymin, xmax, ymax = merged.bounds
    if xmin < -180.0 - 1e-9 or xmax > 180.0 + 1e-9 or ymin < -90.0 - 1e-9 or ymax > 90.0 + 1e-9:
        raise RegionError(
            f"region {name} has coordinates outside longitude/latitude range "
            f"(bounds {xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g}); it is probably in a "
            "projected CRS: declare it in the file, or save it as EPSG:4326"
        )
    if not merged.is_valid:
        reason = shapely.is_valid_reason(merged)
        raise RegionError(f"region {name} is invalid after merging ({reason}); {_FIX_HINT}")
    area_m2, perimeter_m = _geodesic_area_perimeter(merged)
    if not area_m2 > 0.0:
        raise RegionError(f"region {name} has zero area; give polygons with an area")
    shapely.prepare(merged)
    return Region(name=name, geometry=merged, area_m2=area_m2, perimeter_m=perimeter_m)


def _geodesic_area_perimeter(geom: BaseGeometry) -> tuple[float, float]:
    geod = Geod(ellps="WGS84")
    parts = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
    area = 0.0
    perimeter = 0.0
    for part in parts:
        # Counter-clockwise shells make pyproj's signed area positive (holes subtract).
        a, p = geod.geometry_area_perimeter(orient(part, 1.0))
        area += a
        perimeter += p
    return float(area), float(perimeter)
