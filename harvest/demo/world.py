"""Build the demo world: render every site and scene, write COGs, STAC, geoparquet and truth.

``run_demo_world`` is idempotent: a folder that already holds a complete world of the same seed,
size and format (the marker file, written last, says so) is returned as is. A build happens in a
sibling temporary folder that replaces the target only when complete, so a killed build never
leaves a half world behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from harvest import __version__
from harvest.demo import sensors
from harvest.demo.landscape import LANDSCAPE_BANDS, Landscape, Material, render_landscape
from harvest.demo.spec import (
    NAIP,
    S1,
    S2,
    VENUS,
    SceneSpec,
    SiteSpec,
    WorldSpec,
    default_spec,
    derive_int,
    derive_rng,
)
from harvest.demo.stac import (
    EXT_EO,
    EXT_PROJ,
    EXT_RASTER,
    EXT_SAR,
    EXT_SAT,
    EXT_VIEW,
    VENUS_BANDS,
    RasterAsset,
    build_catalog,
    make_item,
    s2_eo_band,
    write_geoparquet,
)
from harvest.demo.truth import (
    TRUTH_SCHEMA_VERSION,
    BandTruth,
    BoundsM,
    CloudTruth,
    NaipSceneTruth,
    PairTruth,
    S1SceneTruth,
    S2SceneTruth,
    SiteTruth,
    TransferTruth,
    VenusSceneTruth,
    WorldTruth,
    dump_truth,
    load_truth,
)
from harvest.diskio import temp_name
from harvest.errors import DemoWorldError
from harvest.progress import ProgressBar

log = logging.getLogger(__name__)

#: Bump when the rendering changes: a cached world of another format is rebuilt.
WORLD_FORMAT = 4
MARKER = ".harvest-demo-world.json"
HR_GSD_M = 2.5
CHIP_HALF_M = 605.0  # half of a 121 px x 10 m chip
CHIP_MARGIN_M = 20.0

S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B05", "B06", "B07", "B8A")
S2_SIGMA_BASE = {"B02": 2.9, "B03": 2.9, "B04": 3.0, "B08": 3.4}
S2_SIGMA20_BASE = {"B05": 5.8, "B06": 5.9, "B07": 6.0, "B8A": 6.2}
CLOUD_REFL = {
    "B02": 0.42,
    "B03": 0.44,
    "B04": 0.46,
    "B05": 0.47,
    "B06": 0.48,
    "B07": 0.49,
    "B08": 0.50,
    "B8A": 0.50,
    "N910": 0.50,
}
SHADOW_DARKENING = 0.6
#: S2 shifts beyond this many metres (1 LR px, QA's default limit) are a pair's "shift" issue;
#: the world draws shifts of at most 6 m, or 13-20 m for a large-shift scene, never between.
LARGE_SHIFT_M = 10.0
# NAIP bands in file order and the landscape band each one images.
NAIP_BANDS = (("red", "B04"), ("green", "B03"), ("blue", "B02"), ("nir", "B08"))
NAIP_GAMMA_MEAN = np.array([0.33213, 0.32609, 0.35347, 0.45706])  # R, G, B, NIR (SEN2NAIP)
NAIP_GAMMA_COV = np.array(
    [
        [0.0059202, 0.00507745, 0.00445213, 0.00364854],
        [0.00507745, 0.00494151, 0.00445722, 0.00381408],
        [0.00445213, 0.00445722, 0.00485922, 0.00329423],
        [0.00364854, 0.00381408, 0.00329423, 0.01427048],
    ]
)
# VENuS band -> landscape band it images (SEN2VENuS band mapping).
VENUS_SOURCE = {
    "B3": "B02",
    "B4": "B03",
    "B7": "B04",
    "B8": "B05",
    "B9": "B06",
    "B10": "B07",
    "B11": "B8A",
    "B12": "N910",
}
# Mean sigma0 (dB) per material: (VV, VH).
S1_SIGMA0_DB = {
    Material.CROP: (-10.5, -16.5),
    Material.SENESCENT: (-12.0, -19.0),
    Material.GRASS: (-12.5, -19.5),
    Material.BARE: (-14.0, -23.0),
    Material.FOREST: (-7.5, -13.0),
    Material.WATER: (-22.0, -28.0),
    Material.ASPHALT: (-18.0, -26.0),
    Material.DIRT_ROAD: (-15.0, -24.0),
    Material.ROOF_BRIGHT: (0.0, -8.0),
    Material.ROOF_RED: (-2.0, -9.0),
}
MOIST_MATERIALS = (Material.CROP, Material.SENESCENT, Material.GRASS, Material.BARE)

CONVENTIONS = {
    "grid": "North-up UTM grids; site origins on multiples of 60 m, so the 1 m, 2.5 m, 5 m, "
    "10 m and 20 m grids share pixel edges. Pixel (r, c) centre: x0 + (c + 0.5) * gsd, "
    "y0 - (r + 0.5) * gsd.",
    "hr_grid": "HR = 2.5 m. NAIP (1 m) to HR: exact area average (each HR pixel averages the "
    "2.5 x 2.5 m it covers, fractional pixels weighted; GDAL warp 'average' in float gives the "
    "same values), applied to DN / 255.",
    "s2_10m": "rho_hr = (naip_hr_dn / 255) ** (1 / gamma_band) (transfer kind 'gamma'), or the "
    "landscape reflectance at 2.5 m (kind 'identity'); blur = scipy.ndimage.gaussian_filter("
    "rho_hr, psf_sigma_hr_px, mode='reflect', truncate=4); LR = bilinear sample of blur at "
    "HR index (i + 0.5) * 4 - 0.5 (rows) / (j + 0.5) * 4 - 0.5 (cols), minus the shift (no "
    "antialias); + N(0, noise_std); then clouds: LR = (1 - a) * LR * (1 - 0.6 * s) + a * "
    "cloud_refl; DN = clip(round(LR * 10000) + dn_offset, 1, 65535); nodata DN = 0.",
    "s2_20m": "As s2_10m with factor 8 and the landscape reflectance at 2.5 m (identity).",
    "shift": "shift_m = (dx east, dy north) metres: LR(p) = blur(HR)(p - shift); LR content is "
    "displaced by +shift; move LR by -shift to register it onto the HR.",
    "naip": "DN = clip(round(255 * rho_1m ** gamma_band + N(0, dn_noise_std)), 1, 255), bands "
    "R, G, B, NIR from landscape B04, B03, B02, B08. S2 scenes are rendered from the NAIP "
    "before blank patches are written.",
    "venus": "rho_v = gain * rho_landscape + offset, blurred (sigma in 2.5 m px), bilinear "
    "factor 2 to 5 m, shifted, + noise; stored int16 round(rho * 1000), nodata -10000. "
    "CLM bits: 1 cloud or shadow, 2 cloud, 32 shadow. EDG: 1 outside swath.",
    "s1": "sigma0 linear = area mean over 10 m of 10 ** (dB_material / 10) (moisture offset "
    "added for soils and crops), times Gamma(enl, 1 / enl) speckle; stored 10 * log10, float32.",
    "scl": "SCL at 20 m: 4 vegetation, 5 not vegetated, 6 water (majority of materials); a 20 m "
    "pixel with any cloud opacity > 0 at 10 m is 9 (mean opacity >= 0.5), 8 (>= 0.15) or 10; "
    "shadow 3; nodata 0.",
    "stac_geoparquet_hrefs": "Asset hrefs in stac-geoparquet/*.parquet are relative to the "
    "stac-geoparquet folder; in the static catalog, relative to each item's JSON.",
    "region": "region.geojson holds one polygon per site: the area where an ROI centre can lie "
    "so that its 1210 m chip is inside every scene of the site. sites.geojson holds the full "
    "footprints.",
}
PAIR_RULES = {
    "sen2naip": "S2 and NAIP of the same site with |dt| <= 24 h (also <= 1 calendar day; the "
    "world has no case where the two differ).",
    "sen2venus": "S2 and VENuS of the same site on the same UTC date.",
    "sen12": "S1 and S2 of the same site in the same meteorological season (DJF, MAM, JJA, SON; "
    "December counts with the next year) with S2 eo:cloud_cover <= 1 %. lr = S1, hr = S2.",
}


@dataclass(frozen=True)
class DemoWorldSummary:
    """What ``run_demo_world`` did."""

    out_dir: Path
    seed: int
    reused: bool
    n_sites: int
    n_items: dict[str, int]
    bytes_on_disk: int
    seconds: float


@dataclass(frozen=True)
class SiteGrid:
    """The site's square on its UTM grid."""

    epsg: int
    x0: float
    y0: float  # top edge
    size_m: float

    @property
    def bounds(self) -> BoundsM:
        """Footprint in UTM metres."""
        return BoundsM(
            xmin=self.x0, ymin=self.y0 - self.size_m, xmax=self.x0 + self.size_m, ymax=self.y0
        )

    def transform(self, gsd_m: float) -> tuple[float, float, float, float, float, float]:
        """Affine (a, b, c, d, e, f) of the site at ``gsd_m``."""
        return (gsd_m, 0.0, self.x0, 0.0, -gsd_m, self.y0)

    def px(self, gsd_m: float) -> int:
        """Side in pixels at ``gsd_m``."""
        return int(round(self.size_m / gsd_m))

    def centre(self) -> tuple[float, float]:
        """Centre (x, y)."""
        return self.x0 + self.size_m / 2, self.y0 - self.size_m / 2


# ---------------------------------------------------------------------------------------------
# geometry helpers


def site_grid(site: SiteSpec, size_m: float) -> SiteGrid:
    """Snap the site square on 60 m multiples of its UTM zone."""
    from pyproj import Transformer

    tr = Transformer.from_crs(4326, site.utm_epsg, always_xy=True)
    xc, yc = tr.transform(site.lon, site.lat)
    x0 = math.floor((xc - size_m / 2) / 60.0) * 60.0
    y0 = math.floor((yc + size_m / 2) / 60.0) * 60.0
    return SiteGrid(epsg=site.utm_epsg, x0=x0, y0=y0, size_m=size_m)


def _lonlat_polygon(epsg: int, b: BoundsM) -> tuple[dict[str, Any], list[float]]:
    from pyproj import Transformer

    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    ring_xy = []
    steps = 4
    corners = [(b.xmin, b.ymin), (b.xmax, b.ymin), (b.xmax, b.ymax), (b.xmin, b.ymax)]
    for k in range(4):
        (xa, ya), (xb, yb) = corners[k], corners[(k + 1) % 4]
        for t in range(steps):
            ring_xy.append((xa + (xb - xa) * t / steps, ya + (yb - ya) * t / steps))
    ring = [tuple(round(v, 7) for v in tr.transform(x, y)) for x, y in ring_xy]
    ring.append(ring[0])
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    geom = {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}
    return geom, [min(lons), min(lats), max(lons), max(lats)]


def _mgrs_tile(lat: float, lon: float) -> str:
    import mgrs

    raw = mgrs.MGRS().toMGRS(lat, lon, MGRSPrecision=0)
    tile = raw if isinstance(raw, str) else raw.decode()
    return tile.zfill(5)


def _solar_angles(lat: float, lon: float, when: datetime) -> tuple[float, float]:
    """Approximate solar (zenith, azimuth) in degrees; good to a degree or two."""
    doy = when.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
    hours = when.hour + when.minute / 60 + when.second / 3600 + lon / 15.0
    ha = math.radians(15.0 * (hours - 12.0))
    phi = math.radians(lat)
    cosz = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cosz)))
    az = math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    return round(math.degrees(zen), 6), round((math.degrees(az) + 180.0) % 360.0, 6)


def _at(day: str, hours: float) -> datetime:
    base = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return base + timedelta(seconds=round(hours * 3600))


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _processing_baseline(day: str) -> str:
    d = date.fromisoformat(day)
    if d < date(2020, 1, 1):
        return "02.12"
    if d < date(2021, 3, 30):
        return "02.14"
    if d < date(2021, 6, 30):
        return "03.00"
    if d < date(2022, 1, 25):
        return "03.01"
    if d < date(2022, 12, 6):
        return "04.00"
    return "05.09"


def _blocksize(n: int, cap: int = 512) -> int:
    b = 16
    while b * 2 <= min(cap, n // 2):
        b *= 2
    return b


# ---------------------------------------------------------------------------------------------
# COG writing


def write_cog(
    path: Path,
    data: NDArray,
    grid: SiteGrid,
    gsd_m: float,
    *,
    nodata: float | None = None,
    resampling: str = "average",
    descriptions: tuple[str, ...] = (),
) -> None:
    """Write a tiled COG with internal overviews (DEFLATE, predictor)."""
    import rasterio
    from rasterio.transform import Affine

    arr = data if data.ndim == 3 else data[None]
    count, h, w = arr.shape
    profile: dict[str, Any] = {
        "driver": "COG",
        "width": w,
        "height": h,
        "count": count,
        "dtype": arr.dtype.name,
        "crs": f"EPSG:{grid.epsg}",
        "transform": Affine(*grid.transform(gsd_m)),
        "compress": "DEFLATE",
        "zlevel": 1,  # 2x faster than the default level, files ~4 % larger
        "predictor": 3 if arr.dtype.kind == "f" else 2,
        "blocksize": _blocksize(min(h, w)),
        "overview_resampling": resampling,
        "num_threads": 1,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)


# ---------------------------------------------------------------------------------------------
# per-site rendering (runs in worker processes)


@dataclass(frozen=True)
class SiteResult:
    """What a worker sends back for one site."""

    site: SiteTruth
    scenes: list[Any]  # scene truth models
    items: list[dict[str, Any]]


class _SiteRenderer:
    """Renders every scene of one site; holds the landscape and caches derived grids."""

    def __init__(self, spec: WorldSpec, site: SiteSpec, root: Path) -> None:
        self.seed = spec.seed
        self.site = site
        self.root = root
        self.grid = site_grid(site, spec.site_size_m)
        self.scenes = [s for s in spec.scenes if s.site_id == site.site_id]
        self.mgrs = _mgrs_tile(site.lat, site.lon)
        self.landscape_seed = derive_int(spec.seed, site.site_id, "landscape")
        self.land: Landscape = render_landscape(
            self.grid.px(1.0), 1.0, site.style, np.random.default_rng(self.landscape_seed)
        )
        self._hr_land: dict[str, NDArray[np.float64]] = {}
        self._naip_hr: dict[str, tuple[NDArray[np.float64], dict[str, float]]] = {}
        self._clouds: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
        self._naip_dates: dict[str, str] = {}
        self.geometry, self.bbox = _lonlat_polygon(self.grid.epsg, self.grid.bounds)
        self.rel_orbit = 1 + derive_int(spec.seed, site.site_id, "orbit", high=143)
        self.scl_base = self._scl_base()
        n10 = self.grid.px(10.0)
        c = (np.arange(n10) + 0.5) * 10.0
        cx, cy = self.grid.size_m / 2, self.grid.size_m / 2
        self.centre10 = (np.abs(c - cy)[:, None] <= 30.0) & (np.abs(c - cx)[None, :] <= 30.0)

    # -- cached grids -------------------------------------------------------------------------

    def hr_land(self, band: str) -> NDArray[np.float64]:
        """Landscape reflectance of ``band`` area-averaged to 2.5 m."""
        if band not in self._hr_land:
            b = LANDSCAPE_BANDS.index(band)
            self._hr_land[band] = sensors.area_downsample(self.land.reflectance[b], 1.0, HR_GSD_M)
        return self._hr_land[band]

    def _scl_base(self) -> NDArray[np.uint8]:
        n20 = self.grid.px(20.0)
        k = 20
        mat = self.land.material
        mat = mat[: n20 * k, : n20 * k]
        votes = []
        for group in (
            (Material.CROP, Material.SENESCENT, Material.GRASS, Material.FOREST),
            (
                Material.BARE,
                Material.ASPHALT,
                Material.DIRT_ROAD,
                Material.ROOF_BRIGHT,
                Material.ROOF_RED,
            ),
            (Material.WATER,),
        ):
            ind = np.isin(mat, np.array(group, dtype=np.uint8)).astype(np.float32)
            votes.append(ind.reshape(n20, k, n20, k).mean(axis=(1, 3)))
        classes = np.array([4, 5, 6], dtype=np.uint8)
        return classes[np.argmax(np.stack(votes), axis=0)]

    def clouds(self, scene: SceneSpec, sun: tuple[float, float]) -> tuple[NDArray, NDArray]:
        """Cloud opacity and shadow at 10 m for the site on the scene's date (shared by sensors)."""
        key = scene.date
        if key in self._clouds:
            return self._clouds[key]
        n10 = self.grid.px(10.0)
        if scene.cloud == "none":
            out = (np.zeros((n10, n10)), np.zeros((n10, n10)))
            self._clouds[key] = out
            return out
        rng = derive_rng(self.seed, self.site.site_id, "clouds", scene.date)
        size = self.grid.size_m
        if scene.cloud == "partial":
            centres = [(n10 / 2, n10 / 2)]
            radii = [min(220.0, 0.1 * size)]
            for _ in range(int(rng.integers(1, 3))):
                centres.append(tuple(rng.uniform(0.1 * n10, 0.9 * n10, size=2)))
                radii.append(float(rng.uniform(0.04, 0.08) * size))
            height_m = 500.0
        else:
            centres, radii = [], []
            for _ in range(int(rng.integers(6, 10))):
                centres.append(tuple(rng.uniform(0, n10, size=2)))
                radii.append(float(rng.uniform(0.1, 0.2) * size))
            height_m = 1200.0
        alpha = sensors.cloud_field((n10, n10), 10.0, centres, radii, rng)
        zen, az = sun
        reach = height_m * math.tan(math.radians(zen))
        dx = -reach * math.sin(math.radians(az))
        dy = -reach * math.cos(math.radians(az))
        shadow = sensors.shadow_of(alpha, (int(round(-dy / 10.0)), int(round(dx / 10.0))))
        out = (alpha, shadow)
        self._clouds[key] = out
        return out

    def nodata_mask(self, edge: tuple[float, float, float] | None, gsd_m: float) -> NDArray:
        """Pixels beyond the swath edge (a*x + b*y > c) at ``gsd_m``."""
        n = self.grid.px(gsd_m)
        if edge is None:
            return np.zeros((n, n), dtype=bool)
        a, b, c = edge
        xs = self.grid.x0 + (np.arange(n) + 0.5) * gsd_m
        ys = self.grid.y0 - (np.arange(n) + 0.5) * gsd_m
        return (a * xs[None, :] + b * ys[:, None]) > c

    def _shift(self, rng: np.random.Generator, zero: bool, max_m: float) -> tuple[float, float]:
        mag = float(rng.uniform(0.25 * max_m, max_m))
        ang = float(rng.uniform(0, 2 * math.pi))
        if zero:
            return (0.0, 0.0)
        return (round(mag * math.cos(ang), 2), round(mag * math.sin(ang), 2))

    def _swath_edge(self, rng: np.random.Generator) -> tuple[float, float, float]:
        theta = float(rng.uniform(-0.3, 0.3))
        a, b = round(math.cos(theta), 6), round(math.sin(theta), 6)
        cx, cy = self.grid.centre()
        return (a, b, round(a * cx + b * cy, 3))

    def _item_dir(self, collection: str, item_id: str) -> Path:
        return self.root / collection / item_id

    # -- scenes -------------------------------------------------------------------------------

    def render_all(self, on_scene: Callable[[], None] | None = None) -> SiteResult:
        truths: list[Any] = []
        items: list[dict[str, Any]] = []
        naips = [s for s in self.scenes if s.kind == NAIP]
        order = {NAIP: 0, VENUS: 1, S2: 2, S1: 3}
        for scene in sorted(self.scenes, key=lambda s: (order[s.kind], s.date)):
            t: Any
            it: Any
            if scene.kind == NAIP:
                t, it = self.render_naip(scene)
            elif scene.kind == S2:
                t, it = self.render_s2(scene, naips)
            elif scene.kind == VENUS:
                t, it = self.render_venus(scene)
            else:
                t, it = self.render_s1(scene)
            truths.append(t)
            items.append(it.to_dict(include_self_link=False, transform_hrefs=False))
            if on_scene is not None:
                on_scene()
        return SiteResult(site=self.site_truth(), scenes=truths, items=items)

    def site_truth(self) -> SiteTruth:
        b = self.grid.bounds
        m = CHIP_HALF_M + CHIP_MARGIN_M
        cx, cy = self.grid.centre()
        half = max(0.0, self.grid.size_m / 2 - m)
        return SiteTruth(
            site_id=self.site.site_id,
            name=self.site.name,
            country=self.site.country,
            state=self.site.state,
            conus=self.site.conus,
            lon=self.site.lon,
            lat=self.site.lat,
            utm_epsg=self.grid.epsg,
            mgrs_tile=self.mgrs,
            size_m=self.grid.size_m,
            bounds=b,
            chip_safe_bounds=BoundsM(
                xmin=cx - half, ymin=cy - half, xmax=cx + half, ymax=cy + half
            ),
            landscape_seed=self.landscape_seed,
            material_fractions=self.land.material_fractions(),
        )

    def render_naip(self, scene: SceneSpec) -> tuple[NaipSceneTruth, Any]:
        rng = derive_rng(self.seed, scene.key)
        # Per-scene gamma drawn around the SEN2NAIP statistics (spread halved).
        draw = rng.multivariate_normal(NAIP_GAMMA_MEAN, NAIP_GAMMA_COV * 0.25)
        gam = [round(float(g), 4) for g in np.clip(draw, 0.22, 0.65)]
        noise_dn = round(float(rng.uniform(0.8, 1.5)), 2)
        gamma = {name: float(g) for (name, _), g in zip(NAIP_BANDS, gam, strict=True)}
        dn = np.stack(
            [
                sensors.naip_dn(
                    self.land.reflectance[LANDSCAPE_BANDS.index(src)], gamma[name], noise_dn, rng
                )
                for name, src in NAIP_BANDS
            ]
        )
        hr = sensors.area_downsample(dn, 1.0, HR_GSD_M)
        dt = _at(scene.date, 0.0)
        lat_i = math.floor(self.site.lat)
        lon_abs = -self.site.lon
        row = int((lat_i + 1 - self.site.lat) / 0.125)
        col = int((lon_abs - math.floor(lon_abs)) / 0.125)
        quad = f"{lat_i:02d}{math.floor(lon_abs):03d}{row * 8 + col + 1:02d}"
        q_lat = (self.site.lat - lat_i) % 0.125 >= 0.0625
        q_lon = (lon_abs - math.floor(lon_abs)) % 0.125 < 0.0625  # east half
        quadrant = ("n" if q_lat else "s") + ("e" if q_lon else "w")
        zone = self.grid.epsg % 100
        item_id = f"{self.site.state}_m_{quad}_{quadrant}_{zone}_1_{scene.date.replace('-', '')}"
        blank_boxes: list[BoundsM] = []
        blank_value = None
        stored = dn
        if scene.blank_patch:
            stored = dn.copy()
            n = self.grid.px(1.0)
            hw, hh = int(min(120, n // 6)), int(min(60, n // 12))
            r0, c0 = n // 2 - hh, n // 2 - hw
            patch = stored[:, r0 : r0 + 2 * hh, c0 : c0 + 2 * hw]
            fill = np.round(patch.reshape(4, -1).mean(axis=1)).astype(np.uint8)
            stored[:, r0 : r0 + 2 * hh, c0 : c0 + 2 * hw] = fill[:, None, None]
            blank_value = int(fill[0])
            blank_boxes.append(
                BoundsM(
                    xmin=self.grid.x0 + c0,
                    ymin=self.grid.y0 - (r0 + 2 * hh),
                    xmax=self.grid.x0 + c0 + 2 * hw,
                    ymax=self.grid.y0 - r0,
                )
            )
        path = self._item_dir(NAIP, item_id) / f"{item_id}.tif"
        write_cog(path, stored, self.grid, 1.0, descriptions=("red", "green", "blue", "nir"))
        self._naip_hr[item_id] = (hr, gamma)
        self._naip_dates[scene.date] = item_id
        n = self.grid.px(1.0)
        eo = (
            {"name": "Red", "common_name": "red", "description": "visible red"},
            {"name": "Green", "common_name": "green", "description": "visible green"},
            {"name": "Blue", "common_name": "blue", "description": "visible blue"},
            {"name": "NIR", "common_name": "nir", "description": "near-infrared"},
        )
        asset = RasterAsset(
            key="image",
            path=str(path),
            title="RGBIR COG tile",
            gsd_m=1.0,
            shape=(n, n),
            transform=self.grid.transform(1.0),
            dtype="uint8",
            eo_bands=eo,
        )
        props = {
            "gsd": 1.0,
            "naip:year": scene.date[:4],
            "naip:state": self.site.state,
            "proj:epsg": self.grid.epsg,
            "proj:shape": [n, n],
            "proj:transform": list(self.grid.transform(1.0)),
            "proj:bbox": asset.proj_bbox,
            "providers": [
                {
                    "name": "USDA Farm Service Agency",
                    "roles": ["producer", "licensor"],
                    "url": "https://www.fsa.usda.gov/programs-and-services/aerial-photography/"
                    "imagery-programs/naip-imagery/",
                }
            ],
        }
        item = make_item(
            item_id,
            NAIP,
            dt,
            self.geometry,
            self.bbox,
            props,
            [asset],
            [EXT_EO, EXT_PROJ, EXT_RASTER],
        )
        truth = NaipSceneTruth(
            item_id=item_id,
            collection=NAIP,
            site_id=self.site.site_id,
            datetime=_iso(dt),
            gsd_m=1.0,
            bands=[nm for nm, _ in NAIP_BANDS],
            gamma=gamma,
            dn_noise_std=noise_dn,
            blank_boxes=blank_boxes,
            blank_value=blank_value,
        )
        return truth, item

    def _cloud_stats(
        self, alpha: NDArray, shadow: NDArray, nodata10: NDArray, edge: Any
    ) -> CloudTruth:
        cloud = (alpha > 0) & ~nodata10
        shad = (shadow > 0) & ~cloud & ~nodata10
        clear = ~nodata10 & ~cloud & ~shad
        boxes = []
        labels, _ = ndimage.label((alpha > 0) | (shadow > 0))
        for sl in ndimage.find_objects(labels):
            if sl is None:
                continue
            r, c = sl
            boxes.append(
                BoundsM(
                    xmin=self.grid.x0 + c.start * 10.0,
                    ymin=self.grid.y0 - r.stop * 10.0,
                    xmax=self.grid.x0 + c.stop * 10.0,
                    ymax=self.grid.y0 - r.start * 10.0,
                )
            )
        return CloudTruth(
            cloud_fraction=round(float(cloud.mean()), 6),
            shadow_fraction=round(float(shad.mean()), 6),
            nodata_fraction=round(float(nodata10.mean()), 6),
            clear_fraction=round(float(clear.mean()), 6),
            cloud_boxes=boxes,
            nodata_edge=edge,
            centre_clear=bool(clear[self.centre10].all()),
        )

    def render_s2(self, scene: SceneSpec, naips: list[SceneSpec]) -> tuple[S2SceneTruth, Any]:
        rng = derive_rng(self.seed, scene.key)
        hours = 10.5 - self.site.lon / 15.0 + float(rng.uniform(-0.25, 0.25))
        dt = _at(scene.date, hours)
        sun = _solar_angles(self.site.lat, self.site.lon, dt)
        baseline = _processing_baseline(scene.date)
        offset = 1000 if baseline >= "04.00" else 0
        shift = self._shift(rng, scene.zero_shift, 6.0)
        if scene.large_shift:
            # Its own stream: the scene's other draws stay those of a normal scene.
            big = derive_rng(self.seed, scene.key, "large-shift")
            mag, ang = float(big.uniform(13.0, 20.0)), float(big.uniform(0, 2 * math.pi))
            shift = (round(mag * math.cos(ang), 2), round(mag * math.sin(ang), 2))
        edge = self._swath_edge(rng) if scene.nodata_edge else None
        # HR source of the 10 m bands: the NAIP nearest in time, else the landscape.
        hr_source = "landscape"
        gamma: dict[str, float] = {}
        naip_hr: NDArray[np.float64] | None = None
        if naips:
            d0 = date.fromisoformat(scene.date)
            nearest = min(
                naips, key=lambda s: (abs((date.fromisoformat(s.date) - d0).days), s.date)
            )
            hr_source = self._naip_dates[nearest.date]
            naip_hr, gamma = self._naip_hr[hr_source]
        alpha10, shadow10 = self.clouds(scene, sun)
        nodata10 = self.nodata_mask(edge, 10.0)
        alpha20 = alpha10.reshape(alpha10.shape[0] // 2, 2, -1, 2).mean(axis=(1, 3))
        shadow20 = shadow10.reshape(shadow10.shape[0] // 2, 2, -1, 2).mean(axis=(1, 3))
        nodata20 = sensors.block_max(nodata10, 2)
        bands: list[BandTruth] = []
        arrays: dict[str, NDArray[np.uint16]] = {}
        naip_index = {src: i for i, (_, src) in enumerate(NAIP_BANDS)}
        naip_name = {src: nm for nm, src in NAIP_BANDS}
        for band in (*S2_10M, *S2_20M):
            is10 = band in S2_10M
            base = S2_SIGMA_BASE[band] if is10 else S2_SIGMA20_BASE[band]
            sigma = round(base + float(rng.uniform(-0.2, 0.2)), 3)
            noise = round(float(rng.uniform(0.001, 0.002 if is10 else 0.0025)), 5)
            if is10 and naip_hr is not None:
                g = gamma[naip_name[band]]
                hr = sensors.gamma_transfer(naip_hr[naip_index[band]], g)
                transfer = TransferTruth(kind="gamma", gamma=g, source_band=naip_name[band])
            else:
                hr = self.hr_land(band)
                transfer = TransferTruth(kind="identity", source_band=band)
            factor = 4 if is10 else 8
            lr = sensors.degrade_band(hr, sigma, factor, HR_GSD_M, shift)
            lr = lr + noise * rng.standard_normal(lr.shape)
            a, s, nd = (alpha10, shadow10, nodata10) if is10 else (alpha20, shadow20, nodata20)
            lr = (1 - a) * lr * (1 - SHADOW_DARKENING * s) + a * CLOUD_REFL[band]
            dn = np.clip(np.rint(lr * 10000.0) + offset, 1, 65535).astype(np.uint16)
            dn[nd] = 0
            arrays[band] = dn
            bands.append(
                BandTruth(
                    band=band,
                    gsd_m=10.0 if is10 else 20.0,
                    psf_sigma_hr_px=sigma,
                    transfer=transfer,
                    noise_std=noise,
                )
            )
        # Scene classification.
        scl = self.scl_base.copy()
        cloud20 = sensors.block_max(alpha10 > 0, 2)
        scl[cloud20] = np.where(
            alpha20[cloud20] >= 0.5, 9, np.where(alpha20[cloud20] >= 0.15, 8, 10)
        )
        shadow_any = sensors.block_max(shadow10 > 0, 2) & ~cloud20
        scl[shadow_any] = 3
        scl[nodata20] = 0
        clouds = self._cloud_stats(alpha10, shadow10, nodata10, edge)
        valid = scl != 0
        nvalid = max(1, int(valid.sum()))

        def pct(*classes: int) -> float:
            return round(100.0 * float(np.isin(scl[valid], classes).sum()) / nvalid, 6)

        platform = scene.platform
        sat = "S2A" if platform.endswith("A") else "S2B"
        sensing = dt.strftime("%Y%m%dT%H%M%S")
        gen_dt = dt + timedelta(days=int(rng.integers(0, 3)), hours=float(rng.uniform(1, 6)))
        gen = gen_dt.strftime("%Y%m%dT%H%M%S")
        tile = self.mgrs
        item_id = f"{sat}_MSIL2A_{sensing}_R{self.rel_orbit:03d}_T{tile}_{gen}"
        abs_orbit = 10000 + derive_int(self.seed, item_id, "abs", high=30000)
        bl = baseline.replace(".", "")
        granule = f"{sat}_OPER_MSI_L2A_TL_2BPS_{gen}_A{abs_orbit:06d}_T{tile}_N{baseline}"
        item_dir = self._item_dir(S2, item_id)
        assets = []
        for band in (*S2_10M, *S2_20M):
            gsd = 10.0 if band in S2_10M else 20.0
            fname = f"T{tile}_{sensing}_{band}_{int(gsd)}m.tif"
            write_cog(
                item_dir / fname, arrays[band], self.grid, gsd, nodata=0, descriptions=(band,)
            )
            n = self.grid.px(gsd)
            assets.append(
                RasterAsset(
                    key=band,
                    path=str(item_dir / fname),
                    title=f"{S2_BAND_TITLE[band]} - {int(gsd)}m",
                    gsd_m=gsd,
                    shape=(n, n),
                    transform=self.grid.transform(gsd),
                    dtype="uint16",
                    nodata=0,
                    scale=0.0001,
                    offset=-offset / 10000.0,
                    eo_bands=(s2_eo_band(band),),
                )
            )
        fname = f"T{tile}_{sensing}_SCL_20m.tif"
        write_cog(
            item_dir / fname,
            scl,
            self.grid,
            20.0,
            nodata=0,
            resampling="nearest",
            descriptions=("SCL",),
        )
        n20 = self.grid.px(20.0)
        assets.append(
            RasterAsset(
                key="SCL",
                path=str(item_dir / fname),
                title="Scene classfication map (SCL)",
                gsd_m=20.0,
                shape=(n20, n20),
                transform=self.grid.transform(20.0),
                dtype="uint8",
                nodata=0,
            )
        )
        zen, az = sun
        props = {
            "platform": platform,
            "proj:epsg": self.grid.epsg,
            "instruments": ["msi"],
            "s2:mgrs_tile": tile,
            "constellation": "Sentinel 2",
            "s2:granule_id": granule,
            "eo:cloud_cover": pct(8, 9, 10),
            "s2:datatake_id": f"G{sat}_{sensing}_{abs_orbit:06d}_N{baseline}",
            "s2:product_uri": f"{sat}_MSIL2A_{sensing}_N{bl}_R{self.rel_orbit:03d}_T{tile}_{gen}"
            ".SAFE",
            "s2:datastrip_id": f"{sat}_OPER_MSI_L2A_DS_2BPS_{gen}_S{sensing}_N{baseline}",
            "s2:product_type": "S2MSI2A",
            "sat:orbit_state": "descending",
            "s2:datatake_type": "INS-NOBS",
            "s2:generation_time": _iso(gen_dt),
            "sat:relative_orbit": self.rel_orbit,
            "s2:water_percentage": pct(6),
            "s2:mean_solar_zenith": zen,
            "s2:mean_solar_azimuth": az,
            "s2:processing_baseline": baseline,
            "s2:snow_ice_percentage": 0.0,
            "s2:vegetation_percentage": pct(4),
            "s2:thin_cirrus_percentage": pct(10),
            "s2:cloud_shadow_percentage": pct(3),
            "s2:nodata_pixel_percentage": round(100.0 * float((scl == 0).mean()), 6),
            "s2:unclassified_percentage": 0.0,
            "s2:dark_features_percentage": 0.0,
            "s2:not_vegetated_percentage": pct(5),
            "s2:degraded_msi_data_percentage": 0.0,
            "s2:high_proba_clouds_percentage": pct(9),
            "s2:reflectance_conversion_factor": round(
                1.0
                / (1 - 0.01672 * math.cos(math.radians(0.9856 * (dt.timetuple().tm_yday - 4))))
                ** 2,
                8,
            ),
            "s2:medium_proba_clouds_percentage": pct(8),
            "s2:saturated_defective_pixel_percentage": 0.0,
            "view:off_nadir": round(float(rng.uniform(0.5, 9.5)), 3),
            "view:sun_azimuth": az,
            "view:sun_elevation": round(90.0 - zen, 6),
        }
        item = make_item(
            item_id,
            S2,
            dt,
            self.geometry,
            self.bbox,
            props,
            assets,
            [EXT_EO, EXT_SAT, EXT_PROJ, EXT_VIEW, EXT_RASTER],
        )
        clean = clouds.clear_fraction == 1.0
        truth = S2SceneTruth(
            item_id=item_id,
            collection=S2,
            site_id=self.site.site_id,
            datetime=_iso(dt),
            platform=platform,
            processing_baseline=baseline,
            dn_offset=offset,
            hr_source=hr_source,
            hr_gsd_m=HR_GSD_M,
            shift_m=shift,
            bands=bands,
            clouds=clouds,
            clean=clean,
        )
        return truth, item

    def render_venus(self, scene: SceneSpec) -> tuple[VenusSceneTruth, Any]:
        rng = derive_rng(self.seed, scene.key)
        hours = 10.8 - self.site.lon / 15.0 + float(rng.uniform(-0.1, 0.1))
        dt = _at(scene.date, hours)
        sun = _solar_angles(self.site.lat, self.site.lon, dt)
        shift = self._shift(rng, scene.zero_shift, 1.5)
        alpha10, shadow10 = self.clouds(scene, sun)
        alpha5 = np.repeat(np.repeat(alpha10, 2, 0), 2, 1)
        shadow5 = np.repeat(np.repeat(shadow10, 2, 0), 2, 1)
        nodata10 = self.nodata_mask(None, 10.0)
        bands = []
        item_id = f"VENUS-XS_{dt.strftime('%Y%m%d-%H%M%S')}-000_L2A_{self.site.venus_site}_C_V2-2"
        item_dir = self._item_dir(VENUS, item_id)
        assets = []
        n5 = self.grid.px(5.0)
        for vb, src in VENUS_SOURCE.items():
            sigma = round(1.5 + float(rng.uniform(-0.2, 0.2)), 3)
            noise = round(float(rng.uniform(0.0015, 0.003)), 5)
            gain = round(float(rng.uniform(0.97, 1.03)), 4)
            off = round(float(rng.uniform(-0.004, 0.004)), 5)
            hr = gain * self.hr_land(src) + off
            lr = sensors.degrade_band(hr, sigma, 2, HR_GSD_M, shift)
            lr = lr + noise * rng.standard_normal(lr.shape)
            lr = (1 - alpha5) * lr * (1 - SHADOW_DARKENING * shadow5) + alpha5 * CLOUD_REFL[src]
            dn = np.clip(np.rint(lr * 1000.0), -9999, 32767).astype(np.int16)
            fname = f"{item_id}_SRE_{vb}.tif"
            write_cog(item_dir / fname, dn, self.grid, 5.0, nodata=-10000, descriptions=(vb,))
            cw, fw = VENUS_BANDS[vb]
            assets.append(
                RasterAsset(
                    key=vb,
                    path=str(item_dir / fname),
                    title=f"Surface reflectance {vb}",
                    gsd_m=5.0,
                    shape=(n5, n5),
                    transform=self.grid.transform(5.0),
                    dtype="int16",
                    nodata=-10000,
                    scale=0.001,
                    offset=0.0,
                    eo_bands=({"name": vb, "center_wavelength": cw, "full_width_half_max": fw},),
                )
            )
            bands.append(
                BandTruth(
                    band=vb,
                    gsd_m=5.0,
                    psf_sigma_hr_px=sigma,
                    transfer=TransferTruth(kind="linear", gain=gain, offset=off, source_band=src),
                    noise_std=noise,
                )
            )
        clm = np.zeros((n5, n5), dtype=np.uint8)
        clm[(alpha5 > 0) | (shadow5 > 0)] |= 1
        clm[alpha5 > 0] |= 2
        clm[(shadow5 > 0) & (alpha5 == 0)] |= 32
        edg = np.zeros((n5, n5), dtype=np.uint8)
        for key, arr, title in (
            ("CLM", clm, "Cloud mask (bit 1 cloud or shadow, 2 cloud, 32 shadow)"),
            ("EDG", edg, "Edge mask (1 outside the swath)"),
        ):
            fname = f"{item_id}_{key}_XS.tif"
            write_cog(
                item_dir / fname, arr, self.grid, 5.0, resampling="nearest", descriptions=(key,)
            )
            assets.append(
                RasterAsset(
                    key=key,
                    path=str(item_dir / fname),
                    title=title,
                    gsd_m=5.0,
                    shape=(n5, n5),
                    transform=self.grid.transform(5.0),
                    dtype="uint8",
                    roles=("data", "cloud") if key == "CLM" else ("data", "nodata"),
                )
            )
        clouds = self._cloud_stats(alpha10, shadow10, nodata10, None)
        zen, az = sun
        props = {
            "platform": "venus",
            "instruments": ["vssc"],
            "constellation": "venus",
            "gsd": 5.0,
            "proj:epsg": self.grid.epsg,
            "eo:cloud_cover": round(100.0 * clouds.cloud_fraction, 6),
            "view:sun_azimuth": az,
            "view:sun_elevation": round(90.0 - zen, 6),
            # VENuS sees each site under one angle (its orbit repeats every 2 days).
            "view:incidence_angle": round(
                float(derive_rng(self.seed, self.site.site_id, "venus-view").uniform(3, 35)), 3
            ),
            "venus:site": self.site.venus_site,
        }
        item = make_item(
            item_id,
            VENUS,
            dt,
            self.geometry,
            self.bbox,
            props,
            assets,
            [EXT_EO, EXT_PROJ, EXT_VIEW, EXT_RASTER],
        )
        truth = VenusSceneTruth(
            item_id=item_id,
            collection=VENUS,
            site_id=self.site.site_id,
            datetime=_iso(dt),
            hr_gsd_m=HR_GSD_M,
            shift_m=shift,
            bands=bands,
            clouds=clouds,
            clean=clouds.clear_fraction == 1.0,
        )
        return truth, item

    def render_s1(self, scene: SceneSpec) -> tuple[S1SceneTruth, Any]:
        rng = derive_rng(self.seed, scene.key)
        asc = bool(rng.random() < 0.5)
        hours = (17.9 if asc else 6.1) - self.site.lon / 15.0
        if not 0.0 <= hours < 24.0:  # keep the acquisition on its calendar date
            asc = not asc
            hours = (17.9 if asc else 6.1) - self.site.lon / 15.0
        hours += float(rng.uniform(-0.2, 0.2))
        dt = _at(scene.date, hours)
        enl = 4.4
        moist = round(float(rng.uniform(-1.0, 1.0)), 3)
        n10 = self.grid.px(10.0)
        mat = self.land.material[: n10 * 10, : n10 * 10]
        item_ts = dt.strftime("%Y%m%dT%H%M%S")
        stop = (dt + timedelta(seconds=25)).strftime("%Y%m%dT%H%M%S")
        mission = "S1A" if scene.platform.endswith("A") else "S1B"
        abs_orbit = 10000 + derive_int(self.seed, scene.key, "abs", high=40000)
        datatake = derive_int(self.seed, scene.key, "dt", high=0xFFFFF)
        item_id = f"{mission}_IW_GRDH_1SDV_{item_ts}_{stop}_{abs_orbit:06d}_{datatake:06X}"
        item_dir = self._item_dir(S1, item_id)
        sigma_db: dict[str, dict[str, float]] = {}
        assets = []
        for p_idx, pol in enumerate(("vv", "vh")):
            lut = np.zeros(len(Material), dtype=np.float32)
            table = {}
            for m_, vals in S1_SIGMA0_DB.items():
                v = vals[p_idx] + (moist if m_ in MOIST_MATERIALS else 0.0)
                table[m_.name.lower()] = round(v, 3)
                lut[m_] = 10.0 ** (round(v, 3) / 10.0)
            sigma_db[pol] = table
            lin = np.take(lut, mat).reshape(n10, 10, n10, 10).mean(axis=(1, 3))
            db = (10.0 * np.log10(sensors.speckle(lin, enl, rng))).astype(np.float32)
            fname = f"iw-{pol}.tif"
            write_cog(
                item_dir / fname,
                db,
                self.grid,
                10.0,
                nodata=float("nan"),
                descriptions=(pol.upper(),),
            )
            assets.append(
                RasterAsset(
                    key=pol,
                    path=str(item_dir / fname),
                    title=f"{pol.upper()}: sigma0 (dB)",
                    gsd_m=10.0,
                    shape=(n10, n10),
                    transform=self.grid.transform(10.0),
                    dtype="float32",
                    nodata=None,
                    unit="dB",
                    description=f"Terrain-corrected sigma0 backscatter, {pol.upper()}, in dB",
                )
            )
        props = {
            "platform": "SENTINEL-1A" if mission == "S1A" else "SENTINEL-1B",
            "constellation": "Sentinel-1",
            "proj:epsg": self.grid.epsg,
            "sar:instrument_mode": "IW",
            "sar:frequency_band": "C",
            "sar:center_frequency": 5.405,
            "sar:polarizations": ["VV", "VH"],
            "sar:product_type": "GRD",
            "sar:resolution_range": 20,
            "sar:resolution_azimuth": 22,
            "sar:pixel_spacing_range": 10,
            "sar:pixel_spacing_azimuth": 10,
            "sar:looks_range": 5,
            "sar:looks_azimuth": 1,
            "sar:looks_equivalent_number": enl,
            "sat:orbit_state": "ascending" if asc else "descending",
            "sat:relative_orbit": 1 + derive_int(self.seed, self.site.site_id, "s1orbit", high=175),
            "sat:absolute_orbit": abs_orbit,
            "s1:instrument_configuration_ID": "7",
            "s1:datatake_id": str(datatake),
            "s1:product_timeliness": "Fast-24h",
            "s1:processing_level": "1",
            "s1:resolution": "high",
            "s1:product_type": "GRD",
        }
        item = make_item(
            item_id,
            S1,
            dt,
            self.geometry,
            self.bbox,
            props,
            assets,
            [EXT_SAR, EXT_SAT, EXT_PROJ, EXT_RASTER],
        )
        truth = S1SceneTruth(
            item_id=item_id,
            collection=S1,
            site_id=self.site.site_id,
            datetime=_iso(dt),
            gsd_m=10.0,
            orbit_state="ascending" if asc else "descending",
            enl=enl,
            moisture_offset_db=moist,
            sigma0_db=sigma_db,
        )
        return truth, item


S2_BAND_TITLE = {
    "B02": "Band 2 - Blue",
    "B03": "Band 3 - Green",
    "B04": "Band 4 - Red",
    "B05": "Band 5 - Vegetation red edge 1",
    "B06": "Band 6 - Vegetation red edge 2",
    "B07": "Band 7 - Vegetation red edge 3",
    "B08": "Band 8 - NIR",
    "B8A": "Band 8A - Vegetation red edge 4",
}


def render_site(spec: WorldSpec, site_id: str, root: str, ticks: Any = None) -> SiteResult:
    """Render every scene of one site into ``root`` (worker entry point).

    ``ticks``: an optional queue that receives one item per finished scene (progress).
    """
    site = next(s for s in spec.sites if s.site_id == site_id)
    on_scene = None if ticks is None else (lambda: ticks.put(site_id))
    return _SiteRenderer(spec, site, Path(root)).render_all(on_scene=on_scene)


# ---------------------------------------------------------------------------------------------
# pairs


def _season(d: datetime) -> tuple[int, int]:
    m = d.month
    year = d.year + (1 if m == 12 else 0)
    return year, {12: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 2}.get(m, 3)


def expected_pairs(scenes: list[Any], items: dict[str, dict[str, Any]]) -> list[PairTruth]:
    """All pairs of each recipe, from the scene truths (see ``PAIR_RULES``).

    Raises:
        DemoWorldError: if the schedule holds an ambiguous case (24 h vs calendar day).
    """

    def dt(s: Any) -> datetime:
        return datetime.fromisoformat(s.datetime.replace("Z", "+00:00"))

    def cloud(s: Any) -> float:
        return float(items[s.item_id]["properties"]["eo:cloud_cover"])

    s2 = [s for s in scenes if s.kind == S2]
    pairs: list[PairTruth] = []
    for lr in s2:
        for hr in scenes:
            if hr.site_id != lr.site_id or hr.kind == S2:
                continue
            hours = (dt(lr) - dt(hr)).total_seconds() / 3600.0
            days = abs((dt(lr).date() - dt(hr).date()).days)
            issues = []
            if lr.clouds.cloud_fraction > 0 or lr.clouds.shadow_fraction > 0:
                issues.append("cloud")
            if lr.clouds.nodata_fraction > 0:
                issues.append("nodata")
            if hr.kind == NAIP and math.hypot(*lr.shift_m) > LARGE_SHIFT_M:
                issues.append("shift")
            if hr.kind == NAIP:
                if (abs(hours) <= 24.0) != (days <= 1):
                    raise DemoWorldError(f"ambiguous pair {lr.item_id} / {hr.item_id}")
                if abs(hours) > 24.0:
                    continue
                if hr.blank_boxes:
                    issues.append("blank")
                recipe = "sen2naip"
                a, b = lr, hr
            elif hr.kind == VENUS:
                if days != 0:
                    continue
                if not hr.clean and "cloud" not in issues:
                    issues.append("cloud")
                recipe = "sen2venus"
                a, b = lr, hr
            else:
                if _season(dt(lr)) != _season(dt(hr)) or cloud(lr) > 1.0:
                    continue
                recipe = "sen12"
                a, b = hr, lr
                hours = -hours
            pairs.append(
                PairTruth(
                    recipe=recipe,  # type: ignore[arg-type]
                    site_id=lr.site_id,
                    lr_item_id=a.item_id,
                    lr_collection=a.collection,
                    hr_item_id=b.item_id,
                    hr_collection=b.collection,
                    dt_hours=round(hours, 4),
                    s2_cloud_cover=cloud(lr),
                    clean=not issues,
                    issues=issues,
                )
            )
    return sorted(pairs, key=lambda p: (p.recipe, p.site_id, p.lr_item_id, p.hr_item_id))


# ---------------------------------------------------------------------------------------------
# orchestration


def _marker(spec: WorldSpec) -> dict[str, Any]:
    return {
        "harvest_version": __version__,
        "world_format": WORLD_FORMAT,
        "seed": spec.seed,
        "site_size_m": spec.site_size_m,
        "sites": [s.site_id for s in spec.sites],
    }


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _geojson(features: list[dict[str, Any]]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": features}, indent=2) + "\n"


def build_world(
    spec: WorldSpec, root: Path, *, progress: bool = False, workers: int | None = None
) -> WorldTruth:
    """Render the whole world into the (empty or new) folder ``root``."""
    import pystac

    root = root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    n_workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    results: dict[str, SiteResult] = {}
    n_scenes = {
        s.site_id: sum(1 for x in spec.scenes if x.site_id == s.site_id) for s in spec.sites
    }

    bar = ProgressBar("demo world: scenes", len(spec.scenes), enabled=progress)
    try:
        if n_workers <= 1 or len(spec.sites) <= 1:
            for s in spec.sites:
                site = next(x for x in spec.sites if x.site_id == s.site_id)
                renderer = _SiteRenderer(spec, site, root)
                results[s.site_id] = renderer.render_all(on_scene=bar.advance)
        else:
            # Heaviest sites (most scenes) first; each worker renders whole sites and reports
            # every finished scene through a queue for the progress bar.
            ctx = get_context("spawn")
            with ctx.Manager() as manager, ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
                ticks = manager.Queue() if bar.enabled else None
                futs = [
                    pool.submit(render_site, spec, s.site_id, str(root), ticks)
                    for s in sorted(spec.sites, key=lambda s: -n_scenes[s.site_id])
                ]
                pending = set(futs)
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for fut in done:
                        res = fut.result()
                        results[res.site.site_id] = res
                    while ticks is not None and not ticks.empty():
                        ticks.get()
                        bar.advance()
    finally:
        bar.close()

    site_truths = [results[s.site_id].site for s in spec.sites]
    scenes: list[Any] = []
    item_dicts: dict[str, dict[str, Any]] = {}
    for s in spec.sites:
        scenes.extend(results[s.site_id].scenes)
        for d in results[s.site_id].items:
            item_dicts[d["id"]] = d
    scenes.sort(key=lambda t: (t.site_id, t.kind, t.datetime))
    pairs = expected_pairs(scenes, item_dicts)
    # migrate=False keeps the provider's schema (proj:epsg, eo v1.0.0) instead of pystac's latest.
    items = [pystac.Item.from_dict(d, migrate=False) for _, d in sorted(item_dicts.items())]
    build_catalog(items, root)
    write_geoparquet(root, root / "stac-geoparquet")
    from harvest.demo.quicklooks import write_quicklooks

    write_quicklooks(root, item_dicts, {t.item_id: t.site_id for t in scenes})

    truth = WorldTruth(
        schema_version=TRUTH_SCHEMA_VERSION,
        harvest_version=__version__,
        seed=spec.seed,
        site_size_m=spec.site_size_m,
        conventions=CONVENTIONS,
        pair_rules=PAIR_RULES,
        sites=site_truths,
        scenes=scenes,
        pairs=pairs,
    )
    (root / "truth.json").write_text(dump_truth(truth), encoding="utf-8")
    region, footprints = [], []
    for st in site_truths:
        props = {"site_id": st.site_id, "name": st.name, "utm_epsg": st.utm_epsg}
        g_safe, _ = _lonlat_polygon(st.utm_epsg, st.chip_safe_bounds)
        g_full, _ = _lonlat_polygon(st.utm_epsg, st.bounds)
        region.append({"type": "Feature", "properties": props, "geometry": g_safe})
        footprints.append({"type": "Feature", "properties": props, "geometry": g_full})
    (root / "region.geojson").write_text(_geojson(region), encoding="utf-8")
    (root / "sites.geojson").write_text(_geojson(footprints), encoding="utf-8")
    return truth


def _is_complete(out_dir: Path, spec: WorldSpec) -> bool:
    marker = out_dir / MARKER
    try:
        return bool(json.loads(marker.read_text(encoding="utf-8")) == _marker(spec))
    except (OSError, ValueError):
        return False


def run_demo_world(
    out_dir: str | Path,
    seed: int = 0,
    force: bool = False,
    *,
    progress: bool = False,
    site_size_m: float = 2400.0,
    site_ids: tuple[str, ...] | None = None,
    workers: int | None = None,
    n_sites: int | None = None,
) -> DemoWorldSummary:
    """Build the demo world in ``out_dir`` (or reuse the complete one already there).

    Args:
        out_dir: target folder; created with its parents' permission, replaced atomically.
        seed: world seed; same seed, same truth and pixels.
        force: rebuild even if ``out_dir`` holds a complete world of this seed.
        progress: show a rich progress bar.
        site_size_m: side of each site (multiple of 60 m); smaller is faster (tests).
        site_ids: build only these sites.
        n_sites: number of sites (see :func:`harvest.demo.spec.default_spec`).
        workers: processes rendering sites in parallel (default: up to 2).

    Returns:
        A :class:`DemoWorldSummary`.

    Raises:
        DemoWorldError: when the target cannot be written or the options are invalid.
    """
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser().absolute()  # asset hrefs are computed from it
    try:
        spec = default_spec(seed, site_size_m, site_ids, n_sites)
    except ValueError as exc:
        raise DemoWorldError(str(exc)) from exc
    if out.exists() and not out.is_dir():
        raise DemoWorldError(f"{out} exists and is not a folder: choose another OUT_DIR")
    if not force and out.is_dir() and _is_complete(out, spec):
        return _summary(out, spec, reused=True, t0=t0)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise DemoWorldError(
            f"{out} is not empty and holds no demo world: choose an empty or new folder"
        )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoWorldError(
            f"cannot create {parent} ({exc.strerror}): choose another OUT_DIR"
        ) from exc
    if not os.access(parent, os.W_OK):
        raise DemoWorldError(f"{parent} is not writable: choose another OUT_DIR")
    tmp = temp_name(out)  # harvest's one temporary-name scheme (harvest.diskio)
    try:
        build_world(spec, tmp, progress=progress, workers=workers)
        (tmp / MARKER).write_text(json.dumps(_marker(spec), indent=2) + "\n", encoding="utf-8")
        old = None
        if out.exists():
            old = temp_name(out)
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _summary(out, spec, reused=False, t0=t0)


def _summary(out: Path, spec: WorldSpec, *, reused: bool, t0: float) -> DemoWorldSummary:
    truth = load_truth(out / "truth.json")
    counts: dict[str, int] = {}
    for s in truth.scenes:
        counts[s.collection] = counts.get(s.collection, 0) + 1
    return DemoWorldSummary(
        out_dir=out,
        seed=spec.seed,
        reused=reused,
        n_sites=len(truth.sites),
        n_items=dict(sorted(counts.items())),
        bytes_on_disk=_folder_bytes(out),
        seconds=round(time.perf_counter() - t0, 2),
    )
