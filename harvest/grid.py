"""UTM zones, MGRS tile ids and nested LR/HR chip grids, vectorised over many points.

A point's UTM zone follows the MGRS convention (the zone Sentinel-2 products of that place are
delivered in): 6-degree zones, widened zone 32 over south-west Norway (56-64 N, 3-12 E) and the
zones 31/33/35/37 over Svalbard (72-84 N). North of 84 N and south of 80 S, MGRS uses the Universal
Polar Stereographic projection instead: there ``utm_epsg`` is the UPS code (32661 north, 32761
south) and the tile id is the 3-character UPS square (e.g. ``"BAN"``).

The MGRS tile id is the 5-character 100 km square id, zone + latitude band + two letters, as in
Sentinel-2 tile names (``"18TWL"``); it uses the WGS84 ("AA") lettering scheme.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from affine import Affine
from pyproj import Transformer

from harvest.errors import ConfigError
from harvest.recipes import Recipe, Sensor

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


# --------------------------------------------------------------------------------------------
# Nested chip grids
# --------------------------------------------------------------------------------------------
#
# Snapping rule. Sentinel-2 tiles start at UTM coordinates that are multiples of 60 m, so the
# pixel edges of the 10 m, 20 m and 60 m bands lie on multiples of 10, 20 and 60 m. A chip's
# upper-left corner is therefore put on a multiple of the *snap step*: the least common multiple
# of the LR groups' pixel sizes (10 m for SEN2NAIP, 20 m for SEN2VENuS with its 20 m group). Every
# LR group's pixel edges then coincide with the sensor's, and all groups share the chip's edges.
# The HR grid starts at the same corner with its own pixel size; its chip_px * gsd_m equals the LR
# side (the recipe validates this), so both describe one footprint. Among the corners on the snap
# lattice, the one that puts the chip centre nearest to the ROI centre is chosen (ties round half
# to even, as numpy does). Coordinates are float64 products of small integers and pixel sizes
# such as 2.5, 5, 10, 12.5, 20, which float64 represents exactly: nested footprints agree to the
# bit. The ratio of two groups' pixel sizes need not be an integer (:func:`group_ratio`): with
# 12.5 m over 5 m (5/2), every 2 coarse pixels hold exactly 5 fine ones, and a chip of 64 px at
# 12.5 m is one of 160 px at 5 m.

FOOTPRINT_TOLERANCE_M = 0.01
"""Nested chip footprints must agree to the centimetre."""
_SNAP_DENOMINATOR = 1000  # pixel sizes are taken as rational numbers with millimetre precision


@dataclass(frozen=True)
class ChipGrid:
    """The pixel grid of one chip: a north-up raster in a projected CRS.

    Attributes:
        epsg: EPSG code of the CRS (UTM zone, or UPS near the poles).
        transform: Pixel-to-CRS affine (``x = a*col + b*row + c``, ``y = d*col + e*row + f``),
            with ``a = gsd_m``, ``e = -gsd_m`` and ``(c, f)`` the upper-left corner.
        width: Columns.
        height: Rows.
        gsd_m: Pixel size in metres.
    """

    epsg: int
    transform: Affine
    width: int
    height: int
    gsd_m: float

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS metres."""
        left, top = self.transform.c, self.transform.f
        return (left, top - self.height * self.gsd_m, left + self.width * self.gsd_m, top)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, the array shape of one band."""
        return (self.height, self.width)

    @property
    def transform_tuple(self) -> tuple[float, float, float, float, float, float]:
        """The transform as the 6-tuple ``(a, b, c, d, e, f)`` (STAC ``proj:transform`` order)."""
        t = self.transform
        return (t.a, t.b, t.c, t.d, t.e, t.f)


@dataclass(frozen=True)
class ChipLayout:
    """Pixel sizes and chip sides of the nested groups, independent of any place.

    Attributes:
        lr: ``(gsd_m, chip_px)`` of the LR sensor's primary group.
        hr: ``(gsd_m, chip_px)`` of the HR sensor's primary group.
        lr_extra: ``(gsd_m, chip_px)`` of further LR groups (e.g. Sentinel-2 20 m bands).
        hr_extra: ``(gsd_m, chip_px)`` of further HR groups.
    """

    lr: tuple[float, int]
    hr: tuple[float, int]
    lr_extra: tuple[tuple[float, int], ...] = ()
    hr_extra: tuple[tuple[float, int], ...] = ()

    def __post_init__(self) -> None:
        side = self.side_m
        for gsd, px in (self.lr, self.hr, *self.lr_extra, *self.hr_extra):
            if not (gsd > 0 and px > 0):
                raise ConfigError(f"chip group ({gsd} m, {px} px): both must be positive")
            if abs(gsd * px - side) > FOOTPRINT_TOLERANCE_M:
                raise ConfigError(
                    f"a chip of {px} px at {gsd:g} m is {gsd * px:g} m wide but the LR chip is "
                    f"{side:g} m: set chip_px so that chip_px * gsd_m is the same for every group"
                )

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> ChipLayout:
        """The layout of a recipe's LR and HR band groups (primary groups first)."""

        def sizes(sensor: Sensor) -> list[tuple[float, int]]:
            return [(g.gsd_m, g.chip_px) for g in sensor.groups]

        lr, hr = sizes(recipe.lr), sizes(recipe.hr)
        return cls(lr=lr[0], hr=hr[0], lr_extra=tuple(lr[1:]), hr_extra=tuple(hr[1:]))

    @property
    def side_m(self) -> float:
        """Chip side in metres (the LR group's)."""
        return self.lr[0] * self.lr[1]

    @property
    def snap_m(self) -> float:
        """Snap step of chip corners: least common multiple of the LR groups' pixel sizes."""
        step = Fraction(0)
        for gsd, _ in (self.lr, *self.lr_extra):
            f = Fraction(gsd).limit_denominator(_SNAP_DENOMINATOR)
            if step == 0:
                step = f
            else:
                num = math.lcm(step.numerator, f.numerator)
                step = Fraction(num, math.gcd(step.denominator, f.denominator))
        return float(step)


def group_ratio(coarse_gsd_m: float, fine_gsd_m: float) -> Fraction:
    """The exact ratio of two pixel sizes, as a fraction in lowest terms.

    Pixel sizes are taken as whole millimetres (recipes validate that), so the ratio is exact:
    ``group_ratio(10, 2.5) == 4``, ``group_ratio(12.5, 5) == Fraction(5, 2)``. With ``p / q``,
    ``q`` coarse pixels hold exactly ``p`` fine pixels per axis.

    Raises:
        ConfigError: a pixel size is not positive.
    """
    if not (coarse_gsd_m > 0 and fine_gsd_m > 0):
        raise ConfigError(f"pixel sizes {coarse_gsd_m} and {fine_gsd_m} m must be positive")
    return Fraction(round(coarse_gsd_m * _SNAP_DENOMINATOR), round(fine_gsd_m * _SNAP_DENOMINATOR))


@dataclass(frozen=True)
class NestedChips:
    """The chip grids of one ROI: every band group of the LR and HR sensors, one footprint.

    Attributes:
        chip_id: Stable id from the CRS and the snapped corner (see :func:`chip_id`).
        lr: Grid of the LR sensor's primary group.
        hr: Grid of the HR sensor's primary group, nested exactly in the LR one.
        lr_extra: Grids of further LR groups (in the recipe's order).
        hr_extra: Grids of further HR groups (in the recipe's order).
    """

    chip_id: str
    lr: ChipGrid
    hr: ChipGrid
    lr_extra: tuple[ChipGrid, ...] = ()
    hr_extra: tuple[ChipGrid, ...] = ()

    @property
    def epsg(self) -> int:
        """EPSG code shared by every group."""
        return self.lr.epsg

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the shared footprint."""
        return self.lr.bounds

    def of_role(self, role: str) -> tuple[ChipGrid, ...]:
        """Grids of the ``"lr"`` or ``"hr"`` sensor's groups, primary first (recipe order).

        Raises:
            ValueError: another role (guide sensors have no chip grid yet).
        """
        if role == "lr":
            return (self.lr, *self.lr_extra)
        if role == "hr":
            return (self.hr, *self.hr_extra)
        raise ValueError(f"no chip grids for role {role!r}: lr or hr")


@dataclass(frozen=True)
class ChipGridArray:
    """Nested chip grids of many ROIs, as aligned arrays (the vectorised form).

    Attributes:
        layout: Group sizes shared by every chip.
        epsg: EPSG code per ROI.
        left_m: Upper-left corner easting per ROI (a multiple of ``layout.snap_m``).
        top_m: Upper-left corner northing per ROI (a multiple of ``layout.snap_m``).
    """

    layout: ChipLayout
    epsg: npt.NDArray[np.int32]
    left_m: npt.NDArray[np.float64]
    top_m: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.epsg.shape[0])

    @property
    def chip_ids(self) -> npt.NDArray[np.str_]:
        """Stable chip ids, one per ROI."""
        return np.array(
            [
                chip_id(int(e), float(x), float(y))
                for e, x, y in zip(self.epsg, self.left_m, self.top_m, strict=True)
            ]
        )

    def __getitem__(self, i: int) -> NestedChips:
        epsg = int(self.epsg[i])
        left, top = float(self.left_m[i]), float(self.top_m[i])

        def grid(gsd: float, px: int) -> ChipGrid:
            return ChipGrid(epsg, Affine(gsd, 0.0, left, 0.0, -gsd, top), px, px, gsd)

        lay = self.layout
        return NestedChips(
            chip_id=chip_id(epsg, left, top),
            lr=grid(*lay.lr),
            hr=grid(*lay.hr),
            lr_extra=tuple(grid(*g) for g in lay.lr_extra),
            hr_extra=tuple(grid(*g) for g in lay.hr_extra),
        )


def _format_m(v: float) -> str:
    # Whole metres print without decimals; otherwise centimetres (snap steps are >= 1 cm).
    cm = round(v * 100)
    return str(cm // 100) if cm % 100 == 0 else f"{cm / 100:.2f}"


def chip_id(epsg: int, left_m: float, top_m: float) -> str:
    """Stable id of a chip: its CRS and snapped upper-left corner, e.g. ``"32618_583420_4507880"``.

    The id depends only on where the chip is (not on ROI order, worker or run), so the same
    place gets the same id in every run and two ROIs snapped onto one chip share it.
    """
    return f"{epsg}_{_format_m(left_m)}_{_format_m(top_m)}"


@lru_cache(maxsize=64)
def _projector(epsg: int) -> Transformer:
    if 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760:
        zone = epsg % 100
        return _utm_transformer(zone if epsg < 32700 else -zone)
    return Transformer.from_crs(4326, epsg, always_xy=True)


def lonlat_transformer(epsg: int) -> Transformer:
    """A transformer from ``epsg`` to lon/lat (``always_xy``), built once per CRS and thread.

    Building one costs about 0.6 ms, twice per chip; one per thread because a worker of an
    external cluster may run several chips at once in threads.
    """
    return _cached_lonlat(epsg, threading.get_ident())


@lru_cache(maxsize=64)
def _cached_lonlat(epsg: int, thread_id: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)


def _as_layout(recipe_or_layout: Recipe | ChipLayout) -> ChipLayout:
    if isinstance(recipe_or_layout, ChipLayout):
        return recipe_or_layout
    return ChipLayout.from_recipe(recipe_or_layout)


def chip_grids_many(
    lon_deg: npt.ArrayLike,
    lat_deg: npt.ArrayLike,
    recipe: Recipe | ChipLayout,
    epsg: int | npt.ArrayLike | None = None,
) -> ChipGridArray:
    """Nested chip grids centred on many ROI centres (vectorised).

    Args:
        lon_deg: ROI centre longitudes in degrees.
        lat_deg: ROI centre latitudes in degrees.
        recipe: A :class:`~harvest.recipes.Recipe` or a :class:`ChipLayout`.
        epsg: CRS per ROI (or one for all); default the MGRS UTM zone of each centre
            (:func:`utm_epsg`), the zone Sentinel-2 delivers that place in.

    Returns:
        The corners of every ROI's chip on the snap lattice (see the module notes above).

    Raises:
        ConfigError: the layout's groups do not cover one footprint.
    """
    layout = _as_layout(recipe)
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
    if lon.shape != lat.shape or lon.ndim != 1:
        raise ValueError(f"lon and lat must be 1-D of one length, got {lon.shape} and {lat.shape}")
    codes = utm_epsg(lon, lat) if epsg is None else np.broadcast_to(np.asarray(epsg), lon.shape)
    codes = codes.astype(np.int32)
    x = np.empty_like(lon)
    y = np.empty_like(lat)
    for code in np.unique(codes):
        sel = codes == code
        x[sel], y[sel] = _projector(int(code)).transform(lon[sel], lat[sel])
    step = layout.snap_m
    half = layout.side_m / 2.0
    # Integer lattice indices first, then one multiplication: exact for the usual pixel sizes.
    left = np.rint((x - half) / step) * step
    top = np.rint((y + half) / step) * step
    return ChipGridArray(layout=layout, epsg=codes, left_m=left, top_m=top)


def chip_grids(
    lon_deg: float, lat_deg: float, recipe: Recipe | ChipLayout, epsg: int | None = None
) -> NestedChips:
    """Nested chip grids of one ROI centred near ``(lon_deg, lat_deg)``.

    Args:
        lon_deg: ROI centre longitude in degrees.
        lat_deg: ROI centre latitude in degrees.
        recipe: A :class:`~harvest.recipes.Recipe` or a :class:`ChipLayout`.
        epsg: CRS to cut the chip in; default the MGRS UTM zone of the centre.

    Returns:
        The LR, extra LR and HR chip grids (see :func:`chip_grids_many`).
    """
    return chip_grids_many([lon_deg], [lat_deg], recipe, epsg)[0]


@dataclass(frozen=True)
class SourceWindow:
    """Where a chip lies in a source raster, in the source's pixel coordinates.

    Attributes:
        col_off: Exact (fractional) column of the chip's left edge.
        row_off: Exact (fractional) row of the chip's top edge.
        width: Exact width of the chip in source pixels.
        height: Exact height of the chip in source pixels.
        read_col_off: First column of the integer read window (margin included, clipped).
        read_row_off: First row of the integer read window.
        read_width: Columns to read.
        read_height: Rows to read.
        inside: Whether the chip (without margin) lies wholly inside the source raster.
    """

    col_off: float
    row_off: float
    width: float
    height: float
    read_col_off: int
    read_row_off: int
    read_width: int
    read_height: int
    inside: bool

    @property
    def empty(self) -> bool:
        """Whether the read window holds no pixel (the chip misses the raster)."""
        return self.read_width <= 0 or self.read_height <= 0


# Pixel coordinates within this of an integer are taken as that integer (float noise only).
_WINDOW_EPS_PX = 1e-6


def source_window(
    chip: ChipGrid,
    src_transform: Affine | tuple[float, ...],
    src_shape: tuple[int, int],
    margin_px: int = 1,
) -> SourceWindow:
    """The window of a source raster (same CRS) that covers a chip.

    Args:
        chip: The chip grid.
        src_transform: Source pixel-to-CRS affine, as ``affine.Affine`` or the 6-tuple
            ``(a, b, c, d, e, f)`` (rasterio / STAC ``proj:transform`` order, not GDAL's).
        src_shape: Source ``(height, width)`` in pixels.
        margin_px: Extra source pixels read on every side, for resampling kernels.

    Returns:
        The exact fractional window and the integer read window (floor/ceil of the exact one,
        widened by the margin, clipped to the raster).

    Raises:
        ValueError: the transform is not invertible or the margin is negative.
    """
    if margin_px < 0:
        raise ValueError(f"margin_px must be >= 0, got {margin_px}")
    t = src_transform if isinstance(src_transform, Affine) else Affine(*src_transform[:6])
    if abs(t.determinant) == 0.0:
        raise ValueError(f"source transform {tuple(t)[:6]} is not invertible")
    left, bottom, right, top = chip.bounds
    inv = ~t
    corners = [inv @ (x, y) for x in (left, right) for y in (bottom, top)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    c0, c1, r0, r1 = min(cols), max(cols), min(rows), max(rows)
    height, width = src_shape
    rc0 = max(math.floor(c0 + _WINDOW_EPS_PX) - margin_px, 0)
    rr0 = max(math.floor(r0 + _WINDOW_EPS_PX) - margin_px, 0)
    rc1 = min(math.ceil(c1 - _WINDOW_EPS_PX) + margin_px, width)
    rr1 = min(math.ceil(r1 - _WINDOW_EPS_PX) + margin_px, height)
    eps = _WINDOW_EPS_PX
    inside = c0 >= -eps and r0 >= -eps and c1 <= width + eps and r1 <= height + eps
    return SourceWindow(
        col_off=c0,
        row_off=r0,
        width=c1 - c0,
        height=r1 - r0,
        read_col_off=rc0,
        read_row_off=rr0,
        read_width=max(rc1 - rc0, 0),
        read_height=max(rr1 - rr0, 0),
        inside=inside,
    )
