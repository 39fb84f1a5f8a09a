"""Procedural landscapes: fields with crop rows, roads, buildings, water, forest and bare soil.

Pure numpy/scipy; no file I/O. A landscape is rendered on a square grid (1 m pixels by default)
as surface reflectance in nine spectral bands (the Sentinel-2 bands the world needs plus a 910 nm
band for VENuS B12) and a material map. Everything is drawn from one ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

#: Spectral bands of the landscape, named after the Sentinel-2 band they stand for. ``N910``
#: is a 910 nm band used only for VENuS B12.
LANDSCAPE_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "N910")
WAVELENGTH_NM: tuple[int, ...] = (490, 560, 665, 705, 740, 783, 842, 865, 910)


class Material(IntEnum):
    """Land cover materials of the landscape."""

    CROP = 0
    SENESCENT = 1
    GRASS = 2
    BARE = 3
    FOREST = 4
    WATER = 5
    ASPHALT = 6
    DIRT_ROAD = 7
    ROOF_BRIGHT = 8
    ROOF_RED = 9


# Typical surface reflectance spectra (B02, B03, B04, B05, B06, B07, B08, B8A, 910 nm): green
# vegetation has the red edge and NIR plateau, soils rise slowly, water falls to ~0 in the NIR.
SPECTRA: NDArray[np.float32] = np.array(
    [
        [0.030, 0.070, 0.035, 0.110, 0.300, 0.400, 0.440, 0.450, 0.450],  # crop canopy
        [0.060, 0.090, 0.110, 0.140, 0.190, 0.220, 0.250, 0.260, 0.270],  # senescent crop
        [0.040, 0.080, 0.060, 0.120, 0.250, 0.300, 0.330, 0.340, 0.340],  # grass
        [0.090, 0.130, 0.170, 0.200, 0.220, 0.240, 0.260, 0.270, 0.280],  # bare soil
        [0.020, 0.045, 0.025, 0.070, 0.200, 0.270, 0.300, 0.310, 0.310],  # forest
        [0.050, 0.060, 0.035, 0.025, 0.018, 0.015, 0.013, 0.012, 0.011],  # water
        [0.070, 0.080, 0.090, 0.095, 0.100, 0.105, 0.110, 0.110, 0.115],  # asphalt
        [0.140, 0.170, 0.200, 0.220, 0.230, 0.240, 0.250, 0.255, 0.260],  # dirt road
        [0.250, 0.270, 0.280, 0.290, 0.290, 0.300, 0.300, 0.300, 0.300],  # bright roof
        [0.080, 0.090, 0.200, 0.250, 0.270, 0.280, 0.300, 0.300, 0.310],  # red tile roof
    ],
    dtype=np.float32,
)

VEGETATION = (Material.CROP, Material.SENESCENT, Material.GRASS, Material.FOREST)
NOT_VEGETATED = (
    Material.BARE,
    Material.ASPHALT,
    Material.DIRT_ROAD,
    Material.ROOF_BRIGHT,
    Material.ROOF_RED,
)


@dataclass(frozen=True)
class LandscapeStyle:
    """How a site's landscape looks.

    Attributes:
        field_weights: relative frequency of CROP, SENESCENT, GRASS, BARE, FOREST fields.
        cardinal_rows: crop rows along the grid (US) or at any angle (Europe, Middle East).
        road_spacing_m: mean distance between paved roads (US section lines are ~1600 m).
        pivots: number of centre-pivot circles.
        river: whether a river with riparian forest crosses the site.
        pond: whether a pond is present.
        town: whether a small town (grid of houses) is present.
        farmsteads: number of building clusters.
        red_roofs: share of tile roofs among buildings.
    """

    field_weights: tuple[float, float, float, float, float]
    cardinal_rows: bool = True
    road_spacing_m: float = 800.0
    pivots: int = 0
    river: bool = False
    pond: bool = False
    town: bool = False
    farmsteads: int = 3
    red_roofs: float = 0.1


@dataclass(frozen=True)
class Landscape:
    """A rendered landscape.

    Attributes:
        reflectance: float32 [9, H, W] surface reflectance, bands as :data:`LANDSCAPE_BANDS`.
        material: uint8 [H, W] dominant :class:`Material` per pixel.
        gsd_m: pixel size in metres.
    """

    reflectance: NDArray[np.float32]
    material: NDArray[np.uint8]
    gsd_m: float

    def material_fractions(self) -> dict[str, float]:
        """Share of the area covered by each material (rounded to 4 decimals)."""
        counts = np.bincount(self.material.ravel(), minlength=len(Material))
        total = float(self.material.size)
        return {m.name.lower(): round(float(counts[m]) / total, 4) for m in Material}


def smooth_noise(
    shape: tuple[int, int], scale_px: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Zero-mean, unit-std smooth random field with correlation length ``scale_px``."""
    coarse_shape = (max(2, int(shape[0] / scale_px) + 3), max(2, int(shape[1] / scale_px) + 3))
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, 1.0, mode="wrap")
    zoom = (shape[0] / (coarse_shape[0] - 2), shape[1] / (coarse_shape[1] - 2))
    field = ndimage.zoom(coarse, zoom, order=1, mode="nearest")[: shape[0], : shape[1]]
    if field.shape != shape:  # zoom rounding: pad with edge values
        field = np.pad(
            field, ((0, shape[0] - field.shape[0]), (0, shape[1] - field.shape[1])), mode="edge"
        )
    std = float(field.std()) or 1.0
    return ((field - float(field.mean())) / std).astype(np.float32)


def _split_rect(
    rect: tuple[int, int, int, int], min_px: int, max_px: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """Recursively split a (r0, c0, r1, c1) rectangle into fields."""
    r0, c0, r1, c1 = rect
    h, w = r1 - r0, c1 - c0
    if max(h, w) <= max_px and (min(h, w) < 2 * min_px or rng.random() < 0.35):
        return [rect]
    if h < 2 * min_px and w < 2 * min_px:
        return [rect]
    split_rows = h >= w if (h >= 2 * min_px and w >= 2 * min_px) else h >= 2 * min_px
    if split_rows:
        cut = int(rng.integers(r0 + min_px, r1 - min_px + 1))
        return _split_rect((r0, c0, cut, c1), min_px, max_px, rng) + _split_rect(
            (cut, c0, r1, c1), min_px, max_px, rng
        )
    cut = int(rng.integers(c0 + min_px, c1 - min_px + 1))
    return _split_rect((r0, c0, r1, cut), min_px, max_px, rng) + _split_rect(
        (r0, cut, r1, c1), min_px, max_px, rng
    )


def _road_lines(size_px: int, spacing_px: float, rng: np.random.Generator) -> list[int]:
    n = max(1, int(round(size_px / spacing_px)))
    lines = []
    for k in range(n):
        centre = (k + 0.5) * size_px / n + rng.uniform(-0.15, 0.15) * size_px / n
        lines.append(int(np.clip(centre, 10, size_px - 10)))
    return lines


def render_landscape(
    size_px: int, gsd_m: float, style: LandscapeStyle, rng: np.random.Generator
) -> Landscape:
    """Render a square landscape.

    Args:
        size_px: side of the square in pixels.
        gsd_m: pixel size in metres (sizes of objects are given in metres).
        style: what the landscape contains.
        rng: source of randomness (the only one used).

    Returns:
        The rendered :class:`Landscape`.
    """
    n = size_px
    m = 1.0 / gsd_m  # pixels per metre
    # Each pixel mixes one material with bare soil (crop rows show the soil between them).
    mat_a = np.full((n, n), Material.BARE, dtype=np.uint8)
    frac = np.ones((n, n), dtype=np.float32)  # share of mat_a in the pixel
    gain = np.ones((n, n), dtype=np.float32)

    # Roads split the site into blocks; blocks split into fields.
    road_rows = _road_lines(n, style.road_spacing_m * m, rng)
    road_cols = _road_lines(n, style.road_spacing_m * m, rng)
    row_edges = [0, *road_rows, n]
    col_edges = [0, *road_cols, n]
    weights = np.asarray(style.field_weights, dtype=np.float64)
    weights = weights / weights.sum()
    field_mats = (
        Material.CROP,
        Material.SENESCENT,
        Material.GRASS,
        Material.BARE,
        Material.FOREST,
    )
    yy = np.arange(n, dtype=np.float32)[:, None]
    xx = np.arange(n, dtype=np.float32)[None, :]
    for i in range(len(row_edges) - 1):
        for j in range(len(col_edges) - 1):
            block = (row_edges[i], col_edges[j], row_edges[i + 1], col_edges[j + 1])
            for r0, c0, r1, c1 in _split_rect(block, int(110 * m), int(420 * m), rng):
                k = int(rng.choice(len(field_mats), p=weights))
                mat = field_mats[k]
                sl = (slice(r0, r1), slice(c0, c1))
                gain[sl] = rng.uniform(0.88, 1.12)
                if mat in (Material.CROP, Material.SENESCENT):
                    _crop_rows(mat, sl, xx, yy, mat_a, frac, style, m, rng)
                else:
                    mat_a[sl] = mat
                    frac[sl] = 1.0

    # Centre pivots: circles of crop with concentric rows.
    for _ in range(style.pivots):
        radius = rng.uniform(180, 300) * m
        cy, cx = rng.uniform(radius, n - radius, size=2) if n > 2 * radius else (n / 2, n / 2)
        r0, r1 = int(max(0, cy - radius)), int(min(n, cy + radius + 1))
        c0, c1 = int(max(0, cx - radius)), int(min(n, cx + radius + 1))
        sl = (slice(r0, r1), slice(c0, c1))
        d = np.hypot(yy[r0:r1] - cy, xx[:, c0:c1] - cx)
        inside = d < radius
        period = rng.uniform(8.0, 14.0) * m
        rows = 0.5 + 0.5 * np.sin(2 * np.pi * d / period)
        mat_a[sl][inside] = Material.CROP
        frac[sl][inside] = (0.55 + 0.4 * rows[inside]).astype(np.float32)
        gain[sl][inside] = rng.uniform(0.92, 1.08)

    forest_texture = ndimage.gaussian_filter(
        rng.standard_normal((n, n)).astype(np.float32), 2.5 * m
    )
    forest_texture /= float(forest_texture.std()) or 1.0

    if style.river:
        _river(mat_a, frac, xx, yy, n, m, rng)
    if style.pond:
        cy, cx = rng.uniform(0.2 * n, 0.8 * n, size=2)
        ry, rx = rng.uniform(40, 110, size=2) * m
        shape_noise = smooth_noise((n, n), 60 * m, rng) * 0.15
        pond = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0 + shape_noise
        mat_a[pond] = Material.WATER
        frac[pond] = 1.0

    # Roads on the block edges: paved along rows, dirt along columns (or the other way).
    paved_w = rng.uniform(7, 10) * m
    dirt_w = rng.uniform(4, 6) * m
    for r in road_rows:
        mat_a[int(r - paved_w / 2) : int(r + paved_w / 2) + 1, :] = Material.ASPHALT
    for c in road_cols:
        mat_a[:, int(c - dirt_w / 2) : int(c + dirt_w / 2) + 1] = Material.DIRT_ROAD
    frac[mat_a == Material.ASPHALT] = 1.0
    frac[mat_a == Material.DIRT_ROAD] = 1.0

    # Buildings: farmsteads at road crossings, and optionally a town.
    for _ in range(style.farmsteads):
        r = road_rows[int(rng.integers(len(road_rows)))]
        c = road_cols[int(rng.integers(len(road_cols)))]
        _farmstead(mat_a, frac, r, c, n, m, style, rng)
    if style.town:
        _town(mat_a, frac, n, m, style, rng)

    # Reflectance: mixture of two materials, field gain, smooth moisture, fine texture.
    moisture = 1.0 + 0.06 * smooth_noise((n, n), 150 * m, rng)
    texture = 1.0 + 0.025 * rng.standard_normal((n, n)).astype(np.float32)
    bright = (gain * moisture * texture).astype(np.float32)
    is_forest = mat_a == Material.FOREST
    bright[is_forest] *= 1.0 + 0.22 * forest_texture[is_forest]
    is_water = mat_a == Material.WATER
    bright[is_water] = 1.0 + 0.02 * forest_texture[is_water]
    np.clip(bright, 0.3, 1.8, out=bright)
    refl = np.empty((len(LANDSCAPE_BANDS), n, n), dtype=np.float32)
    for b in range(len(LANDSCAPE_BANDS)):
        soil = SPECTRA[Material.BARE, b]
        lut = SPECTRA[:, b] - soil
        band = np.take(lut, mat_a)
        band *= frac
        band += soil
        band *= bright
        refl[b] = band
    np.clip(refl, 0.002, 0.95, out=refl)
    dominant = np.where(frac >= 0.5, mat_a, np.uint8(Material.BARE)).astype(np.uint8)
    return Landscape(reflectance=refl, material=dominant, gsd_m=gsd_m)


def _crop_rows(
    mat: Material,
    sl: tuple[slice, slice],
    xx: NDArray[np.float32],
    yy: NDArray[np.float32],
    mat_a: NDArray[np.uint8],
    frac: NDArray[np.float32],
    style: LandscapeStyle,
    m: float,
    rng: np.random.Generator,
) -> None:
    angle = rng.choice([0.0, np.pi / 2]) if style.cardinal_rows else rng.uniform(0, np.pi)
    period = rng.uniform(3.0, 7.0) * m
    phase = rng.uniform(0, 2 * np.pi)
    cover = rng.uniform(0.45, 0.85)
    amp = rng.uniform(0.15, 0.4)
    proj = xx[:, sl[1]] * np.float32(np.cos(angle)) + yy[sl[0]] * np.float32(np.sin(angle))
    rows = np.sin(np.float32(2 * np.pi / period) * proj + np.float32(phase))
    mat_a[sl] = mat
    frac[sl] = np.clip(cover + amp * rows, 0.0, 1.0)


def _river(
    mat_a: NDArray[np.uint8],
    frac: NDArray[np.float32],
    xx: NDArray[np.float32],
    yy: NDArray[np.float32],
    n: int,
    m: float,
    rng: np.random.Generator,
) -> None:
    y0 = rng.uniform(0.25, 0.75) * n
    amp = rng.uniform(40, 120) * m
    wavelength = rng.uniform(500, 900) * m
    phase = rng.uniform(0, 2 * np.pi)
    width = rng.uniform(18, 35) * m
    centre = y0 + amp * np.sin(2 * np.pi * xx / wavelength + phase)
    dist = np.abs(yy - centre)
    riparian = (dist < width / 2 + rng.uniform(15, 30) * m) & (mat_a != Material.ASPHALT)
    mat_a[riparian] = Material.FOREST
    frac[riparian] = 1.0
    water = dist < width / 2
    mat_a[water] = Material.WATER
    frac[water] = 1.0


def _box(
    mat_a: NDArray[np.uint8],
    frac: NDArray[np.float32],
    r: float,
    c: float,
    h: float,
    w: float,
    mat: Material,
    n: int,
) -> None:
    r0, r1 = int(max(0, r)), int(min(n, r + h))
    c0, c1 = int(max(0, c)), int(min(n, c + w))
    if r1 > r0 and c1 > c0:
        mat_a[r0:r1, c0:c1] = mat
        frac[r0:r1, c0:c1] = 1.0


def _farmstead(
    mat_a: NDArray[np.uint8],
    frac: NDArray[np.float32],
    r: int,
    c: int,
    n: int,
    m: float,
    style: LandscapeStyle,
    rng: np.random.Generator,
) -> None:
    qr, qc = rng.choice([-1, 1], size=2)
    yard = rng.uniform(70, 120) * m
    r0 = r + (8 * m if qr > 0 else -8 * m - yard)
    c0 = c + (8 * m if qc > 0 else -8 * m - yard)
    _box(mat_a, frac, r0, c0, yard, yard, Material.GRASS, n)
    for _ in range(int(rng.integers(3, 8))):
        h, w = rng.uniform(8, 40, size=2) * m
        rr = r0 + rng.uniform(0, max(1.0, yard - h))
        cc = c0 + rng.uniform(0, max(1.0, yard - w))
        roof = Material.ROOF_RED if rng.random() < style.red_roofs else Material.ROOF_BRIGHT
        _box(mat_a, frac, rr, cc, h, w, roof, n)


def _town(
    mat_a: NDArray[np.uint8],
    frac: NDArray[np.float32],
    n: int,
    m: float,
    style: LandscapeStyle,
    rng: np.random.Generator,
) -> None:
    side = min(n * 0.3, 450 * m)
    r0, c0 = rng.uniform(0.05 * n, n - side - 0.05 * n, size=2)
    _box(mat_a, frac, r0, c0, side, side, Material.GRASS, n)
    street = 60 * m
    k = int(side // street)
    for i in range(k + 1):
        _box(mat_a, frac, r0 + i * street, c0, 7 * m, side, Material.ASPHALT, n)
        _box(mat_a, frac, r0, c0 + i * street, side, 7 * m, Material.ASPHALT, n)
    for i in range(k):
        for j in range(k):
            for q in range(2):
                h, w = rng.uniform(10, 16) * m, rng.uniform(10, 20) * m
                rr = r0 + i * street + 12 * m + q * 24 * m
                cc = c0 + j * street + rng.uniform(12, 30) * m
                roof = Material.ROOF_RED if rng.random() < style.red_roofs else Material.ROOF_BRIGHT
                _box(mat_a, frac, rr, cc, h, w, roof, n)
