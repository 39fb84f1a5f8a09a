"""GeoParquet helpers: the one table writer (:func:`write_geoparquet`) and ROI-table reads.

Every table harvest writes (ROIs, pairs, dropped ROIs, the manifest) goes through
:func:`write_geoparquet`: atomic, zstd, harvest's one temporary-name scheme. Writing goes
straight through pyarrow (WKB geometry plus the GeoParquet ``geo`` metadata), which
keeps ``harvest sample`` free of the geopandas import; reading user files goes through geopandas,
which understands every GeoParquet flavour.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harvest.diskio import replacing
from harvest.errors import InputFileError
from harvest.ids import check_ids

GEOPARQUET_VERSION = "1.1.0"
HARVEST_METADATA_KEY = b"harvest"


@dataclass(frozen=True)
class RoiPoints:
    """ROIs read from an existing table.

    Attributes:
        roi_id: Ids as stored.
        lon_deg: Longitudes in degrees (WGS84).
        lat_deg: Latitudes in degrees (WGS84).
    """

    roi_id: tuple[str, ...]
    lon_deg: npt.NDArray[np.float64]
    lat_deg: npt.NDArray[np.float64]


def write_geoparquet(
    path: Path,
    table: Any,
    *,
    geometry_types: Sequence[str] = (),
    bbox: Sequence[float] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> None:
    """The one writer of harvest's tables: (Geo)Parquet, zstd, atomically (temp file + rename).

    Args:
        path: Destination file; its folder is created if needed.
        table: A ``pyarrow.Table``. When ``geometry_types`` is given, its ``geometry`` column
            holds WKB in EPSG:4326 and the GeoParquet ``geo`` metadata is added; otherwise a
            plain Parquet file is written.
        geometry_types: GeoParquet geometry types of the ``geometry`` column (``Point``...).
        bbox: ``[xmin, ymin, xmax, ymax]`` of the geometries (optional).
        extra_metadata: JSON-serialisable dict stored under the ``harvest`` metadata key.

    Raises:
        DiskWriteError: the disk cannot take the write.
    """
    import pyarrow.parquet as pq

    meta: dict[bytes, bytes] = {}
    if geometry_types:
        from pyproj import CRS

        geo_column: dict[str, Any] = {
            "encoding": "WKB",
            "geometry_types": list(geometry_types),
            "crs": CRS.from_epsg(4326).to_json_dict(),
        }
        if bbox:
            geo_column["bbox"] = [float(v) for v in bbox]
        geo = {
            "version": GEOPARQUET_VERSION,
            "primary_column": "geometry",
            "columns": {"geometry": geo_column},
        }
        meta[b"geo"] = json.dumps(geo).encode()
    if extra_metadata is not None:
        meta[HARVEST_METADATA_KEY] = json.dumps(extra_metadata, sort_keys=True).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with replacing(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_points_geoparquet(
    path: Path,
    lon_deg: npt.NDArray[np.float64],
    lat_deg: npt.NDArray[np.float64],
    columns: dict[str, Any],
    *,
    extra_metadata: dict[str, Any] | None = None,
) -> None:
    """Write EPSG:4326 points and attribute columns as GeoParquet, atomically.

    Args:
        path: Destination file; its folder is created if needed.
        lon_deg: Longitudes (x of the WKB points).
        lat_deg: Latitudes (y of the WKB points).
        columns: Attribute columns (name -> array-like), written before ``geometry`` in order.
        extra_metadata: JSON-serialisable dict stored under the ``harvest`` schema metadata key.
    """
    import pyarrow as pa
    import shapely

    wkb = shapely.to_wkb(shapely.points(lon_deg, lat_deg))
    arrays: dict[str, Any] = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.dtype.kind in "US":
            values = values.tolist()
        arrays[name] = pa.array(values)
        if name == "roi_id":
            arrays["geometry"] = pa.array(wkb, type=pa.binary())
    if "geometry" not in arrays:
        arrays["geometry"] = pa.array(wkb, type=pa.binary())
    bbox = (
        [float(lon_deg.min()), float(lat_deg.min()), float(lon_deg.max()), float(lat_deg.max())]
        if lon_deg.size
        else None
    )
    write_geoparquet(
        path,
        pa.table(arrays),
        geometry_types=["Point"],
        bbox=bbox,
        extra_metadata=extra_metadata,
    )


def read_harvest_metadata(path: Path) -> dict[str, Any]:
    """The ``harvest`` metadata dict of a file written by :func:`write_points_geoparquet`."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(HARVEST_METADATA_KEY)
    return dict(json.loads(raw)) if raw else {}


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def require_input_file(path: Path, what: str, hint: str) -> None:
    """Raise a one-line :class:`InputFileError` unless ``path`` is an existing file.

    Args:
        path: The input file.
        what: What the file is, for the message ("ROI table").
        hint: What the user should give instead.
    """
    if not path.exists():
        raise InputFileError(f"{what} not found: {path}; check the path ({hint})")
    if path.is_dir():
        raise InputFileError(f"{what} path is a folder: {path}; {hint}")


def read_roi_points(path: Path) -> RoiPoints:
    """Read an existing ROI table (GeoParquet with ``roi_id`` and point geometry).

    Args:
        path: The GeoParquet file.

    Returns:
        The ROIs' ids and WGS84 coordinates.

    Raises:
        InputFileError: The file is missing, unreadable, not GeoParquet, or not a ROI table.
        UnsafeIdError: A ``roi_id`` is not a safe id (:mod:`harvest.ids`): it would become a
            folder name.
    """
    hint = "give a rois.parquet written by 'harvest sample'"
    require_input_file(path, "ROI table", hint)
    import geopandas as gpd

    try:
        frame = gpd.read_parquet(path)
    except Exception as exc:  # pyarrow/geopandas raise many types for non-GeoParquet files
        raise InputFileError(
            f"cannot read ROI table {path} as GeoParquet ({first_line(exc)}); {hint}"
        ) from exc
    if "roi_id" not in frame.columns:
        raise InputFileError(f"{path} is not a ROI table (no 'roi_id' column); {hint}")
    if frame.crs is None:
        raise InputFileError(
            f"ROI table {path} has no CRS; set it to EPSG:4326 (GeoDataFrame.set_crs) and retry"
        )
    geom = frame.geometry
    if len(frame) and (geom.isna().any() or not (geom.geom_type == "Point").all()):
        raise InputFileError(f"ROI table {path} must hold one point per row; {hint}")
    # Integer ids read as their digits; a missing (None, NaN) or other non-text id is refused.
    ids = [
        str(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else v
        for v in frame["roi_id"].tolist()
    ]
    check_ids(ids, field="roi_id", source=path)
    if not frame.crs.equals("EPSG:4326"):
        geom = geom.to_crs("EPSG:4326")
    lon = np.asarray(geom.x, dtype=np.float64)
    lat = np.asarray(geom.y, dtype=np.float64)
    # Out-of-range or non-finite coordinates otherwise surfaced much later as a GEOS or pyproj
    # traceback from the chip grid.
    bad = ~(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputFileError(
            f"ROI table {path} row {i + 1} (roi_id {ids[i]}) lies at lon {lon[i]:g}, lat "
            f"{lat[i]:g}, outside -180..180 / -90..90 ({int(bad.sum())} such rows); fix the "
            "coordinates (longitude first) or the table's CRS"
        )
    return RoiPoints(roi_id=tuple(str(v) for v in ids), lon_deg=lon, lat_deg=lat)
