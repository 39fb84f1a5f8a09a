"""The SEN2VENuS chain of ``harvest build`` (``products: [sen2venus]``): sites to patches.

ROIs are sites, not sampled points: the build's region is a polygon layer with one polygon per
VENuS site (GeoJSON, GeoPackage or GeoParquet with a ``site_id``, ``site`` or ``name`` column;
the demo world's ``sites.geojson``), or a plain region (``world-land``, ``conus``, any polygon
file without such a column) whose VENuS sites are found in the catalog: the VENuS scenes over
it grouped by the site named in their product id (:func:`resolve_sites`). For each site:

1. one search for Sentinel-2 and VENuS scenes over the site polygons; each VENuS scene is paired
   with the same-UTC-day S2 scene that covers most of the site with it (:func:`find_pairs`);
2. the pair's common area (site ∩ both footprints) in the VENuS scene's UTM zone, cut to 20 m
   pixel edges, is read on nested 5, 10 and 20 m grids: S2 B02 B03 B04 B08, B05 B06 B07 B8A and
   SCL; VENuS B3 B4 B7 B8 B9 B10 B11 and its masks (CLM clouds and shadows, EDG outside the
   swath, SAT saturation, MG2 geophysically invalid, each when the catalog has it);
3. validity per product, the union of its masks as the paper does (S2: SCL not nodata,
   saturated/defective, cloud shadow or cloud, and every MAJA mask clear when a MAJA provider
   gives them; VENuS: every mask clear) and :func:`harvest.sen2venus.process_pair`;
4. :func:`harvest.writers.sen2venus.write_pair` in the published layout.

A pair's outcome is kept in ``OUT/.harvest/sen2venus/PAIR.json`` (written, or dropped with the
reason): a second run skips it. Randomness (the 500-patch cap) comes from the build seed and
the pair id.
"""

from __future__ import annotations

import json
import math
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from harvest.backends.base import (
    Catalog,
    Footprint,
    Reader,
    SceneRef,
    SearchRequest,
    SearchResult,
)
from harvest.backends.registry import ReaderSettings, reader_for
from harvest.errors import InputFileError, QaError
from harvest.grid import ChipGrid
from harvest.ids import check_id
from harvest.progress import NO_PROGRESS, Progress
from harvest.qa import SCL_CLOUD_CLASSES, SCL_CLOUD_SHADOW, SCL_NODATA, SCL_SATURATED_DEFECTIVE
from harvest.recipes import Recipe
from harvest.sen2venus import (
    MAX_PATCHES,
    PATCH_PX,
    S2_10M_BANDS,
    S2_20M_BANDS,
    VENUS_10M_BANDS,
    VENUS_20M_BANDS,
    PairImages,
    process_pair,
)
from harvest.store import STATE_DIR, atomic_write_json
from harvest.writers.sen2venus import PairInfo, write_pair

_VENUS_SITE_IN_ID = re.compile(r"_L2A_([A-Za-z0-9][A-Za-z0-9-]*)_")
STATUS_DIR = "sen2venus"
"""Under the state folder (``.harvest``): one status file per pair."""
SITE_COLUMNS = ("site_id", "site", "name")
VENUS_BANDS = tuple(dict.fromkeys(VENUS_10M_BANDS + VENUS_20M_BANDS))
#: S2 SCL classes that make a pixel invalid.
SCL_INVALID = (SCL_NODATA, SCL_SATURATED_DEFECTIVE, SCL_CLOUD_SHADOW, *SCL_CLOUD_CLASSES)
#: MAJA mask assets (stored values, 0 = clear), each read when the scene has it: clouds and
#: shadows (CLM), outside the swath (EDG), saturation (SAT), geophysically invalid (MG2: water,
#: snow, relief shadows and hidden areas, low sun). VENuS has them; Sentinel-2 from a MAJA
#: provider has them instead of (or besides) SCL.
MAJA_MASKS = ("CLM", "EDG", "SAT", "MG2")


def mask_validity(reader: Reader, scene: SceneRef, grid: ChipGrid) -> np.ndarray:
    """Pixels of ``grid`` that every MAJA mask of ``scene`` calls clear (all, without masks).

    A mask pixel is clear when it is 0; nodata or any set bit makes the pixel invalid.
    """
    valid = np.ones((grid.height, grid.width), bool)
    for mask in MAJA_MASKS:
        if mask in scene.assets:
            m = reader.read_raw(scene.assets[mask], grid)
            valid &= np.isfinite(m) & (np.nan_to_num(m) == 0)
    return valid


@dataclass(frozen=True)
class Site:
    """A VENuS site: its name and polygon (longitude, latitude)."""

    name: str
    geometry: BaseGeometry


@dataclass(frozen=True)
class SitePair:
    """A same-day Sentinel-2 / VENuS pair over a site."""

    site: Site
    s2: SceneRef
    venus: SceneRef

    @property
    def day(self) -> str:
        """The acquisition day, ``YYYY-MM-DD`` (UTC, VENuS's)."""
        return self.venus.datetime.astimezone(UTC).date().isoformat()

    @property
    def tile(self) -> str:
        """The S2 MGRS tile (or ``unknown``)."""
        return self.s2.mgrs_tile or "unknown"

    @property
    def pair_id(self) -> str:
        """``{site}_{tile}_{YYYY-MM-DD}``, the published pair id."""
        return f"{self.site.name}_{self.tile}_{self.day}"


@dataclass(frozen=True)
class Sen2venusSummary:
    """What :func:`run_sites` did."""

    n_sites: int
    n_pairs: int
    n_written: int
    n_done_before: int
    dropped: tuple[tuple[str, str], ...]
    n_patches: int
    seconds: float

    def line(self) -> str:
        """One line for the build's summary."""
        return (
            f"{self.n_pairs} same-day pairs over {self.n_sites} sites: {self.n_written} written "
            f"({self.n_patches} patches), {self.n_done_before} done before, "
            f"{len(self.dropped)} dropped"
        )


def _read_layer(path: Path) -> tuple[Any, str | None]:
    """A vector file as a GeoDataFrame in lon/lat, and its site-name column (or None)."""
    import geopandas as gpd

    try:
        frame = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
    except Exception as exc:  # pyogrio and pyarrow raise many types for a bad file
        raise InputFileError(
            f"cannot read the sites file {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
            "; give a GeoJSON, GeoPackage or GeoParquet of site polygons"
        ) from None
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    return frame, next((c for c in SITE_COLUMNS if c in frame.columns), None)


def _sites_of(frame: Any, column: str, path: Path | str) -> list[Site]:
    for row, name in enumerate(frame[column]):
        # Site names become folder and file names: refuse any that could leave the output.
        check_id(name, field=column, where=f"{path} row {row}")
    sites = [
        Site(str(name), geom)
        for name, geom in zip(frame[column], frame.geometry, strict=True)
        if geom is not None and not geom.is_empty and geom.area > 0
    ]
    if not sites:
        raise InputFileError(f"the sites file {path} holds no polygon; give site footprints")
    return sites


def read_sites(path: Path) -> list[Site]:
    """The site polygons of a vector file (see the module doc).

    Raises:
        InputFileError: the file cannot be read, has no name column or no polygon.
    """
    frame, column = _read_layer(path)
    if column is None:
        raise InputFileError(
            f"the sites file {path} has no {', '.join(SITE_COLUMNS)} column; add one naming "
            "each site"
        )
    return _sites_of(frame, column, path)


def venus_site(scene: SceneRef) -> str | None:
    """The VENuS site a scene belongs to, from its product id, or None.

    Theia names VENuS L2A products ``VENUS-XS_{date}-{time}-000_L2A_{SITE}_C_V{version}``.
    """
    found = _VENUS_SITE_IN_ID.search(scene.item_id)
    return found.group(1) if found else None


def resolve_sites(
    region: str | Path,
    catalog: Catalog,
    recipe: Recipe,
    start: date,
    end: date,
    *,
    progress: bool = False,
) -> list[Site]:
    """The sites of a site product (module doc).

    The polygons of a layer with a site column, or else (``world-land``, ``conus``, any polygon
    file without one) the VENuS sites found in the region: the HR scenes over it, grouped by
    :func:`venus_site`, each site the union of its scenes' footprints.

    Raises:
        InputFileError: the layer cannot be read, or the region holds no VENuS site.
        RegionError: the region cannot be loaded.
    """
    from shapely.ops import unary_union

    from harvest.regions import load_region

    path = Path(region).expanduser()
    if path.is_file():
        frame, column = _read_layer(path)
        if column is not None:
            return _sites_of(frame, column, path)
    area = load_region(region)
    request = SearchRequest(
        (Footprint("region", area.geometry),), (recipe.hr.collection,), *day_window(start, end)
    )
    found: dict[str, list[BaseGeometry]] = {}
    for scene in catalog.search(request, progress=progress).scenes:
        name = venus_site(scene)
        if name is not None:
            found.setdefault(name, []).append(scene.geometry)
    for name in found:
        check_id(name, field="VENuS site", where=f"the catalog's {recipe.hr.collection} items")
    sites = [Site(name, unary_union(found[name])) for name in sorted(found)]
    if not sites:
        raise InputFileError(
            f"no {recipe.hr.collection} scene with a site name in its id lies in region "
            f"{region} between {start} and {end}; give a polygon file of the sites (a site_id "
            "column) or a wider region or time window"
        )
    return sites


def day_window(start: date, end: date) -> tuple[datetime, datetime]:
    """``[start 00:00, end 23:59:59.999999]`` UTC: whole days, both included."""
    return (
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, 23, 59, 59, 999999, tzinfo=UTC),
    )


def search_sites(
    catalog: Catalog,
    sites: Sequence[Site],
    recipe: Recipe,
    start: date,
    end: date,
    *,
    progress: bool = False,
) -> SearchResult:
    """One search for the recipe's LR and HR scenes over the sites (scene cloud limit)."""
    first, last = day_window(start, end)
    request = SearchRequest(
        footprints=tuple(Footprint(s.name, s.geometry) for s in sites),
        collections=(recipe.lr.collection, recipe.hr.collection),
        start=first,
        end=last,
        max_cloud_pct=recipe.max_scene_cloud_pct,
    )
    return catalog.search(request, progress=progress)


def find_pairs(
    catalog: Catalog,
    sites: Sequence[Site],
    recipe: Recipe,
    start: date,
    end: date,
    *,
    progress: bool = False,
) -> list[SitePair]:
    """Same-UTC-day S2 / VENuS pairs over each site, one per VENuS scene (module doc, step 1)."""
    result = search_sites(catalog, sites, recipe, start, end, progress=progress)
    s2_scenes = result.by_collection(recipe.lr.collection)
    venus_scenes = result.by_collection(recipe.hr.collection)
    pairs = []
    for site in sites:
        s2_here = [s for s in s2_scenes if s.geometry.intersects(site.geometry)]
        for v in sorted(venus_scenes, key=lambda s: (s.datetime, s.item_id)):
            common = v.geometry.intersection(site.geometry)
            if common.is_empty:
                continue
            day = v.datetime.astimezone(UTC).date()
            same = [s for s in s2_here if s.datetime.astimezone(UTC).date() == day]
            if not same:
                continue
            best = max(same, key=lambda s: (s.geometry.intersection(common).area, s.item_id))
            if best.geometry.intersection(common).area > 0:
                pairs.append(SitePair(site, best, v))
    return pairs


def _project(geom: BaseGeometry, epsg: int) -> BaseGeometry:
    t = Transformer.from_crs(4326, epsg, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def pair_grids(pair: SitePair, patch_px: int = PATCH_PX[5]) -> tuple[ChipGrid, ...] | None:
    """The nested 5, 10 and 20 m grids over the pair's common area, or None when too small.

    The area (site ∩ both footprints) in the VENuS scene's UTM zone, shrunk to 20 m pixel edges.
    """
    epsg = int(pair.venus.epsg or pair.s2.epsg or 0)
    if not epsg:
        return None
    area = pair.site.geometry.intersection(pair.s2.geometry).intersection(pair.venus.geometry)
    if area.is_empty:
        return None
    minx, miny, maxx, maxy = _project(area, epsg).bounds
    left, right = math.ceil(minx / 20) * 20, math.floor(maxx / 20) * 20
    bottom, top = math.ceil(miny / 20) * 20, math.floor(maxy / 20) * 20
    if right - left < patch_px * 5 or top - bottom < patch_px * 5:
        return None
    return tuple(
        ChipGrid(
            epsg,
            Affine(g, 0, left, 0, -g, top),
            int((right - left) / g),
            int((top - bottom) / g),
            float(g),
        )  # fmt: skip
        for g in (5, 10, 20)
    )


def s2_validity(reader: Reader, scene: SceneRef, grid20: ChipGrid) -> np.ndarray:
    """Sentinel-2 pixels of the 20 m grid that SCL and every MAJA mask call usable.

    Each mask is read when the scene has it.
    """
    valid = mask_validity(reader, scene, grid20)
    if "SCL" in scene.assets:
        scl = reader.read_raw(scene.assets["SCL"], grid20)
        valid &= np.isfinite(scl) & ~np.isin(np.nan_to_num(scl), SCL_INVALID)
    return valid


def read_pair(
    s2_reader: Reader, venus_reader: Reader, pair: SitePair, grids: tuple[ChipGrid, ...]
) -> PairImages:
    """The pair's bands and validity on ``grids`` (module doc, steps 2-3)."""
    g5, g10, g20 = grids
    s2_10 = s2_reader.read(pair.s2.assets, S2_10M_BANDS, g10, "nearest").data.astype(np.float64)
    s2_20 = s2_reader.read(pair.s2.assets, S2_20M_BANDS, g20, "nearest").data.astype(np.float64)
    venus = venus_reader.read(pair.venus.assets, VENUS_BANDS, g5, "nearest").data
    venus = venus.astype(np.float64)
    valid_20 = np.all(np.isfinite(s2_20), axis=0) & s2_validity(s2_reader, pair.s2, g20)
    valid_10 = np.kron(valid_20, np.ones((2, 2), bool)) & np.all(np.isfinite(s2_10), axis=0)
    valid_5 = np.all(np.isfinite(venus), axis=0) & mask_validity(venus_reader, pair.venus, g5)
    return PairImages(s2_10, s2_20, venus, VENUS_BANDS, valid_10, valid_20, valid_5)


def status_path(out_dir: Path, kind: str, key: str) -> Path:
    """Where a site product keeps the outcome of one unit (``kind``: its folder, e.g. a pair)."""
    return out_dir / STATE_DIR / kind / f"{key}.json"


def read_status(out_dir: Path, kind: str, key: str) -> dict[str, Any] | None:
    """A unit's status file, or None (none yet, or unreadable: the unit is done again)."""
    try:
        data = json.loads(status_path(out_dir, kind, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") else None


def pair_seed(seed: int, pair_id: str) -> int:
    """The pair's seed: the run seed and the pair id (not the order or worker)."""
    return (seed * 1_000_003 + zlib.crc32(pair_id.encode())) % 2**32


def _one_pair(
    pair: SitePair,
    out_dir: Path,
    readers: ReaderSettings | None,
    seed: int,
    upsample: int,
    max_patches: int,
) -> dict[str, Any]:
    """Read, process and write one pair; its status record (written, or dropped and why)."""
    grids = pair_grids(pair)
    if grids is None:
        return {"status": "dropped", "reason": "the common area is smaller than one patch"}
    s2_reader = reader_for(pair.s2.assets, readers)
    venus_reader = reader_for(pair.venus.assets, readers)
    images = read_pair(s2_reader, venus_reader, pair, grids)
    rng = np.random.default_rng(pair_seed(seed, pair.pair_id))
    try:
        kept = process_pair(images, rng, upsample=upsample, max_patches=max_patches)
    except QaError as exc:
        return {"status": "dropped", "reason": str(exc).splitlines()[0]}
    if not kept.patches:
        return {"status": "dropped", "reason": "no patch within RMSE 0.02 of S2"}
    g5 = grids[0]
    info = PairInfo(
        site=pair.site.name,
        tile=pair.tile,
        date=pair.day,
        venus_id=pair.venus.item_id,
        s2_id=pair.s2.item_id,
        venus_zenith_deg=pair.venus.view_off_nadir_deg,
        crs=f"EPSG:{g5.epsg}",
        origin=(g5.transform.c, g5.transform.f),
    )
    write_pair(out_dir, info, kept)
    return {
        "status": "written",
        "nb_patches": len(kept.patches),
        "n_grid": kept.n_grid,
        "shift_px": [kept.shift.dx_px, kept.shift.dy_px],
        "sift_matches": kept.shift.n_matches,
        "mapping_10m": kept.mapping_10m.tolist(),
        "mapping_20m": kept.mapping_20m.tolist(),
    }


def run_sites(
    region: str | Path,
    *,
    recipe: Recipe,
    catalog: Catalog,
    readers: ReaderSettings | None,
    out_dir: Path,
    start: date,
    end: date,
    seed: int,
    upsample: int = 1,
    max_patches: int = MAX_PATCHES,
    progress: Progress | bool = NO_PROGRESS,
) -> Sen2venusSummary:
    """Steps 1-4 of the module doc for every site; pairs done before are skipped."""
    started = time.perf_counter()
    progress = Progress.of(progress)
    sites = resolve_sites(region, catalog, recipe, start, end, progress=progress.enabled)
    pairs = find_pairs(catalog, sites, recipe, start, end, progress=progress.enabled)
    written = before = patches = 0
    dropped: list[tuple[str, str]] = []
    with progress.bar("sen2venus", len(pairs)) as bar:
        for pair in pairs:
            pid = pair.pair_id
            status = read_status(out_dir, STATUS_DIR, pid)
            if status is not None:
                before += 1
            else:
                status = _one_pair(pair, out_dir, readers, seed, upsample, max_patches)
                atomic_write_json(status_path(out_dir, STATUS_DIR, pid), status, durable=False)
                written += status["status"] == "written"
            if status["status"] == "dropped":
                dropped.append((pid, str(status["reason"])))
            else:
                patches += int(status["nb_patches"])
            bar.advance()
    return Sen2venusSummary(
        len(sites), len(pairs), written, before, tuple(dropped), patches,
        time.perf_counter() - started,
    )  # fmt: skip
