"""The Sentinel-HR series of ``harvest build`` (``products: [sentinel-hr]``): sites to stacks.

Per site of the build's region (as for SEN2VENuS, :func:`resolve_sites`: a polygon layer of
sites, or the VENuS sites found in a plain region such as ``world-land``):

1. one search for Sentinel-2 and VENuS over the sites; per site the VENuS and S2 scenes (cloud
   cover within the recipe's limit), sorted by date;
2. **guides**: the VENuS series thinned to ``guide_revisit_days``
   (:func:`harvest.sentinel_hr.thin_guides`); **targets**: the other VENuS dates with an S2
   scene less than the recipe's ``pairing.max_dt_days`` away
   (:func:`harvest.sentinel_hr.target_pairs`);
3. one grid per site: the site ∩ every selected footprint, in the first guide's UTM zone, cut
   to 100 m edges (so the 5, 10, 12.5, 20 and 25 m grids all nest);
4. guides: VENuS B3 B4 B7 B11 at 5 m (the S2 B02 B03 B04 B08 equivalents), NaN where a VENuS
   mask (CLM, EDG, SAT, MG2) flags the pixel (the ``band`` coordinate names them as Sentinel-2
   bands, ``venus_band`` as VENuS's); targets: S2 10 m (NaN where SCL flags nodata, cloud,
   shadow or saturation, or a MAJA mask is set) registered onto VENuS (SIFT on blue, as
   SEN2VENuS), mapped onto VENuS's radiometry by least squares with intercept, resampled to
   ``5 * ratio`` m, with its VENuS 5 m reference;
5. written as two Zarr stores per site (xarray, CF-style: a ``time`` coordinate, projected
   ``x``/``y`` pixel centres in metres, a ``spatial_ref`` grid mapping, int16 reflectance with
   ``scale_factor`` 1e-4 and ``_FillValue`` -32768 where a pixel is invalid)::

       OUT/SITE/guides.zarr    reflectance (time, band, y, x)          5 m
       OUT/SITE/targets.zarr   lr (time, band, y_lr, x_lr)             5 * ratio m
                               reference (time, band, y, x)            5 m
                               shift_px (time, axis), mapping (time, term, band)

Each store is written under a temporary name and renamed into place. A site's outcome is kept
in ``OUT/.harvest/sentinel-hr/SITE.json`` with the scenes it used: a later run skips the site
when its selection is unchanged and rewrites both stores when the series grew (``harvest
extend``).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from scipy import ndimage

from harvest.backends.base import Catalog, SceneRef
from harvest.backends.registry import ReaderSettings, reader_for
from harvest.diskio import temp_name
from harvest.errors import QaError
from harvest.grid import ChipGrid
from harvest.progress import NO_PROGRESS, Progress
from harvest.qa import ShiftEstimate, correct_shift
from harvest.recipes import Recipe
from harvest.sen2venus import S2_MTF_AT_NYQUIST, mtf_downsample, register_blue
from harvest.sentinel_hr import (
    apply_mapping,
    fit_masked_mapping,
    resample,
    target_pairs,
    thin_guides,
)
from harvest.stages._sen2venus import (
    Site,
    _project,
    mask_validity,
    read_sites,
    read_status,
    resolve_sites,
    s2_validity,
    search_sites,
    status_path,
)
from harvest.store import atomic_write_json

STATUS_DIR = "sentinel-hr"
"""Under the state folder (``.harvest``): one status file per site."""
S2_BANDS = ("B02", "B03", "B04", "B08")
VENUS_BANDS = ("B3", "B4", "B7", "B11")
GUIDES_STORE = "guides.zarr"
TARGETS_STORE = "targets.zarr"
GRID_SNAP_M = 100
SCALE = 1e-4
FILL = -32768
CHUNK_PX = 512
MIN_LR_PX = 8
"""The common area must hold at least this many LR pixels each way."""

__all__ = ["SentinelHrSummary", "read_sites", "run_sites", "select_dates"]


@dataclass(frozen=True)
class SentinelHrSummary:
    """What :func:`run_sites` did."""

    n_sites: int
    n_written: int
    n_done_before: int
    n_guides: int
    n_targets: int
    dropped: tuple[tuple[str, str], ...]
    seconds: float

    def line(self) -> str:
        """One line for the build's summary."""
        return (
            f"{self.n_sites} sites: {self.n_written} written, {self.n_done_before} done before "
            f"({self.n_guides} guide and {self.n_targets} target dates), "
            f"{len(self.dropped)} dropped"
        )


def select_dates(
    s2: Sequence[SceneRef], venus: Sequence[SceneRef], revisit_days: float, max_dt_hours: float
) -> tuple[list[SceneRef], list[tuple[SceneRef, SceneRef]]]:
    """A site's guides and ``(S2, VENuS)`` targets (module doc, step 2)."""
    venus = sorted(venus, key=lambda v: (v.datetime, v.item_id))
    s2 = sorted(s2, key=lambda s: (s.datetime, s.item_id))
    g_idx = thin_guides([v.datetime for v in venus], revisit_days)
    t_idx = target_pairs(
        [s.datetime for s in s2], [v.datetime for v in venus],
        max_dt_hours=max_dt_hours, exclude=g_idx,
    )  # fmt: skip
    return [venus[i] for i in g_idx], [(s2[a], venus[b]) for a, b in t_idx]


def _snap(lo: float, hi: float) -> tuple[int, int]:
    return math.ceil(lo / GRID_SNAP_M) * GRID_SNAP_M, math.floor(hi / GRID_SNAP_M) * GRID_SNAP_M


def site_grid(site: Site, scenes: Sequence[SceneRef], epsg: int, ratio: float) -> ChipGrid | None:
    """The 5 m grid over the site ∩ every scene's footprint, or None when too small."""
    area = site.geometry
    for s in scenes:
        area = area.intersection(s.geometry)
    if area.is_empty:
        return None
    minx, miny, maxx, maxy = _project(area, epsg).bounds
    left, right = _snap(minx, maxx)
    bottom, top = _snap(miny, maxy)
    least = MIN_LR_PX * 5 * ratio
    if right - left < least or top - bottom < least:
        return None
    return ChipGrid(
        epsg, Affine(5, 0, left, 0, -5, top), (right - left) // 5, (top - bottom) // 5, 5.0
    )


def _scaled(grid: ChipGrid, gsd: float) -> ChipGrid:
    """The grid with ``gsd`` pixels over the same top-left corner, covering at least as much."""
    t = grid.transform
    size = abs(t.a)
    return ChipGrid(
        grid.epsg, Affine(gsd, 0, t.c, 0, -gsd, t.f),
        math.ceil(grid.width * size / gsd - 1e-9), math.ceil(grid.height * size / gsd - 1e-9),
        gsd,
    )  # fmt: skip


def _read_venus(scene: SceneRef, grid: ChipGrid, readers: ReaderSettings | None) -> np.ndarray:
    """VENuS B3 B4 B7 B11 on ``grid``, NaN where a mask flags the pixel."""
    reader = reader_for(scene.assets, readers)
    data = reader.read(scene.assets, VENUS_BANDS, grid, "nearest").data.astype(np.float64)
    valid = np.all(np.isfinite(data), axis=0) & mask_validity(reader, scene, grid)
    return np.where(valid, data, np.nan)


def _read_s2(scene: SceneRef, grid10: ChipGrid, readers: ReaderSettings | None) -> np.ndarray:
    """S2 B02 B03 B04 B08 on the 10 m grid, NaN where SCL or a MAJA mask (20 m) says invalid."""
    reader = reader_for(scene.assets, readers)
    data = reader.read(scene.assets, S2_BANDS, grid10, "nearest").data.astype(np.float64)
    valid = np.all(np.isfinite(data), axis=0)
    ok20 = s2_validity(reader, scene, _scaled(grid10, 20.0))
    valid &= np.kron(ok20, np.ones((2, 2), bool))[: valid.shape[0], : valid.shape[1]]
    return np.where(valid, data, np.nan)


def make_target(
    s2: np.ndarray, venus: np.ndarray, ratio: float, upsample: int = 1
) -> tuple[np.ndarray, ShiftEstimate, np.ndarray]:
    """One target date: S2 [4, H, W] at 10 m and VENuS [4, 2H, 2W] at 5 m (NaN invalid).

    Returns:
        The LR at ``5 * ratio`` m [4, h, w] (VENuS radiometry, NaN where S2 was invalid), the
        S2-to-VENuS shift (10 m px) and the mapping ``W`` [5, 4] (S2 bands + 1 -> VENuS).

    Raises:
        QaError: registration failed or too few valid pixels to fit the mapping.
    """
    valid10 = np.all(np.isfinite(s2), axis=0)
    valid5 = np.all(np.isfinite(venus), axis=0)
    shift = register_blue(
        np.nan_to_num(s2[0]), np.nan_to_num(venus[0]), valid10, valid5, upsample=upsample
    )
    if not shift.ok:
        raise QaError(f"registration failed ({shift.n_matches} SIFT matches)")
    moved = correct_shift(np.where(valid10, s2, 0.0), shift, order=3)
    # Pixels whose bicubic support touched an invalid (or outside) S2 pixel are invalid too.
    reach = correct_shift(valid10.astype(np.float64), shift, order=1)
    ok = ndimage.minimum_filter(reach, size=5, mode="nearest") > 0.999
    v10 = mtf_downsample(np.nan_to_num(venus), 2)
    v_ok = mtf_downsample(valid5.astype(np.float64), 2) > 0.999
    w = fit_masked_mapping(moved, v10, ok & v_ok)
    mapped = np.where(ok, apply_mapping(moved, w), np.nan)
    lr = resample(mapped, 10.0, 5.0 * ratio, in_mtf=S2_MTF_AT_NYQUIST)
    return lr, shift, w


def _time(scene: SceneRef) -> np.datetime64:
    return np.datetime64(scene.datetime.astimezone(UTC).replace(tzinfo=None), "ns")


def _coords(grid: ChipGrid, gsd: float, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    t = grid.transform
    return t.f - (np.arange(h) + 0.5) * gsd, t.c + (np.arange(w) + 0.5) * gsd


def _dataset(variables: dict[str, Any], coords: dict[str, Any], grid: ChipGrid) -> Any:
    """A CF-style dataset: projected coordinates, a grid mapping, reflectance attributes."""
    import xarray as xr
    from pyproj import CRS

    ds = xr.Dataset(variables, coords=coords)
    crs = CRS.from_epsg(grid.epsg)
    ds["spatial_ref"] = xr.DataArray(0, attrs={**crs.to_cf(), "crs_wkt": crs.to_wkt()})
    for name in ("x", "y", "x_lr", "y_lr"):
        if name in ds.coords:
            axis = name[0]
            ds[name].attrs.update(
                standard_name=f"projection_{axis}_coordinate",
                long_name=f"{axis} of the pixel centre",
                units="m",
                axis=axis.upper(),
            )
    ds["time"].attrs.update(standard_name="time", long_name="acquisition time (UTC)")
    for var_name, var in ds.data_vars.items():
        dims = set(var.dims)
        if {"y", "x"} <= dims or {"y_lr", "x_lr"} <= dims:
            var.attrs.update(
                grid_mapping="spatial_ref",
                units="1",
                standard_name="surface_reflectance",
                long_name=f"{var_name} surface reflectance",
            )
    return ds


def _store_attrs(title: str, grid: ChipGrid, **more: Any) -> dict[str, Any]:
    """A store's global attributes (CF conventions, title, CRS, provenance)."""
    from pyproj import CRS

    return {
        "Conventions": "CF-1.8",
        "title": title,
        "crs_wkt": CRS.from_epsg(grid.epsg).to_wkt(),
        **more,
    }


class _StoreWriter:
    """One Zarr store written a time step at a time under a temporary name, then renamed.

    Each step is appended along ``time`` (memory holds one date, whatever the series' length);
    reflectance is packed as CF int16 in chunks of one date and 512 x 512 pixels.
    :meth:`commit` sets the store's attributes, consolidates its metadata and renames it into
    place (an older store is moved aside, then removed); :meth:`discard` removes what is left.
    """

    def __init__(self, path: Path, packed: Sequence[str]) -> None:
        self.path = path
        self.tmp = temp_name(path)
        self.packed = tuple(packed)
        self.steps = 0

    def append(self, ds: Any) -> None:
        """Write one time step (a dataset whose ``time`` has length 1)."""
        if self.steps == 0:
            encoding = {
                n: {
                    "dtype": "int16",
                    "scale_factor": SCALE,
                    "_FillValue": FILL,
                    "chunks": (1, ds[n].sizes["band"], CHUNK_PX, CHUNK_PX),
                }
                for n in self.packed
            }
            ds.to_zarr(self.tmp, mode="w", zarr_format=2, consolidated=False, encoding=encoding)
        else:
            ds.to_zarr(self.tmp, append_dim="time", zarr_format=2, consolidated=False)
        self.steps += 1

    def commit(self, attrs: dict[str, Any]) -> None:
        """Set ``attrs``, consolidate the metadata, rename into place."""
        import zarr

        group = zarr.open_group(str(self.tmp), mode="a", zarr_format=2)
        group.attrs.update(attrs)
        zarr.consolidate_metadata(str(self.tmp), zarr_format=2)
        old = temp_name(self.path)
        try:
            if self.path.exists():
                self.path.rename(old)
            self.tmp.rename(self.path)
        finally:
            if old.exists():
                shutil.rmtree(old)

    def discard(self) -> None:
        """Remove the temporary store, if any is left."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp)


def _site_stores(
    site: Site,
    guides: Sequence[SceneRef],
    targets: Sequence[tuple[SceneRef, SceneRef]],
    out_dir: Path,
    *,
    ratio: float,
    upsample: int,
    readers: ReaderSettings | None,
) -> dict[str, Any]:
    """Read, process and write one site's two stores; its status record (module doc, 3-5).

    One date at a time: each target and each guide is read, processed and appended to its
    store before the next one is read.
    """
    # The grid lies in every VENuS footprint; S2 missing over part of it is invalid (NaN).
    scenes = [*guides, *(v for _, v in targets)]
    epsg = int(guides[0].epsg or targets[0][0].epsg or 0)
    grid = site_grid(site, scenes, epsg, ratio) if epsg else None
    if grid is None:
        return {"status": "dropped", "reason": "the common area of the series is too small"}
    g10 = _scaled(grid, 10.0)
    gsd_lr = 5.0 * ratio
    y, x = _coords(grid, 5.0, grid.height, grid.width)
    # Bands are named as Sentinel-2's (so NDVI finds B04 and B08); VENuS's own names alongside.
    bands = {"band": list(S2_BANDS), "venus_band": ("band", list(VENUS_BANDS))}
    site_dir = out_dir / site.name
    site_dir.mkdir(parents=True, exist_ok=True)
    target_store = _StoreWriter(site_dir / TARGETS_STORE, ("lr", "reference"))
    guide_store = _StoreWriter(site_dir / GUIDES_STORE, ("reflectance",))
    shifts: list[list[float]] = []
    kept: list[tuple[SceneRef, SceneRef]] = []
    failed: list[str] = []
    try:
        for s2_scene, v_scene in targets:
            venus = _read_venus(v_scene, grid, readers)
            s2 = _read_s2(s2_scene, g10, readers)
            try:
                lr, shift, w = make_target(s2, venus, ratio, upsample)
            except QaError as exc:
                failed.append(f"{v_scene.item_id}: {str(exc).splitlines()[0]}")
                continue
            y_lr, x_lr = _coords(grid, gsd_lr, *lr.shape[-2:])
            step = _dataset(
                {
                    "lr": (("time", "band", "y_lr", "x_lr"), lr[None].astype(np.float32)),
                    "reference": (("time", "band", "y", "x"), venus[None].astype(np.float32)),
                    "shift_px": (("time", "axis"), np.array([[shift.dx_px, shift.dy_px]])),
                    "mapping": (("time", "term", "band"), w[None]),
                },
                {
                    "time": [_time(v_scene)],
                    **bands,
                    "y": y,
                    "x": x,
                    "y_lr": y_lr,
                    "x_lr": x_lr,
                    "axis": ["dx", "dy"],
                    "term": [*S2_BANDS, "intercept"],
                },  # fmt: skip
                grid,
            )
            step["shift_px"].attrs.update(
                long_name="Sentinel-2 shift onto VENuS (10 m pixels; dx east, dy south)",
                units="1",
            )
            step["mapping"].attrs.update(long_name="least squares S2 -> VENuS (last term: 1)")
            target_store.append(step)
            shifts.append([shift.dx_px, shift.dy_px])
            kept.append((s2_scene, v_scene))
        if not kept:
            return {"status": "dropped", "reason": f"no target date kept ({'; '.join(failed)})"}
        for g in guides:
            cube = _read_venus(g, grid, readers)[None].astype(np.float32)
            guide_store.append(
                _dataset(
                    {"reflectance": (("time", "band", "y", "x"), cube)},
                    {"time": [_time(g)], **bands, "y": y, "x": x},
                    grid,
                )
            )
        guide_store.commit(
            _store_attrs(
                f"Sentinel-HR guide series of site {site.name}: VENuS 5 m",
                grid,
                site=site.name,
                gsd_m=5.0,
                venus_products=[g.item_id for g in guides],
            )
        )
        target_store.commit(
            _store_attrs(
                f"Sentinel-HR targets of site {site.name}: Sentinel-2 at {gsd_lr:g} m mapped "
                "onto VENuS, and the VENuS 5 m reference",
                grid,
                site=site.name,
                ratio=ratio,
                gsd_m=5.0,
                lr_gsd_m=gsd_lr,
                sentinel2_products=[s.item_id for s, _ in kept],
                venus_products=[v.item_id for _, v in kept],
            )
        )
    finally:
        target_store.discard()
        guide_store.discard()
    return {
        "status": "written",
        "guides": [g.item_id for g in guides],
        "targets": [[s.item_id, v.item_id] for s, v in kept],
        "failed_targets": failed,
        "shift_px": shifts,
        "grid": {
            "epsg": grid.epsg,
            "transform": list(grid.transform_tuple),
            "width": grid.width,
            "height": grid.height,
        },
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
    ratio: float,
    guide_revisit_days: float,
    upsample: int = 1,
    progress: Progress | bool = NO_PROGRESS,
) -> SentinelHrSummary:
    """Steps 1-5 of the module doc for every site; sites whose selection is unchanged skipped."""
    started = time.perf_counter()
    progress = Progress.of(progress)
    sites = resolve_sites(region, catalog, recipe, start, end, progress=progress.enabled)
    result = search_sites(catalog, sites, recipe, start, end, progress=progress.enabled)
    s2_all = result.by_collection(recipe.lr.collection)
    venus_all = result.by_collection(recipe.hr.collection)
    max_dt_hours = recipe.pairing.max_dt_days * 24.0
    written = before = n_guides = n_targets = 0
    dropped: list[tuple[str, str]] = []
    with progress.bar("sentinel-hr", len(sites)) as bar:
        for site in sites:
            guides, targets = select_dates(
                [s for s in s2_all if s.geometry.intersects(site.geometry)],
                [v for v in venus_all if v.geometry.intersects(site.geometry)],
                guide_revisit_days,
                max_dt_hours,
            )
            selection = {
                "guides": [g.item_id for g in guides],
                "candidates": [[s.item_id, v.item_id] for s, v in targets],
            }
            old = read_status(out_dir, STATUS_DIR, site.name)
            if old is not None and old.get("selection") == selection:
                before += 1
                status = old
            else:
                if not guides:
                    status = {"status": "dropped", "reason": "no VENuS scene over the site"}
                elif not targets:
                    status = {
                        "status": "dropped",
                        "reason": "no target date (a VENuS date besides the guides with a "
                        "Sentinel-2 scene less than max_dt_days away)",
                    }
                else:
                    status = _site_stores(
                        site, guides, targets, out_dir,
                        ratio=ratio, upsample=upsample, readers=readers,
                    )  # fmt: skip
                    written += status["status"] == "written"
                if status["status"] != "written" and old and old.get("status") == "written":
                    # A grown series that no longer makes stores keeps the ones it had.
                    status = {**old, "not_updated": status["reason"]}
                status["selection"] = selection
                atomic_write_json(
                    status_path(out_dir, STATUS_DIR, site.name), status, durable=False
                )
            if status["status"] == "written":
                n_guides += len(status["guides"])
                n_targets += len(status["targets"])
            else:
                dropped.append((site.name, str(status["reason"])))
            bar.advance()
    return SentinelHrSummary(
        len(sites), written, before, n_guides, n_targets, tuple(dropped),
        time.perf_counter() - started,
    )  # fmt: skip
