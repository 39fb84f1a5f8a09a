"""UTM zones and MGRS tile ids, vectorised over many points.

A point's UTM zone follows the MGRS convention (the zone Sentinel-2 products of that place are
delivered in): 6-degree zones, widened zone 32 over south-west Norway (56-64 N, 3-12 E) and the
zones 31/33/35/37 over Svalbard (72-84 N). North of 84 N and south of 80 S, MGRS uses the Universal
Polar Stereographic projection instead: there ``utm_epsg`` is the UPS code (32661 north, 32761
south) and the tile id is the 3-character UPS square (e.g. ``"BAN"``).

The MGRS tile id is the 5-character 100 km square id, zone + latitude band + two letters, as in
Sentinel-2 tile names (``"18TWL"``); it uses the WGS84 ("AA") lettering scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from pyproj import Transformer

UPS_NORTH_EPSG = 32661
UPS_SOUTH_EPSG = 32761
MGRS_MIN_LAT_DEG = -80.0
MGRS_MAX_LAT_DEG = 84.0

_BAND_LETTERS = np.array(list("CDEFGHJKLMNPQRSTUVWX"))
# Column letters of the 100 km squares repeat every three zones; rows every two zones.
_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_SQUARE_M = 100_000.0


@dataclass(frozen=True)
class GridCells:
    """UTM zone and MGRS tile of a set of points (arrays aligned with the input points).

    Attributes:
        utm_epsg: EPSG code of the zone the point's chips are cut in (326xx/327xx, or UPS).
        mgrs_tile: MGRS 100 km square id ("18TWL"; 3 characters in the polar UPS areas).
    """

    utm_epsg: npt.NDArray[np.int32]
    mgrs_tile: npt.NDArray[np.str_]


def utm_zone_number(lon_deg: npt.ArrayLike, lat_deg: npt.ArrayLike) -> npt.NDArray[np.int32]:
    """UTM zone numbers (1-60) with the Norway and Svalbard exceptions that MGRS uses.

    Args:
        lon_deg: Longitudes in degrees (-180..180).
        lat_deg: Latitudes in degrees.

    Returns:
        Zone numbers, one per point.
    """
    lon = np.asarray(lon_deg, dtype=np.float64)
    lat = np.asarray(lat_deg, dtype=np.float64)
    # 180 E would compute as zone 61; MGRS keeps it in zone 60.
    zone = np.floor((lon + 180.0) / 6.0).astype(np.int32) + 1
    zone = np.clip(zone, 1, 60)
    norway = (lat >= 56.0) & (lat < 64.0) & (lon >= 3.0) & (lon < 12.0)
    zone = np.where(norway, 32, zone)
    svalbard = (lat >= 72.0) & (lat < 84.0)
    for lo, hi, z in ((0.0, 9.0, 31), (9.0, 21.0, 33), (21.0, 33.0, 35), (33.0, 42.0, 37)):
        zone = np.where(svalbard & (lon >= lo) & (lon < hi), z, zone)
    return zone.astype(np.int32)


def utm_epsg(lon_deg: npt.ArrayLike, lat_deg: npt.ArrayLike) -> npt.NDArray[np.int32]:
    """EPSG codes of the UTM zone (UPS near the poles) of each point.

    Args:
        lon_deg: Longitudes in degrees.
        lat_deg: Latitudes in degrees.

    Returns:
        326zz north of the equator, 327zz south of it, 32661/32761 in the polar UPS areas.
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    zone = utm_zone_number(lon_deg, lat)
    code = np.where(lat >= 0.0, 32600, 32700) + zone
    code = np.where(lat >= MGRS_MAX_LAT_DEG, UPS_NORTH_EPSG, code)
    code = np.where(lat < MGRS_MIN_LAT_DEG, UPS_SOUTH_EPSG, code)
    return code.astype(np.int32)


@lru_cache(maxsize=128)
def _utm_transformer(zone: int) -> Transformer:
    # A PROJ pipeline skips the CRS database lookup: creating 60 of these costs milliseconds.
    # MGRS rows in the south count from the 10,000 km false northing, hence +south there.
    return Transformer.from_pipeline(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=utm +zone={abs(zone)} +ellps=WGS84" + (" +south" if zone < 0 else "")
    )


def _utm_squares(
    lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64], zone: npt.NDArray[np.int32]
) -> npt.NDArray[np.str_]:
    easting = np.empty_like(lon)
    northing = np.empty_like(lat)
    signed_zone = np.where(lat >= 0.0, zone, -zone)
    for z in np.unique(signed_zone):
        sel = signed_zone == z
        easting[sel], northing[sel] = _utm_transformer(int(z)).transform(lon[sel], lat[sel])
    # MGRS works on coordinates truncated to the metre (as the reference GEOTRANS code does).
    e_idx = (np.floor(np.floor(easting) / _SQUARE_M)).astype(np.int64) - 1
    n_idx = (np.floor(np.floor(northing) / _SQUARE_M)).astype(np.int64)
    set_idx = (zone - 1) % 3
    columns = np.array([list(s) for s in _COLUMN_SETS])
    col = columns[set_idx, np.clip(e_idx, 0, 7)]
    row_letters = np.array(list(_ROW_LETTERS))
    row = row_letters[(n_idx + np.where(zone % 2 == 0, 5, 0)) % 20]
    band_idx = np.clip(np.floor((lat - MGRS_MIN_LAT_DEG) / 8.0).astype(np.int64), 0, 19)
    band = _BAND_LETTERS[band_idx]
    zone_txt = np.char.zfill(zone.astype(str), 2)
    out: npt.NDArray[np.str_] = np.char.add(np.char.add(np.char.add(zone_txt, band), col), row)
    return out


def mgrs_tile(lon_deg: npt.ArrayLike, lat_deg: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """MGRS 100 km square ids (Sentinel-2 style tile names) of each point.

    Args:
        lon_deg: Longitudes in degrees.
        lat_deg: Latitudes in degrees.

    Returns:
        Tile ids such as ``"18TWL"`` (``"BAN"``-style 3-character ids in the polar UPS areas).
    """
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
    out = np.empty(lon.shape, dtype="<U5")
    polar = (lat >= MGRS_MAX_LAT_DEG) | (lat < MGRS_MIN_LAT_DEG)
    utm = ~polar
    if utm.any():
        out[utm] = _utm_squares(lon[utm], lat[utm], utm_zone_number(lon[utm], lat[utm]))
    if polar.any():
        # Few points ever fall here (Antarctic interior, Arctic Ocean): the reference
        # implementation per point is fast enough and saves re-implementing the UPS lettering.
        import mgrs

        conv = mgrs.MGRS()
        for i in np.flatnonzero(polar):
            out[i] = conv.toMGRS(float(lat[i]), float(lon[i]), MGRSPrecision=0)[:3]
    return out


def grid_cells(lon_deg: npt.ArrayLike, lat_deg: npt.ArrayLike) -> GridCells:
    """UTM EPSG code and MGRS tile id of each point.

    Args:
        lon_deg: Longitudes in degrees.
        lat_deg: Latitudes in degrees.

    Returns:
        The :class:`GridCells` of the points.
    """
    return GridCells(utm_epsg=utm_epsg(lon_deg, lat_deg), mgrs_tile=mgrs_tile(lon_deg, lat_deg))
