"""The GDAL reader: windowed COG reads with rasterio, a :class:`~harvest.backends.base.Reader`.

The registry (:func:`harvest.backends.registry.reader_for`) picks it for every href that is not
``ee://``: local files, http(s) URLs and ``/vsi*`` paths, as the STAC API and stac-geoparquet
backends give them.

A read asks for some bands of one scene on exactly one :class:`~harvest.grid.ChipGrid`. The
rasterio reader warps each source file onto that grid with a ``WarpedVRT`` (so any source CRS,
pixel size or alignment lands on the chip's pixels):

* the LR source (Sentinel-2 10 m) sits on the chip grid already: ``nearest`` is a plain window read
  (20 m bands repeated 2 x 2), with the ``WarpedVRT`` only for grids that do not nest;
* the HR source (NAIP 1 m or 0.6 m) goes to 2.5 m with an exact area average (each output pixel
  weighs the fractional source pixels it covers): separable overlap weights when the source is
  north-up in the chip's CRS and covers the chip (:mod:`harvest.backends.gdal.area_average`:
  periodic taps applied as strided slices for small rational pixel-size ratios, exact integer
  taps for 8/16-bit sources; a sparse product otherwise), else GDAL's ``average`` in a float32
  ``WarpedVRT`` (the two agree to float32 rounding, tested);
* category bands (Sentinel-2 SCL at 20 m) always use ``nearest``.

Numbers become float32 reflectance with each asset's ``scale`` and ``offset``; nodata (declared
nodata, or outside the source) becomes NaN and is also returned as an ``invalid`` mask.

Decided by measurement (bench/bench_fetch.py, docs/benchmarks.md): for one chip (LR 4 bands +
one NAIP band) this reader took 57 ms, ``odc.stac.load`` 76 ms reading NAIP from an overview by
default (values off the exact area average by up to 0.1) and 100 ms without overviews, so
harvest uses rasterio directly.

Remote COGs: :func:`~harvest.backends.gdal.options.gdal_env_options` is the one place for the
GDAL settings that matter (no directory listing on open, merged range requests, HTTP/2
multiplexing, a VSI cache, GDAL's own HTTP retries); :func:`gdal_env` wraps them in a
``rasterio.Env``. The fetch stage passes the same options to every Dask worker (in its
:class:`~harvest.backends.registry.ReaderSettings`). Transient errors (timeouts, 5xx, resets) are
retried with bounded exponential backoff by :func:`~harvest.backends.gdal.retry.with_retries`;
anything else (a missing, corrupt or truncated file) raises
:class:`~harvest.errors.AssetReadError` naming the file. Hrefs are signed by the ``sign``
callable right before each open, so tables keep unsigned hrefs.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT

from harvest.backends.base import (
    AssetRef,
    ChipRead,
    ResamplingName,
    Signer,
    band_refs,
    physical_chip,
)
from harvest.backends.gdal.area_average import AxisPlan, area_average_raw, axis_plan
from harvest.backends.gdal.options import gdal_env_options
from harvest.backends.gdal.retry import ReadRetryPolicy, with_retries
from harvest.backends.pool import LazyThreadPool, PicklesFields
from harvest.errors import AssetReadError
from harvest.grid import ChipGrid


def gdal_env(options: Mapping[str, Any] | None = None) -> Any:
    """A ``rasterio.Env`` with ``options`` (None: :func:`.options.gdal_env_options`)."""
    return rasterio.Env(**dict(gdal_env_options() if options is None else options))


class _DatasetCache:
    """Open datasets kept per thread (rasterio handles must not be shared between threads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._local = threading.local()

    def _entries(self) -> OrderedDict[str, Any]:
        entries = getattr(self._local, "entries", None)
        if entries is None:
            entries = OrderedDict()
            self._local.entries = entries
        return entries

    def get(self, href: str, opener: Callable[[str], Any]) -> Any:
        entries = self._entries()
        ds = entries.get(href)
        if ds is not None and not ds.closed:
            entries.move_to_end(href)
            return ds
        ds = opener(href)
        entries[href] = ds
        while len(entries) > self.size:
            _, old = entries.popitem(last=False)
            old.close()
        return ds

    def drop(self, href: str) -> None:
        ds = self._entries().pop(href, None)
        if ds is not None:
            ds.close()

    def clear(self) -> None:
        entries = self._entries()
        while entries:
            entries.popitem()[1].close()


@dataclass
class RasterioReader(PicklesFields):
    """The rasterio reader (see the module docstring).

    Args:
        sign: Href signer applied right before opening (None: hrefs used as they are).
        retry: Backoff policy for transient errors.
        env_options: GDAL settings (default
            :func:`~harvest.backends.gdal.options.gdal_env_options`).
        threads: Files of one scene read in parallel when they are remote (GDAL releases the
            GIL while it waits on the network). Local files are read one after another: a
            121 px window decodes in about 0.1 ms, less than a hand-off to a pool thread
            (4 threads made the LR read of a local chip 3x slower).
        cache_size: Open datasets kept per thread; chips of one scene reuse them.
        fast_average: Area-average with separable weights when the source is north-up in
            the chip's CRS and covers the chip (same values as GDAL's ``average`` to float32
            rounding, 8 ms instead of about 95 ms for a 1 m NAIP chip); otherwise, and when
            False, a ``WarpedVRT`` does it.
        fast_nearest: Read ``nearest`` as a plain window when the chip's pixels nest in the
            source's (same CRS, north-up, source pixel an integer number of chip pixels on
            the same edges, chip inside): the same values as the ``WarpedVRT`` (tested),
            0.3 ms instead of 1.8 ms for the four 10 m bands of an LR chip.
        drivers: The only GDAL drivers files may be opened with (None: any). The fetch stage
            passes :data:`harvest.hrefs.REMOTE_RASTER_DRIVERS` for a remote catalog, so a
            VRT (or a WMS or GTI description) served as its file does not open.
    """

    sign: Signer | None = None
    retry: ReadRetryPolicy = field(default_factory=ReadRetryPolicy)
    env_options: Mapping[str, Any] | None = None
    threads: int = 4
    cache_size: int = 32
    fast_average: bool = True
    fast_nearest: bool = True
    drivers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self._cache = _DatasetCache(self.cache_size)
        self._pool = LazyThreadPool(self.threads, "harvest-read")

    def close(self) -> None:
        """Close the datasets this thread holds and stop the read pool."""
        self._cache.clear()
        self._pool.close()

    def _open(self, href: str) -> Any:
        path = self.sign(href) if self.sign else href
        if self.drivers is None:
            return rasterio.open(path)
        # rasterio.open takes one driver name (its docs promise a list; 1.4 refuses one): try
        # each. A file no allowed driver recognises fails GDAL's quick format test only.
        for driver in self.drivers:
            try:
                ds = rasterio.open(path, driver=driver)
            except RasterioIOError as exc:
                if "not recognized" in str(exc) or "not recognised" in str(exc):
                    continue
                raise
            if ds.driver != driver:  # never seen; keeps the promise if GDAL falls back
                ds.close()
                break
            return ds
        raise AssetReadError(
            href,
            f"it is not a {' or '.join(self.drivers)} file: a remote catalog's files are opened "
            "with these GDAL drivers only (VRTs are not followed)",
        )

    def _warp(
        self,
        href: str,
        indexes: list[int],
        grid: ChipGrid,
        resampling: ResamplingName,
        src_nodata: float | None,
    ) -> npt.NDArray[np.float32]:
        # rasterio is imported at module level: two read threads importing its submodules at
        # once in a fresh worker process can see a half-initialised module.
        def attempt() -> npt.NDArray[np.float32]:
            ds = self._cache.get(href, self._open)
            try:
                nodata = src_nodata if src_nodata is not None else ds.nodata
                fast = None
                if resampling == "average" and self.fast_average:
                    fast = _area_average_aligned(ds, indexes, grid, nodata)
                elif resampling == "nearest" and self.fast_nearest:
                    fast = _nearest_aligned(ds, indexes, grid, nodata)
                if fast is not None:
                    return fast
                with WarpedVRT(
                    ds,
                    crs=CRS.from_epsg(grid.epsg),
                    transform=grid.transform,
                    width=grid.width,
                    height=grid.height,
                    resampling=Resampling[resampling],
                    dtype="float32",
                    src_nodata=nodata,
                    nodata=np.nan,
                ) as vrt:
                    out: npt.NDArray[np.float32] = vrt.read(indexes)
                return out
            except Exception:
                # A failed handle may hold a half-read state: reopen on the next try.
                self._cache.drop(href)
                raise

        with gdal_env(self.env_options):
            return with_retries(attempt, href, self.retry)

    def read(
        self,
        assets: Mapping[str, AssetRef],
        bands: Sequence[str],
        grid: ChipGrid,
        resampling: ResamplingName = "nearest",
    ) -> ChipRead:
        """See :meth:`harvest.backends.base.Reader.read`; bands of one file: one request."""
        started = time.perf_counter()
        refs = band_refs(assets, bands)
        # One warp per file: NAIP keeps its four bands in one COG.
        files: dict[tuple[str, float | None], list[int]] = {}
        for i, ref in enumerate(refs):
            files.setdefault((ref.href, ref.nodata), []).append(i)

        def read_file(key: tuple[str, float | None]) -> npt.NDArray[np.float32]:
            href, nodata = key
            indexes = [refs[i].band_index for i in files[key]]
            return self._warp(href, indexes, grid, resampling, nodata)

        keys = list(files)
        if any(is_remote(href) for href, _ in keys):
            arrays = self._pool.map(read_file, keys)
        else:
            arrays = [read_file(key) for key in keys]
        data = np.empty((len(refs), grid.height, grid.width), dtype=np.float32)
        for key, arr in zip(keys, arrays, strict=True):
            for j, i in enumerate(files[key]):
                data[i] = arr[j]
        return physical_chip(data, refs, grid, bands, started)

    def read_raw(self, asset: AssetRef, grid: ChipGrid) -> npt.NDArray[np.float32]:
        """See :meth:`harvest.backends.base.Reader.read_raw`."""
        return self._warp(asset.href, [asset.band_index], grid, "nearest", asset.nodata)[0]


def is_remote(href: str) -> bool:
    """Whether GDAL reaches ``href`` over a network (URL or ``/vsi*`` network file system)."""
    h = href.lower()
    if h.startswith("file://"):
        return False
    return "://" in h or (h.startswith("/vsi") and not h.startswith("/vsimem/"))


def _north_up_in(ds: Any, grid: ChipGrid) -> bool:
    """Whether the source is north-up (no rotation, rows southward) in the chip's CRS."""
    t = ds.transform
    if ds.crs is None or ds.crs.to_epsg() != grid.epsg:
        return False
    return t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0


def _simple_mask(ds: Any, nodata: float | None) -> bool:
    """Whether validity is the nodata value alone (no mask band, alpha or per-dataset mask).

    The fast paths decide validity from ``nodata``; a source with a mask band goes through
    the ``WarpedVRT``, which honours it.
    """
    if nodata is not None:
        return True
    from rasterio.enums import MaskFlags

    return all(flags == [MaskFlags.all_valid] for flags in ds.mask_flag_enums)


def _nearest_aligned(
    ds: Any, indexes: list[int], grid: ChipGrid, nodata: float | None
) -> npt.NDArray[np.float32] | None:
    """Nearest-neighbour values on ``grid`` by a plain windowed read, when that is exact.

    Exact when the source is north-up in the chip's CRS, its pixel is ``k`` chip pixels wide
    and tall (``k`` a positive integer: the 10 m bands on a 10 m chip, 20 m SCL on it), chip
    pixel edges lie on the source's ``1/k`` sub-grid and the chip lies inside the source: every
    chip pixel centre then falls strictly inside one source pixel, the one GDAL's nearest
    picks. Returns None otherwise (the caller warps).
    """
    t, g = ds.transform, grid.transform
    if not _north_up_in(ds, grid) or g.b != 0 or g.d != 0 or g.e >= 0:
        return None
    if not _simple_mask(ds, nodata):
        return None
    kx, ky = t.a / g.a, t.e / g.e
    k = round(kx)
    if k < 1 or abs(kx - k) > 1e-9 * k or abs(ky - k) > 1e-9 * k:
        return None
    # The chip's first pixel, counted in chip pixels from the source's corner.
    ox, oy = (g.c - t.c) / g.a, (g.f - t.f) / g.e
    ix, iy = round(ox), round(oy)
    if abs(ox - ix) > 1e-6 or abs(oy - iy) > 1e-6:
        return None
    c0, r0 = ix // k, iy // k
    c1, r1 = (ix + grid.width - 1) // k + 1, (iy + grid.height - 1) // k + 1
    if c0 < 0 or r0 < 0 or c1 > ds.width or r1 > ds.height:
        return None
    raw = ds.read(indexes, window=rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0))
    if k > 1:
        sx, sy = ix - c0 * k, iy - r0 * k
        raw = raw.repeat(k, axis=1).repeat(k, axis=2)[
            :, sy : sy + grid.height, sx : sx + grid.width
        ]
    out = raw.astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        out[raw == nodata] = np.nan
    return out


def _area_average_aligned(
    ds: Any, indexes: list[int], grid: ChipGrid, nodata: float | None
) -> npt.NDArray[np.float32] | None:
    """Exact area average onto ``grid`` when the source is north-up in the same CRS.

    Returns None when the fast path does not apply (other CRS, rotation, chip not inside);
    otherwise reads the covering window (:func:`aligned_window`) and averages it
    (:func:`~harvest.backends.gdal.area_average.area_average_raw`).
    """
    if not _simple_mask(ds, nodata):
        return None
    found = aligned_window(ds, grid)
    if found is None:
        return None
    window, plan_r, plan_c = found
    return area_average_raw(ds.read(indexes, window=window), plan_r, plan_c, nodata)


def aligned_window(ds: Any, grid: ChipGrid) -> tuple[Any, AxisPlan, AxisPlan] | None:
    """The source window under ``grid`` and the row / column weights onto it, or None.

    None when the source is not north-up in the chip's CRS or does not cover the chip.
    """
    from harvest.grid import source_window

    t = ds.transform
    if not _north_up_in(ds, grid):
        return None
    win = source_window(grid, t, (ds.height, ds.width), margin_px=0)
    if not win.inside or win.empty:
        return None
    window = rasterio.windows.Window(
        win.read_col_off, win.read_row_off, win.read_width, win.read_height
    )
    x0 = t.c + t.a * win.read_col_off
    y0 = t.f + t.e * win.read_row_off
    plan_c = axis_plan(grid.transform.c - x0, grid.gsd_m, grid.width, t.a, win.read_width)
    plan_r = axis_plan(grid.transform.f - y0, -grid.gsd_m, grid.height, t.e, win.read_height)
    return window, plan_r, plan_c
