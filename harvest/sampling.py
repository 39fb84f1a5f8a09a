"""Hard-core point process over a region: random sequential adsorption (dart throwing).

Candidates are drawn uniformly over the region's area on the WGS84 ellipsoid and accepted in
order when no accepted (or pre-existing) point lies closer than the minimum geodesic distance.

How it stays exact and fast:

* Uniform by area: candidates are uniform in a box of the Lambert cylindrical equal-area
  projection (EPSG:6933, on the WGS84 ellipsoid). Such a box is exactly a longitude/latitude box, so
  keeping the candidates inside the region (tested in lon/lat) leaves them uniform over its area.
* Candidate neighbours: points are placed in Earth-centred (ECEF) coordinates on the ellipsoid.
  A chord is never longer than the geodesic between its ends, so every pair closer than ``d``
  along the geodesic is found by a KD-tree query of chord radius ``d``; each pair found is then
  measured exactly with the geodesic (pyproj.Geod, GeographicLib).
* Sequential semantics in batches: candidates are handled in vectorised batches, but inside a
  batch conflicts are resolved in candidate order, so the result is exactly that of throwing
  the darts one at a time; it does not depend on batch sizes.
* Reproducibility: the candidate stream is ``Generator.random((m, 2))`` of a
  ``numpy.random.default_rng(seed)`` (the same stream however it is cut into batches), and
  coordinates are rounded to 1e-7 degree (about 1 cm) right after they are drawn, so the
  minimum distance is checked on the very coordinates written to disk.

Capacity: random sequential packing of disks of diameter ``d`` jams at a covered fraction of
about 0.547. Near jamming the acceptance rate collapses, so requests are refused up front beyond
:data:`PRACTICAL_COVERAGE` (reached in a few seconds), and a run whose acceptance rate falls below
:data:`STALL_ACCEPTANCE` over :data:`STALL_WINDOW` candidates stops with an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Geod, Transformer
from scipy.spatial import cKDTree
from shapely.geometry.base import BaseGeometry

from harvest.errors import SamplingError

WGS84_A_M = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
COORD_DECIMALS = 7
# Covered fraction at which random sequential adsorption of disks jams (Feder 1980; ~0.547).
RSA_JAMMING_COVERAGE = 0.547
# Largest covered fraction accepted up front. Over CONUS at 5 km (~414,000 disk areas) the
# sampler reaches 0.40 in about 5 s, where about 2.8 % of candidates are still accepted; 0.45
# takes 12 s and jamming (0.547) would take hours (see docs/benchmarks.md).
PRACTICAL_COVERAGE = 0.40
# Stop when fewer than STALL_ACCEPTANCE of the last STALL_WINDOW candidates inside the region
# were accepted: over CONUS that happens near a covered fraction of 0.42, a few seconds later.
STALL_ACCEPTANCE = 0.015
STALL_WINDOW = 100_000
_MIN_BATCH = 512
_MAX_DRAWS_PER_BATCH = 2_000_000
# Refine the candidate support when the region fills less than this share of its bounding box.
_REFINE_BELOW_FILL = 0.5
_PAD_M = 1.0
_MAX_REFINE_DEPTH = 12
_MAX_SUPPORT_BOXES = 65_536
_EQUAL_AREA = "+proj=cea +lat_ts=30 +ellps=WGS84"  # EPSG:6933, EASE-Grid 2.0 global


@dataclass(frozen=True)
class Capacity:
    """How many ROIs a region holds at a spacing (estimates from RSA packing).

    Attributes:
        jamming_n: Expected count at RSA jamming (the sampler cannot go beyond it).
        practical_n: Largest count accepted up front (reached within seconds).
        excluded_inside: Existing points inside the region, already counted in the packing.
    """

    jamming_n: int
    practical_n: int
    excluded_inside: int


@dataclass(frozen=True)
class SampleResult:
    """Accepted points, in acceptance order.

    Attributes:
        lon_deg: Longitudes (degrees, rounded to 1e-7).
        lat_deg: Latitudes (degrees, rounded to 1e-7).
        candidates_drawn: Candidates drawn in the region's bounding box (for benchmarks).
    """

    lon_deg: npt.NDArray[np.float64]
    lat_deg: npt.NDArray[np.float64]
    candidates_drawn: int


def disk_area_m2(min_distance_m: float) -> float:
    """Area of the exclusion disk of diameter ``min_distance_m`` taken by one point."""
    return math.pi * min_distance_m**2 / 4.0


def estimate_capacity(
    area_m2: float,
    perimeter_m: float,
    min_distance_m: float,
    excluded_inside: int = 0,
) -> Capacity:
    """Estimate how many points at ``min_distance_m`` spacing fit in a region.

    Disks of diameter ``d`` centred on points inside the region may overhang its edge, so the
    packing area is the region grown by ``d / 2`` (Steiner formula: area + perimeter * d/2 +
    pi d^2/4). Existing points inside the region take one disk each.

    Args:
        area_m2: Geodesic area of the region.
        perimeter_m: Geodesic perimeter of the region.
        min_distance_m: Minimum distance between points.
        excluded_inside: Existing points inside the region.

    Returns:
        The :class:`Capacity`.
    """
    disk = disk_area_m2(min_distance_m)
    packing_area = area_m2 + perimeter_m * min_distance_m / 2.0 + disk
    slots = packing_area / disk
    jam = max(0, int(RSA_JAMMING_COVERAGE * slots) - excluded_inside)
    practical = max(0, int(PRACTICAL_COVERAGE * slots) - excluded_inside)
    return Capacity(jamming_n=jam, practical_n=practical, excluded_inside=excluded_inside)


def lonlat_to_ecef(
    lon_deg: npt.NDArray[np.float64], lat_deg: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Earth-centred coordinates (metres) of points on the WGS84 ellipsoid surface.

    Args:
        lon_deg: Longitudes in degrees.
        lat_deg: Geodetic latitudes in degrees.

    Returns:
        Array of shape (n, 3).
    """
    lam = np.radians(lon_deg)
    phi = np.radians(lat_deg)
    sin_phi = np.sin(phi)
    cos_phi = np.cos(phi)
    radius_n = WGS84_A_M / np.sqrt(1.0 - WGS84_E2 * sin_phi * sin_phi)
    out = np.empty((lam.size, 3), dtype=np.float64)
    out[:, 0] = radius_n * cos_phi * np.cos(lam)
    out[:, 1] = radius_n * cos_phi * np.sin(lam)
    out[:, 2] = radius_n * (1.0 - WGS84_E2) * sin_phi
    return out


@lru_cache(maxsize=1)
def _equal_area() -> tuple[Transformer, Transformer]:
    fwd = Transformer.from_pipeline(
        f"+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad +step {_EQUAL_AREA}"
    )
    inv = Transformer.from_pipeline(
        f"+proj=pipeline +step +inv {_EQUAL_AREA} +step +proj=unitconvert +xy_in=rad +xy_out=deg"
    )
    return fwd, inv


@lru_cache(maxsize=1)
def _geod() -> Geod:
    return Geod(ellps="WGS84")


def geodesic_distance_m(
    lon1: npt.ArrayLike, lat1: npt.ArrayLike, lon2: npt.ArrayLike, lat2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Geodesic distances on WGS84 between aligned arrays of points (vectorised)."""
    _, _, dist = _geod().inv(
        np.asarray(lon1, dtype=np.float64),
        np.asarray(lat1, dtype=np.float64),
        np.asarray(lon2, dtype=np.float64),
        np.asarray(lat2, dtype=np.float64),
    )
    return np.asarray(dist, dtype=np.float64)


class _Blockers:
    """Points new candidates must keep their distance to, with a KD-tree over their ECEF."""

    def __init__(self, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> None:
        self.lon = lon
        self.lat = lat
        self.xyz = lonlat_to_ecef(lon, lat)
        self.tree = cKDTree(self.xyz) if lon.size else None

    def extend(self, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> None:
        if lon.size == 0:
            return
        self.lon = np.concatenate([self.lon, lon])
        self.lat = np.concatenate([self.lat, lat])
        self.xyz = np.concatenate([self.xyz, lonlat_to_ecef(lon, lat)])
        self.tree = cKDTree(self.xyz)

    def blocked(
        self,
        lon: npt.NDArray[np.float64],
        lat: npt.NDArray[np.float64],
        xyz: npt.NDArray[np.float64],
        min_distance_m: float,
    ) -> npt.NDArray[np.bool_]:
        """Which candidates have a blocker closer than ``min_distance_m`` (geodesic)."""
        out = np.zeros(lon.size, dtype=bool)
        if self.tree is None or lon.size == 0:
            return out
        # The nearest point by chord settles almost every candidate at once.
        chord, nearest = self.tree.query(xyz, k=1, distance_upper_bound=min_distance_m)
        near = np.flatnonzero(np.isfinite(chord))
        if near.size == 0:
            return out
        j = nearest[near]
        close = geodesic_distance_m(lon[near], lat[near], self.lon[j], self.lat[j]) < min_distance_m
        out[near[close]] = True
        # Rare: the chord-nearest point is not geodesically closer than d; check all in range.
        for i in near[~close]:
            idx = np.asarray(self.tree.query_ball_point(xyz[i], min_distance_m), dtype=np.intp)
            if idx.size:
                dist = geodesic_distance_m(
                    np.full(idx.size, lon[i]),
                    np.full(idx.size, lat[i]),
                    self.lon[idx],
                    self.lat[idx],
                )
                out[i] = bool((dist < min_distance_m).any())
        return out


def _sequential_accept(count: int, pairs: npt.NDArray[np.intp], limit: int) -> npt.NDArray[np.intp]:
    """Indices accepted by processing ``count`` candidates in order with conflict ``pairs``.

    Candidate ``j`` is accepted unless an earlier accepted candidate conflicts with it; at most
    ``limit`` are accepted (later ones are never reached by the sequential process).
    """
    accepted = np.ones(count, dtype=bool)
    if pairs.size:
        pairs = np.sort(pairs, axis=1)
        order = np.lexsort((pairs[:, 0], pairs[:, 1]))
        first = pairs[order, 0].tolist()
        second = pairs[order, 1].tolist()
        acc = accepted.tolist()
        # Pairs sorted by their later member: when j is reached, every earlier one is final.
        k = 0
        total = len(second)
        while k < total:
            j = second[k]
            hit = False
            while k < total and second[k] == j:
                if acc[first[k]]:
                    hit = True
                k += 1
            if hit:
                acc[j] = False
        accepted = np.asarray(acc, dtype=bool)
    idx = np.flatnonzero(accepted)
    return idx[:limit]


@dataclass(frozen=True)
class _Support:
    """Where candidates are drawn: boxes of the equal-area plane covering the region.

    A box of a cylindrical equal-area projection is exactly a lon/lat box, and candidates
    uniform over a union of such boxes, kept when inside the region, are uniform over the
    region's area. One box (the bounding box) is the common case; scattered or ragged regions
    (a few small sites, world land) get a quadtree cover so that few candidates are wasted.
    """

    x0: npt.NDArray[np.float64]
    y0: npt.NDArray[np.float64]
    x1: npt.NDArray[np.float64]
    y1: npt.NDArray[np.float64]

    @property
    def area_m2(self) -> float:
        return float(((self.x1 - self.x0) * (self.y1 - self.y0)).sum())

    def draw(
        self, rng: np.random.Generator, m: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Draw ``m`` candidates uniform over the boxes; lon/lat rounded to 1e-7 degree."""
        if self.x0.size == 1:
            # The bounding box alone: two numbers per candidate (a stream tests reproduce).
            u = rng.random((m, 2))
            k = np.zeros(m, dtype=np.intp)
        else:
            u3 = rng.random((m, 3))
            cum = np.cumsum((self.x1 - self.x0) * (self.y1 - self.y0))
            k = np.minimum(np.searchsorted(cum, u3[:, 2] * cum[-1], side="right"), cum.size - 1)
            u = u3[:, :2]
        x = self.x0[k] + u[:, 0] * (self.x1[k] - self.x0[k])
        y = self.y0[k] + u[:, 1] * (self.y1[k] - self.y0[k])
        _, inv = _equal_area()
        lon, lat = inv.transform(x, y)
        return (
            np.round(np.asarray(lon, dtype=np.float64), COORD_DECIMALS).astype(np.float64),
            np.round(np.asarray(lat, dtype=np.float64), COORD_DECIMALS).astype(np.float64),
        )


def _candidate_support(geometry: BaseGeometry, area_m2: float) -> _Support:
    """Cover ``geometry`` with equal-area boxes: its bounding box, refined when mostly empty."""
    fwd, inv = _equal_area()
    lon0, lat0, lon1, lat1 = geometry.bounds
    bx0, by0 = fwd.transform(lon0, lat0)
    bx1, by1 = fwd.transform(lon1, lat1)
    # The projection's inverse is exact to ~1 mm only: pad so the region's own edges are drawn.
    bx0, by0, bx1, by1 = bx0 - _PAD_M, by0 - _PAD_M, bx1 + _PAD_M, by1 + _PAD_M
    one = _Support(*(np.array([v], dtype=np.float64) for v in (bx0, by0, bx1, by1)))
    if area_m2 <= 0 or area_m2 >= _REFINE_BELOW_FILL * one.area_m2:
        return one
    full = np.zeros(1, dtype=bool)
    x0, y0, x1, y1 = one.x0, one.y0, one.x1, one.y1
    for _ in range(_MAX_REFINE_DEPTH):
        part = ~full
        if full.size * 4 > _MAX_SUPPORT_BOXES or (x1 - x0) @ (y1 - y0) < 1.25 * area_m2:
            break
        # Split every box that is only partly inside the region into four.
        xm, ym = (x0[part] + x1[part]) / 2, (y0[part] + y1[part]) / 2
        cx0 = np.concatenate([x0[part], xm, x0[part], xm])
        cx1 = np.concatenate([xm, x1[part], xm, x1[part]])
        cy0 = np.concatenate([y0[part], y0[part], ym, ym])
        cy1 = np.concatenate([ym, ym, y1[part], y1[part]])
        glon0, glat0 = inv.transform(cx0, cy0)
        glon1, glat1 = inv.transform(cx1, cy1)
        boxes = shapely.box(glon0, glat0, glon1, glat1)
        hit = shapely.intersects(geometry, boxes)
        inside = shapely.contains(geometry, boxes)
        x0 = np.concatenate([x0[full], cx0[hit]])
        x1 = np.concatenate([x1[full], cx1[hit]])
        y0 = np.concatenate([y0[full], cy0[hit]])
        y1 = np.concatenate([y1[full], cy1[hit]])
        full = np.concatenate([np.ones(int(full.sum()), dtype=bool), inside[hit]])
    return _Support(x0, y0, x1, y1)


def sample_hardcore(
    geometry: BaseGeometry,
    n: int,
    min_distance_m: float,
    seed: int | np.random.Generator,
    *,
    area_m2: float,
    exclude_lon_deg: npt.NDArray[np.float64] | None = None,
    exclude_lat_deg: npt.NDArray[np.float64] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SampleResult:
    """Draw ``n`` points uniformly over ``geometry``, pairwise >= ``min_distance_m`` apart.

    Args:
        geometry: Polygon or MultiPolygon in lon/lat degrees (edges straight in lon/lat).
        n: Number of points to accept.
        min_distance_m: Minimum geodesic distance (WGS84) between any two points, and between a
            new point and any excluded point.
        seed: Seed of ``numpy.random.default_rng``, or a Generator.
        area_m2: Area of the region on the ellipsoid (sizes the batches).
        exclude_lon_deg: Longitudes of existing points to keep the distance to.
        exclude_lat_deg: Latitudes of existing points to keep the distance to.
        on_progress: Called with the number accepted so far after each batch.

    Returns:
        The accepted points in acceptance order.

    Raises:
        SamplingError: The acceptance rate collapsed before ``n`` points were placed.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if n <= 0:
        return SampleResult(np.empty(0), np.empty(0), 0)
    ex_lon = np.asarray(exclude_lon_deg if exclude_lon_deg is not None else [], dtype=np.float64)
    ex_lat = np.asarray(exclude_lat_deg if exclude_lat_deg is not None else [], dtype=np.float64)
    blockers = _Blockers(ex_lon, ex_lat)
    shapely.prepare(geometry)
    support = _candidate_support(geometry, area_m2)
    inside_fraction = min(1.0, max(area_m2 / support.area_m2, 1e-6)) if support.area_m2 > 0 else 1.0
    # Survivors of one batch conflict among themselves ~ s^2 * pi d^2 / (2 A); keep that small.
    cap_inside = max(_MIN_BATCH, int(0.2 * area_m2 / (math.pi * min_distance_m**2)))

    lons: list[npt.NDArray[np.float64]] = []
    lats: list[npt.NDArray[np.float64]] = []
    count = 0
    drawn = 0
    rate = 1.0
    window: list[tuple[int, int]] = []  # (candidates inside, accepted) of recent batches
    while count < n:
        remaining = n - count
        want_inside = min(cap_inside, max(_MIN_BATCH, int(1.05 * remaining / rate) + 16))
        m = min(_MAX_DRAWS_PER_BATCH, int(want_inside / inside_fraction) + 1)
        lon, lat = support.draw(rng, m)
        drawn += m
        inside = shapely.contains_xy(geometry, lon, lat)
        lon = lon[inside]
        lat = lat[inside]
        xyz = lonlat_to_ecef(lon, lat)
        free = np.flatnonzero(~blockers.blocked(lon, lat, xyz, min_distance_m))
        lon_f, lat_f, xyz_f = lon[free], lat[free], xyz[free]
        pairs = np.empty((0, 2), dtype=np.intp)
        if free.size > 1:
            pairs = cKDTree(xyz_f).query_pairs(min_distance_m, output_type="ndarray")
            if pairs.size:
                dist = geodesic_distance_m(
                    lon_f[pairs[:, 0]], lat_f[pairs[:, 0]], lon_f[pairs[:, 1]], lat_f[pairs[:, 1]]
                )
                pairs = pairs[dist < min_distance_m]
        keep = _sequential_accept(free.size, pairs, remaining)
        lons.append(lon_f[keep])
        lats.append(lat_f[keep])
        blockers.extend(lon_f[keep], lat_f[keep])
        count += keep.size
        if on_progress is not None:
            on_progress(count)
        if lon.size:
            rate = max(keep.size / lon.size, 1e-4) if keep.size < remaining else rate
        window.append((int(lon.size), int(keep.size)))
        if count < n and _stalled(window):
            raise SamplingError(
                f"only {count} of {n} ROIs fit at {min_distance_m / 1000:g} km spacing: the "
                f"region is nearly full (acceptance fell below {STALL_ACCEPTANCE:.1%}); "
                f"ask for at most about {count} ROIs or a smaller --min-distance-km"
            )
    lon_out = np.concatenate(lons) if lons else np.empty(0)
    lat_out = np.concatenate(lats) if lats else np.empty(0)
    return SampleResult(lon_deg=lon_out, lat_deg=lat_out, candidates_drawn=drawn)


def _stalled(window: list[tuple[int, int]]) -> bool:
    tried = 0
    accepted = 0
    for inside, acc in reversed(window):
        tried += inside
        accepted += acc
        if tried >= STALL_WINDOW:
            return accepted < STALL_ACCEPTANCE * tried
    return False
