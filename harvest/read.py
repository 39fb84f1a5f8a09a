"""Pixel reads: a :class:`Reader` protocol and the rasterio reader of windowed COG reads.

A read asks for some bands of one scene on exactly one :class:`~harvest.grid.ChipGrid`. The
rasterio reader warps each source file onto that grid with a ``WarpedVRT`` (so any source CRS,
pixel size or alignment lands on the chip's pixels):

* the LR source (Sentinel-2 10 m) sits on the chip grid already: ``nearest`` is a plain window read
  (20 m bands repeated 2 x 2), with the ``WarpedVRT`` only for grids that do not nest;
* the HR source (NAIP 1 m or 0.6 m) goes to 2.5 m with an exact area average (each output pixel
  weighs the fractional source pixels it covers): separable overlap weights when the source is
  north-up in the chip's CRS and covers the chip (periodic taps applied as strided slices for
  small rational pixel-size ratios, exact integer taps for 8/16-bit sources; a sparse product
  otherwise), else GDAL's ``average`` in a float32 ``WarpedVRT`` (the two agree to float32
  rounding, tested);
* category bands (Sentinel-2 SCL at 20 m) always use ``nearest``.

Numbers become float32 reflectance with each asset's ``scale`` and ``offset``; nodata (declared
nodata, or outside the source) becomes NaN and is also returned as an ``invalid`` mask.

Decided by measurement (bench/bench_fetch.py, docs/benchmarks.md): for one chip (LR 4 bands +
one NAIP band) this reader took 57 ms, ``odc.stac.load`` 76 ms reading NAIP from an overview by
default (values off the exact area average by up to 0.1) and 100 ms without overviews, so
harvest uses rasterio directly.

Remote COGs: :func:`gdal_env_options` is the one place for the GDAL settings that matter (no
directory listing on open, merged range requests, HTTP/2 multiplexing, a VSI cache, GDAL's own
HTTP retries); :func:`gdal_env` wraps them in a ``rasterio.Env``. The fetch stage passes the
same options to every Dask worker. Transient errors (timeouts, 5xx, resets) are retried with
bounded exponential backoff by :func:`with_retries`; anything else (a missing, corrupt or
truncated file) raises :class:`~harvest.errors.AssetReadError` naming the file. Hrefs are signed
by the ``sign`` callable right before each open, so tables keep unsigned hrefs.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT

from harvest.catalog.base import AssetRef
from harvest.errors import AssetReadError, ReadError
from harvest.grid import ChipGrid

Signer = Callable[[str], str]
ResamplingName = Literal["nearest", "average", "bilinear", "cubic"]
T = TypeVar("T")

GDAL_REMOTE_OPTIONS: dict[str, Any] = {
    # Opening a COG must not list its folder (one extra request per file on S3/Azure).
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Neighbouring tiles of one window come in one range request.
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2",
    # Keep headers and recently read tiles of open files: chips of one scene share them.
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": 64 * 1024 * 1024,
    # Decoded-block cache, in bytes: rasterio hands an integer to GDALSetCacheMax64, so a bare
    # 256 meant 256 bytes (no cache: neighbouring chips of a scene decoded shared tiles again).
    "GDAL_CACHEMAX": 256 * 1024 * 1024,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.jp2,.vrt",
    # GDAL retries 429/5xx itself before harvest's own bounded backoff sees the error.
    "GDAL_HTTP_MAX_RETRY": 3,
    "GDAL_HTTP_RETRY_DELAY": 0.5,
    # One answer may take this long (--timeout); opening a connection at most 10 s.
    "GDAL_HTTP_TIMEOUT": 20,
    "GDAL_HTTP_CONNECTTIMEOUT": 10,
    "GDAL_NUM_THREADS": 1,
}
"""GDAL configuration for reading remote COGs (see the module docstring)."""


def gdal_timeout_options(timeout_s: float | None) -> dict[str, Any]:
    """GDAL's HTTP timeouts for ``--timeout`` seconds (connect: at most 10 s); None: none.

    GDAL takes whole seconds: a fraction is rounded up, never to 0 (which means no timeout).
    """
    if timeout_s is None:
        return {}
    read = max(1, math.ceil(timeout_s))
    return {"GDAL_HTTP_TIMEOUT": read, "GDAL_HTTP_CONNECTTIMEOUT": min(10, read)}


def gdal_env_options(**overrides: Any) -> dict[str, Any]:
    """The GDAL settings harvest reads with, with ``overrides`` applied (plain, picklable)."""
    out = dict(GDAL_REMOTE_OPTIONS)
    out.update(overrides)
    return out


def gdal_env(options: Mapping[str, Any] | None = None) -> Any:
    """A ``rasterio.Env`` with :func:`gdal_env_options` (or the given options)."""
    return rasterio.Env(**dict(gdal_env_options() if options is None else options))


class LazyThreadPool:
    """A thread pool started on first use and stopped by :meth:`close`; thread-safe.

    What both readers fan their reads out with: a reader that never reads two things at once
    starts no thread, and readers used from several threads at once start one pool.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(x) for x in items]``, on the pool when there are two or more items."""
        if len(items) <= 1 or self.size <= 1:
            return [fn(x) for x in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
            pool = self._pool
        return list(pool.map(fn, items))

    def close(self) -> None:
        """Stop the threads (a later :meth:`map` starts new ones)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


# --------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------

_TRANSIENT_MARKERS = (
    "timed out",
    "timeout was reached",
    "connection reset",
    "connection refused",
    "connection was reset",
    "temporarily unavailable",
    "couldn't connect",
    "could not connect",
    "too many requests",
)
# GDAL's curl layer reports e.g. "HTTP response code: 503".
_TRANSIENT_HTTP = re.compile(r"http (?:response )?(?:code|status|error)[: ]*(?:5\d\d|429|408)")


def is_transient(exc: BaseException) -> bool:
    """Whether an error may go away on retry (timeouts, 5xx, 429, connection resets).

    GDAL reports network failures as text inside ``RasterioIOError`` / ``CPLE_*`` errors, so
    the decision reads the message; Python's own timeouts and connection errors count too. A
    corrupt, truncated or missing file is never transient.
    """
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    text = str(exc).lower()
    return any(m in text for m in _TRANSIENT_MARKERS) or bool(_TRANSIENT_HTTP.search(text))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with deterministic jitter.

    Attributes:
        attempts: Total tries (1: no retry).
        base_s: Wait before the first retry.
        max_s: Longest single wait.
        jitter: Fraction of each wait that is jitter (spread derived from the href and try, so
            runs are reproducible yet workers do not retry in lockstep).
    """

    attempts: int = 4
    base_s: float = 0.5
    max_s: float = 8.0
    jitter: float = 0.5

    def wait_s(self, attempt: int, key: str = "") -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        wait = min(self.base_s * 2.0**attempt, self.max_s)
        digest = hashlib.sha256(f"{key}:{attempt}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        return wait * (1.0 - self.jitter + self.jitter * u)


def with_retries(
    fn: Callable[[], T],
    href: str,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; retry transient errors per ``policy``; turn the rest into AssetReadError.

    Raises:
        AssetReadError: a non-transient error (missing, corrupt, truncated file), naming ``href``.
        ReadError: a transient error that outlived every retry.
    """
    for attempt in range(policy.attempts):
        try:
            return fn()
        except (AssetReadError, ReadError):
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise AssetReadError(href, _one_line(exc)) from exc
            if attempt + 1 >= policy.attempts:
                raise ReadError(
                    f"cannot read {href}: {_one_line(exc)} (still failing after "
                    f"{policy.attempts} tries; run again later to retry)"
                ) from exc
            sleep(policy.wait_s(attempt, href))
    raise AssertionError("unreachable")  # pragma: no cover


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]


# --------------------------------------------------------------------------------------------
# Chips
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipRead:
    """Bands of one scene on one chip grid.

    Attributes:
        data: ``[C, H, W]`` float32 physical values (reflectance), NaN where there is no data.
        invalid: ``[H, W]`` True where any band has no data.
        grid: The chip grid the values lie on.
        bands: Band names, in ``data`` order.
        seconds: Wall time of the read.
    """

    data: npt.NDArray[np.float32]
    invalid: npt.NDArray[np.bool_]
    grid: ChipGrid
    bands: tuple[str, ...]
    seconds: float = 0.0


def band_refs(assets: Mapping[str, AssetRef], bands: Sequence[str]) -> list[AssetRef]:
    """The assets of ``bands``, in order.

    Raises:
        ReadError: a band the scene has no asset for (the message lists those it has).
    """
    refs = []
    for band in bands:
        if band not in assets:
            have = ", ".join(assets) or "none"
            raise ReadError(f"the scene has no asset for band {band} (it has {have})")
        refs.append(assets[band])
    return refs


def physical_chip(
    data: npt.NDArray[np.float32],
    refs: Sequence[AssetRef],
    grid: ChipGrid,
    bands: Sequence[str],
    started: float,
) -> ChipRead:
    """The :class:`ChipRead` of stored values ``data`` [C, H, W].

    Each band's scale and offset is applied in place; ``seconds`` is the time since
    ``started`` (a ``time.perf_counter`` reading).
    """
    for i, ref in enumerate(refs):
        if ref.scale != 1.0 or ref.offset != 0.0:
            data[i] = data[i] * np.float32(ref.scale) + np.float32(ref.offset)
    invalid = np.asarray(~np.isfinite(data).all(axis=0), dtype=bool)
    return ChipRead(
        data=data,
        invalid=invalid,
        grid=grid,
        bands=tuple(bands),
        seconds=time.perf_counter() - started,
    )


class Reader(Protocol):
    """Reads bands of one scene onto a chip grid."""

    def read(
        self,
        assets: Mapping[str, AssetRef],
        bands: Sequence[str],
        grid: ChipGrid,
        resampling: ResamplingName = "nearest",
    ) -> ChipRead:
        """Physical values of ``bands`` (looked up in ``assets``) on ``grid``.

        Raises:
            AssetReadError: a file is missing, corrupt or truncated (the message names it).
            ReadError: a transient error outlived the retries.
        """
        ...

    def read_raw(self, asset: AssetRef, grid: ChipGrid) -> npt.NDArray[np.float32]:
        """Stored values of a category band (e.g. SCL) on ``grid``, nearest neighbour, no scale.

        Nodata comes back as NaN.
        """
        ...


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
class RasterioReader:
    """The rasterio reader (see the module docstring).

    Args:
        sign: Href signer applied right before opening (None: hrefs used as they are).
        retry: Backoff policy for transient errors.
        env_options: GDAL settings (default :func:`gdal_env_options`).
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
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    env_options: Mapping[str, Any] | None = None
    threads: int = 4
    cache_size: int = 32
    fast_average: bool = True
    fast_nearest: bool = True
    drivers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self._cache = _DatasetCache(self.cache_size)
        self._pool = LazyThreadPool(self.threads, "harvest-read")

    def __getstate__(self) -> dict[str, Any]:
        # Open handles and the pool stay in the process that made them.
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

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
        """See :meth:`Reader.read`. Bands stored in one file are read with one request."""
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
        """See :meth:`Reader.read_raw`."""
        return self._warp(asset.href, [asset.band_index], grid, "nearest", asset.nodata)[0]


def _axis_weights(
    out_origin: float, out_step: float, n_out: int, src_origin: float, src_step: float, n_src: int
) -> Any:
    """Sparse ``[n_out, n_src]`` overlap weights along one axis (rows sum to 1 inside).

    Steps may be negative (rows grow southward); intervals are handled by their ends.
    """
    from scipy.sparse import csr_matrix

    o_edges = out_origin + out_step * np.arange(n_out + 1)
    s_edges = src_origin + src_step * np.arange(n_src + 1)
    if out_step < 0:
        o_edges, s_edges = -o_edges, -s_edges
    o_lo, o_hi = o_edges[:-1], o_edges[1:]
    s_lo, s_hi = s_edges[:-1], s_edges[1:]
    first = np.clip(np.searchsorted(s_hi, o_lo, side="right"), 0, n_src)
    last = np.clip(np.searchsorted(s_lo, o_hi, side="left"), 0, n_src)
    rows, cols, vals = [], [], []
    width = abs(out_step)
    for k in range(int((last - first).max(initial=0))):
        j = first + k
        ok = j < last
        jj = np.minimum(j, n_src - 1)
        overlap = np.minimum(o_hi, s_hi[jj]) - np.maximum(o_lo, s_lo[jj])
        ok &= overlap > 0
        rows.append(np.flatnonzero(ok))
        cols.append(jj[ok])
        vals.append(overlap[ok] / width)
    return csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_out, n_src),
    )


@dataclass(frozen=True)
class _AxisPlan:
    """Area-average weights along one axis, in the cheapest form that applies.

    Between two grids whose pixel sizes have a small rational ratio (2.5 m from 1 m: 2 output
    pixels per 5 source pixels; from 0.6 m: 6 per 25) the weights repeat every ``period_out``
    output pixels, shifted by ``period_src`` source pixels. Output pixel ``r + period_out * m``
    is then ``sum_k taps[r, k] * x[first[r] + k + period_src * m]``: a few strided slices per
    phase instead of a generic sparse product (``sparse`` is None). Other ratios keep the
    sparse matrix.
    """

    n_out: int
    period_out: int
    period_src: int
    first: tuple[int, ...]
    taps: npt.NDArray[np.float32]
    sparse: Any = None
    int_taps: npt.NDArray[np.int64] | None = None
    denominator: int = 1


def _rational_period(ratio: float, limit: int = 64) -> tuple[int, int] | None:
    """Smallest ``(p_out, p_src)`` with ``p_out * ratio == p_src`` (integers), if small."""
    for p_out in range(1, limit + 1):
        p_src = round(p_out * ratio)
        if p_src >= 1 and abs(p_out * ratio - p_src) < 1e-9 * max(1.0, p_src):
            return p_out, p_src
    return None


@lru_cache(maxsize=256)
def _axis_plan(
    offset: float, out_step: float, n_out: int, src_step: float, n_src: int
) -> _AxisPlan:
    """Cached weights of one axis; ``offset`` is the output origin minus the source origin.

    Chips of one source share (pixel sizes, offset) pairs, so each pattern is built once.
    """
    w = _axis_weights(offset, out_step, n_out, 0.0, src_step, n_src).tocsr()
    counts = np.diff(w.indptr)
    period = _rational_period(abs(out_step / src_step))
    if period is not None and counts.size and counts.min() > 0:
        p_out, p_src = period
        k = int(counts.max())
        first = w.indices[w.indptr[:-1]].astype(np.int64)
        taps = np.zeros((n_out, k), dtype=np.float64)
        for i in range(n_out):
            lo, hi = w.indptr[i], w.indptr[i + 1]
            taps[i, w.indices[lo:hi] - first[i]] = w.data[lo:hi]
        idx = np.arange(n_out)
        phase = idx % p_out
        periodic = np.array_equal(first, first[phase] + p_src * (idx // p_out))
        periodic = periodic and bool(np.allclose(taps, taps[phase], rtol=0, atol=1e-9))
        if periodic:
            phase_taps = taps[:p_out]
            int_taps, denominator = None, 1
            for d in range(1, 129):
                scaled = phase_taps * d
                if np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-9):
                    int_taps, denominator = np.round(scaled).astype(np.int64), d
                    break
            return _AxisPlan(
                n_out, p_out, p_src, tuple(int(f) for f in first[:p_out]),
                phase_taps.astype(np.float32), None, int_taps, denominator,
            )  # fmt: skip
    return _AxisPlan(n_out, 0, 0, (), np.zeros((0, 0), np.float32), sparse=w)


def _apply_axis(
    x: npt.NDArray[Any], axis: int, plan: _AxisPlan, int_dtype: Any = None
) -> npt.NDArray[Any]:
    """Weights of ``plan`` along ``axis`` (1: rows, 2: columns) of a ``[C, H, W]`` array.

    With ``int_dtype`` (integer input, ``plan.int_taps`` set) the sums use the integer taps
    (``taps * denominator``) in that dtype: exact, and half the memory traffic of float32.
    """
    shape = list(x.shape)
    shape[axis] = plan.n_out
    if plan.sparse is not None:
        moved = np.moveaxis(x, axis, 0)
        flat = moved.reshape(moved.shape[0], -1).astype(np.float64)
        y = np.asarray(plan.sparse @ flat).reshape(plan.n_out, *moved.shape[1:])
        return np.ascontiguousarray(np.moveaxis(y, 0, axis), dtype=np.float32)
    dtype: np.dtype[Any] = np.dtype(np.float32 if int_dtype is None else int_dtype)
    taps: Any = plan.taps if int_dtype is None else plan.int_taps
    out = np.empty(shape, dtype=dtype)

    def along(a: npt.NDArray[Any], start: int, step: int, count: int) -> npt.NDArray[Any]:
        index: list[slice] = [slice(None)] * a.ndim
        index[axis] = slice(start, start + step * (count - 1) + 1, step)
        return a[tuple(index)]

    for r in range(plan.period_out):
        count = len(range(r, plan.n_out, plan.period_out))
        if count == 0:
            continue
        dst = along(out, r, plan.period_out, count)
        # Slices that share a tap are summed first and multiplied once, straight into the
        # output (2 x (a + b) + c for the 1 m -> 2.5 m taps 2, 2, 1: three passes, no
        # temporaries).
        by_tap: dict[Any, list[npt.NDArray[Any]]] = {}
        for k, tap in enumerate(taps[r].tolist()):
            if tap != 0:
                by_tap.setdefault(tap, []).append(
                    along(x, plan.first[r] + k, plan.period_src, count)
                )
        if not by_tap:
            dst[...] = 0
            continue
        groups = sorted(by_tap.items(), key=lambda kv: (kv[0] == 1, -len(kv[1])))
        tap, srcs = groups[0]
        if len(srcs) > 1:
            np.add(srcs[0], srcs[1], out=dst, dtype=dtype)
        else:
            np.copyto(dst, srcs[0], casting="unsafe")
        for src in srcs[2:]:
            np.add(dst, src, out=dst)
        if tap != 1:
            np.multiply(dst, dtype.type(tap), out=dst)
        for tap, srcs in groups[1:]:
            for src in srcs:
                if tap == 1:
                    np.add(dst, src, out=dst, dtype=dtype, casting="unsafe")
                else:
                    dst += np.multiply(src, dtype.type(tap), dtype=dtype)
    return out


def _integer_sum_dtype(dtype: np.dtype[Any], *plans: _AxisPlan) -> Any:
    """An unsigned dtype that holds the integer-tap sums of ``dtype`` data, or None."""
    if dtype.kind != "u" or any(p.int_taps is None for p in plans):
        return None
    bound = int(np.iinfo(dtype).max)
    for p in plans:
        assert p.int_taps is not None
        bound *= int(p.int_taps.sum(axis=1).max())
    for candidate in (np.uint16, np.uint32):
        if bound <= np.iinfo(candidate).max:
            return candidate
    return None


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
    (:func:`area_average_raw`).
    """
    if not _simple_mask(ds, nodata):
        return None
    found = aligned_window(ds, grid)
    if found is None:
        return None
    window, plan_r, plan_c = found
    return area_average_raw(ds.read(indexes, window=window), plan_r, plan_c, nodata)


def aligned_window(ds: Any, grid: ChipGrid) -> tuple[Any, _AxisPlan, _AxisPlan] | None:
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
    plan_c = _axis_plan(grid.transform.c - x0, grid.gsd_m, grid.width, t.a, win.read_width)
    plan_r = _axis_plan(grid.transform.f - y0, -grid.gsd_m, grid.height, t.e, win.read_height)
    return window, plan_r, plan_c


def area_average_raw(
    raw: npt.NDArray[Any], plan_r: _AxisPlan, plan_c: _AxisPlan, nodata: float | None
) -> npt.NDArray[np.float32]:
    """Area average of a ``[C, h, w]`` source window with separable weights (float32).

    Rows, then columns, each with per-axis overlap weights (:func:`_axis_plan`; 2-3 taps per
    output for 1 m -> 2.5 m). Unsigned-integer sources with no nodata sum with exact integer
    taps and are divided once at the end. Nodata pixels drop out of the average (their
    weight is renormalised away), as in GDAL.
    """
    if nodata is None or np.isnan(nodata):
        valid = np.isfinite(raw) if raw.dtype.kind == "f" else None
    else:
        valid = raw != nodata
    if valid is not None and valid.all():
        valid = None

    def both_axes(a: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        # Rows first: the row pass reads contiguous rows and shrinks the array 2.5x.
        return _apply_axis(_apply_axis(a, 1, plan_r), 2, plan_c)

    if valid is None:
        int_dtype = _integer_sum_dtype(raw.dtype, plan_r, plan_c)
        if int_dtype is None:
            return both_axes(raw)
        sums = _apply_axis(_apply_axis(raw, 1, plan_r, int_dtype), 2, plan_c, int_dtype)
        scale = np.float32(plan_r.denominator * plan_c.denominator)
        return np.divide(sums, scale, dtype=np.float32)
    num = both_axes(np.where(valid, raw, 0))
    den = both_axes(valid.view(np.uint8))
    with np.errstate(invalid="ignore", divide="ignore"):
        out: npt.NDArray[np.float32] = np.where(den > 1e-9, num / den, np.float32(np.nan))
    return out.astype(np.float32, copy=False)
