"""Earth Engine pixel reads: ``ee.data.computePixels`` on an explicit chip grid.

:class:`EarthEngineReader` is the :class:`~harvest.backends.base.Reader` of ``ee://`` assets (the
registry picks it for them). One ``computePixels`` call per image and tile, on the chip grid given
explicitly (CRS code, affine transform, size), answered as a NumPy structured array; requests
are cut to the documented limits before sending, halved on "User memory limit exceeded.", and
bounded in number in flight (see the class docstring).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from harvest.backends.base import AssetRef, ChipRead, band_refs, physical_chip
from harvest.backends.earthengine.assets import split_ee_href
from harvest.backends.earthengine.session import (
    EE_DEFAULT_DEADLINE_S,
    EE_DEFAULT_MAX_RETRIES,
    EE_MAX_CONCURRENT_REQUESTS,
    earth_engine_initialised,
    import_ee,
    initialise_earth_engine,
)
from harvest.backends.pool import LazyThreadPool, PicklesFields
from harvest.errors import AssetReadError, CatalogError, ReadError
from harvest.grid import ChipGrid

logger = logging.getLogger(__name__)

EE_MAX_PIXELS_REQUEST_BYTES = 48_000_000
"""computePixels/getPixels answer at most 48 MB of uncompressed pixels per request (taken as
10^6-byte megabytes, the stricter reading)."""

EE_MAX_PIXELS_SIDE = 32768
"""Largest width or height of one computePixels grid."""

EE_MAX_PIXELS_BANDS = 1024
"""Most bands one computePixels request may return."""

EE_MAX_REQUESTS_PER_S = 100
"""Default per-project request rate quota (the client's own 429 retries absorb short bursts)."""

DEFAULT_PIXEL_CONCURRENCY = 8
"""computePixels requests in flight at once per process. Keep ``processes x this`` under
:data:`EE_MAX_CONCURRENT_REQUESTS` (e.g. 4 Dask workers x 8 = 32 <= 40)."""

DEFAULT_PIXEL_SPLIT_DEPTH = 6
"""Halvings in a row of a request the server finds too large ("User memory limit exceeded.")
before the read fails (6 halvings: 1/64 of the area)."""

REDUCE_RESOLUTION_MAX_PIXELS = 1024
"""``maxPixels`` of the area-average ``reduceResolution``: input pixels per output pixel (0.6 m
NAIP to 2.5 m needs about 25, to 10 m about 300; the server default of 64 is too small)."""

MASKED_VALUE = -3.0e38
"""What masked pixels are filled with before sending (``unmask``), so they cannot be confused
with data; comes back as NaN. Far below any stored value of the supported collections."""

_MASKED_BELOW = -1.0e38
_FLOAT32_BYTES = 4  # every band is sent as float32 (toFloat), whatever its stored type

# Server answers that mean "ask for less at once" (never resent as they are).
_PIXELS_TOO_LARGE_MARKERS = (
    "user memory limit exceeded",
    "computation timed out",
    "total request size",
    "request payload size exceeds",
)
_TRANSIENT_EE_MARKERS = (
    "too many requests",
    "quota exceeded",
    "rate limit",
    "resource_exhausted",
    "service unavailable",
    "backend error",
    "internal error",
    "deadline exceeded",
    "timed out",
)
_EE_RESAMPLE_MODE = {"bilinear": "bilinear", "cubic": "bicubic"}

_SEMAPHORES: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_SEMAPHORES_LOCK = threading.Lock()


def _request_semaphore(project: str | None, limit: int) -> threading.BoundedSemaphore:
    """One semaphore per project and bound, shared by every reader of this process."""
    with _SEMAPHORES_LOCK:
        key = (project or "", limit)
        sem = _SEMAPHORES.get(key)
        if sem is None:
            sem = threading.BoundedSemaphore(limit)
            _SEMAPHORES[key] = sem
        return sem


@dataclass(frozen=True)
class PixelTile:
    """A window of a chip grid, over some bands of one image: one computePixels request.

    Attributes:
        image_id: Earth Engine image id (``COLLECTION/INDEX``).
        bands: Earth Engine band names, in request order.
        row_off: First row of the window in the chip grid.
        col_off: First column of the window in the chip grid.
        height: Rows of the window.
        width: Columns of the window.
        depth: Halvings after a "User memory limit exceeded." answer that led here.
    """

    image_id: str
    bands: tuple[str, ...]
    row_off: int
    col_off: int
    height: int
    width: int
    depth: int = 0

    @property
    def n_bytes(self) -> int:
        """Uncompressed size of the answer (float32 per band and pixel)."""
        return self.height * self.width * len(self.bands) * _FLOAT32_BYTES

    def halves(self) -> tuple[PixelTile, PixelTile] | None:
        """Two halves along the longer side (then the band list); None for one pixel, one band."""
        d = self.depth + 1
        if self.height >= self.width and self.height > 1:
            h = self.height // 2
            return (
                replace(self, height=h, depth=d),
                replace(self, row_off=self.row_off + h, height=self.height - h, depth=d),
            )
        if self.width > 1:
            w = self.width // 2
            return (
                replace(self, width=w, depth=d),
                replace(self, col_off=self.col_off + w, width=self.width - w, depth=d),
            )
        if len(self.bands) > 1:
            k = len(self.bands) // 2
            return (
                replace(self, bands=self.bands[:k], depth=d),
                replace(self, bands=self.bands[k:], depth=d),
            )
        return None


def plan_pixel_tiles(
    image_id: str,
    bands: Sequence[str],
    height: int,
    width: int,
    *,
    max_bytes: int = EE_MAX_PIXELS_REQUEST_BYTES,
    max_side: int = EE_MAX_PIXELS_SIDE,
    max_bands: int = EE_MAX_PIXELS_BANDS,
) -> list[PixelTile]:
    """Cut a read into requests within the documented limits (before anything is sent).

    Bands are cut into groups of at most ``max_bands``; then the window is cut into a regular
    grid of nearly equal tiles, each at most ``max_side`` pixels a side and ``max_bytes`` big.

    Raises:
        ReadError: a limit so small that not even one pixel of one band fits.
    """
    if max_bytes < _FLOAT32_BYTES or max_side < 1 or max_bands < 1:
        raise ReadError(
            f"computePixels limits too small (max_bytes={max_bytes}, max_side={max_side}, "
            f"max_bands={max_bands}): at least one float32 pixel must fit"
        )
    groups = [tuple(bands[i : i + max_bands]) for i in range(0, len(bands), max_bands)]
    tiles: list[PixelTile] = []
    for group in groups:
        n_rows = max(1, math.ceil(height / max_side))
        n_cols = max(1, math.ceil(width / max_side))
        band_bytes = len(group) * _FLOAT32_BYTES
        # Add cuts along the longer tile side until one tile fits the byte budget.
        while math.ceil(height / n_rows) * math.ceil(width / n_cols) * band_bytes > max_bytes:
            if math.ceil(height / n_rows) >= math.ceil(width / n_cols) and n_rows < height:
                n_rows += 1
            elif n_cols < width:
                n_cols += 1
            else:  # one pixel per tile and still too big: too many bands per group
                raise ReadError(
                    f"one pixel of {len(group)} bands is over the {max_bytes}-byte request limit"
                )
        row_edges = [round(i * height / n_rows) for i in range(n_rows + 1)]
        col_edges = [round(j * width / n_cols) for j in range(n_cols + 1)]
        for r0, r1 in itertools.pairwise(row_edges):
            for c0, c1 in itertools.pairwise(col_edges):
                tiles.append(PixelTile(image_id, group, r0, c0, r1 - r0, c1 - c0))
    return tiles


def pixel_grid(grid: ChipGrid, tile: PixelTile | None = None) -> dict[str, Any]:
    """The computePixels ``grid`` (PixelGrid) of a chip grid, or of a window of it."""
    t = grid.transform
    row, col = (tile.row_off, tile.col_off) if tile is not None else (0, 0)
    width, height = (tile.width, tile.height) if tile is not None else (grid.width, grid.height)
    # The window's upper-left corner on the same lattice: exact for whole pixel offsets.
    return {
        "dimensions": {"width": width, "height": height},
        "affineTransform": {
            "scaleX": t.a,
            "shearX": t.b,
            "translateX": t.c + t.a * col + t.b * row,
            "shearY": t.d,
            "scaleY": t.e,
            "translateY": t.f + t.d * col + t.e * row,
        },
        "crsCode": f"EPSG:{grid.epsg}",
    }


class _PixelsTooLargeError(Exception):
    """The server asks for a smaller request."""


@dataclass
class EarthEngineReader(PicklesFields):
    """A :class:`~harvest.backends.base.Reader` of ``ee://COLLECTION/INDEX#BAND`` assets.

    Each image of a read becomes one expression,
    ``ee.Image(id).select(bands)[resampling].toFloat().unmask(MASKED_VALUE, False)``, asked for
    with ``ee.data.computePixels`` on the chip grid given explicitly (CRS code, affine transform,
    width and height), answered as a ``NUMPY_NDARRAY`` (a structured array, one field per band).
    Resampling: ``nearest`` sends none (Earth Engine's default is nearest neighbour: an identity
    read for Sentinel-2 10 m bands on a chip grid snapped to them); ``average`` is an area
    average, ``reduceResolution(Reducer.mean(), maxPixels=REDUCE_RESOLUTION_MAX_PIXELS)`` then
    ``reproject`` onto the chip grid (NAIP 0.6 m / 1 m to 2.5 m); ``bilinear``/``cubic`` use
    ``resample``. Numbers become float32 ``DN * scale + offset``; masked pixels (and the
    asset's declared nodata) become NaN.

    Requests stay within the documented limits (:data:`EE_MAX_PIXELS_REQUEST_BYTES`,
    :data:`EE_MAX_PIXELS_SIDE`, :data:`EE_MAX_PIXELS_BANDS`): a larger read is cut into tiles
    before sending and stitched. "User memory limit exceeded." is answered by asking for the two
    halves of that request (never the same request again), at most ``max_split_depth`` times in
    a row. 429 and 5xx answers are retried by the client itself (``ee.data.setMaxRetries``).
    At most ``max_concurrent`` requests are in flight per process and project.

    Args:
        project: Google Cloud project billed; None: the project this process already
            initialised Earth Engine with, else the application default credentials' project.
        opt_url: Earth Engine endpoint (e.g. the high-volume one,
            :data:`~harvest.backends.earthengine.session.EE_HIGH_VOLUME_URL`, meant for many
            small automated requests); None: the default.
        credentials: google-auth credentials; None: ``google.auth.default()``.
        max_retries: Retries of 429/5xx answers the client makes itself.
        max_concurrent: Requests in flight at once (1 to :data:`EE_MAX_CONCURRENT_REQUESTS`).
        max_split_depth: Halvings in a row after "User memory limit exceeded.".
        max_request_bytes: Uncompressed bytes per request (at most the documented limit).
        max_side_px: Pixels a side per request (at most the documented limit).
        max_bands: Bands per request (at most the documented limit).
        deadline_s: Time limit of one request in seconds (``--timeout``; None: none).
    """

    project: str | None = None
    opt_url: str | None = None
    credentials: Any = None
    max_retries: int = EE_DEFAULT_MAX_RETRIES
    max_concurrent: int = DEFAULT_PIXEL_CONCURRENCY
    max_split_depth: int = DEFAULT_PIXEL_SPLIT_DEPTH
    max_request_bytes: int = EE_MAX_PIXELS_REQUEST_BYTES
    max_side_px: int = EE_MAX_PIXELS_SIDE
    max_bands: int = EE_MAX_PIXELS_BANDS
    deadline_s: float | None = EE_DEFAULT_DEADLINE_S

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrent <= EE_MAX_CONCURRENT_REQUESTS:
            raise CatalogError(
                f"max_concurrent {self.max_concurrent} must be within "
                f"1-{EE_MAX_CONCURRENT_REQUESTS} (Earth Engine's concurrent request quota)"
            )
        if not 0 < self.max_request_bytes <= EE_MAX_PIXELS_REQUEST_BYTES:
            raise CatalogError(
                f"max_request_bytes must be within 1-{EE_MAX_PIXELS_REQUEST_BYTES} "
                "(Earth Engine's computePixels limit)"
            )
        if not 0 < self.max_side_px <= EE_MAX_PIXELS_SIDE:
            raise CatalogError(f"max_side_px must be within 1-{EE_MAX_PIXELS_SIDE}")
        if not 0 < self.max_bands <= EE_MAX_PIXELS_BANDS:
            raise CatalogError(f"max_bands must be within 1-{EE_MAX_PIXELS_BANDS}")
        if self.max_split_depth < 0:
            raise CatalogError("max_split_depth must be >= 0")
        self._pool = LazyThreadPool(self.max_concurrent, "harvest-ee-read")
        self._stats_lock = threading.Lock()
        self.n_requests = 0
        self.n_splits = 0

    def close(self) -> None:
        """Stop the request pool."""
        self._pool.close()

    # --- initialisation and the request ----------------------------------------------------------

    def _ee(self) -> ModuleType:
        if self.project is None and self.credentials is None and earth_engine_initialised():
            return import_ee()
        return initialise_earth_engine(
            project=self.project,
            opt_url=self.opt_url,
            credentials=self.credentials,
            max_retries=self.max_retries,
            deadline_s=self.deadline_s,
        )

    def build_expression(
        self, image_id: str, bands: Sequence[str], grid: ChipGrid, resampling: str
    ) -> Any:
        """The ``ee.Image`` asked for (see the class docstring)."""
        ee = import_ee()
        image = ee.Image(image_id).select(list(bands))
        if resampling == "average":
            t = grid.transform
            image = image.reduceResolution(
                reducer=ee.Reducer.mean(), maxPixels=REDUCE_RESOLUTION_MAX_PIXELS
            ).reproject(crs=f"EPSG:{grid.epsg}", crsTransform=[t.a, t.b, t.c, t.d, t.e, t.f])
        elif resampling in _EE_RESAMPLE_MODE:
            image = image.resample(_EE_RESAMPLE_MODE[resampling])
        elif resampling != "nearest":
            raise ReadError(
                f"unknown resampling {resampling!r}: use nearest, average, bilinear or cubic"
            )
        return image.toFloat().unmask(MASKED_VALUE, False)

    def _request(
        self, ee: ModuleType, tile: PixelTile, grid: ChipGrid, resampling: str, href: str
    ) -> npt.NDArray[np.float32]:
        """One computePixels call: ``[bands, height, width]`` float32 (masked: NaN)."""
        params = {
            "expression": self.build_expression(tile.image_id, tile.bands, grid, resampling),
            "fileFormat": "NUMPY_NDARRAY",
            "grid": pixel_grid(grid, tile),
        }
        with self._stats_lock:
            self.n_requests += 1
        with _request_semaphore(self.project, self.max_concurrent):
            try:
                answer = ee.data.computePixels(params)
            except ee.EEException as exc:
                message = " ".join(str(exc).split())
                lowered = message.lower()
                if any(m in lowered for m in _PIXELS_TOO_LARGE_MARKERS):
                    raise _PixelsTooLargeError(message) from None
                if any(m in lowered for m in _TRANSIENT_EE_MARKERS):
                    raise ReadError(
                        f"cannot read {href}: {message} (still failing after the client's "
                        f"{self.max_retries} retries; run again later to retry)"
                    ) from None
                raise AssetReadError(href, message) from None
        names = getattr(getattr(answer, "dtype", None), "names", None) or ()
        missing = [b for b in tile.bands if b not in names]
        if missing or answer.shape != (tile.height, tile.width):
            raise AssetReadError(
                href,
                f"computePixels answered bands {list(names)} of shape "
                f"{getattr(answer, 'shape', None)}, expected {list(tile.bands)} of shape "
                f"{(tile.height, tile.width)}",
            )
        out = np.empty((len(tile.bands), tile.height, tile.width), dtype=np.float32)
        for i, band in enumerate(tile.bands):
            out[i] = answer[band]
        out[out <= _MASKED_BELOW] = np.nan
        return out

    def _read_tile(
        self, ee: ModuleType, tile: PixelTile, grid: ChipGrid, resampling: str, href: str
    ) -> list[tuple[PixelTile, npt.NDArray[np.float32]]]:
        """A tile, or its halves (recursively) when the server finds it too large."""
        try:
            return [(tile, self._request(ee, tile, grid, resampling, href))]
        except _PixelsTooLargeError as exc:
            halves = tile.halves() if tile.depth < self.max_split_depth else None
            if halves is None:
                raise ReadError(
                    f"cannot read {href}: Earth Engine cannot compute even a "
                    f"{tile.height} x {tile.width} px request of {len(tile.bands)} band(s) "
                    f"after {tile.depth} halvings ({exc}); try a smaller chip or a simpler "
                    "resampling"
                ) from None
            logger.info("splitting a computePixels request of %s: %s", tile.image_id, exc)
            with self._stats_lock:
                self.n_splits += 1
            return [part for half in halves for part in self._read_tile(
                ee, half, grid, resampling, href)]  # fmt: skip

    def _read_bands(
        self, refs: Sequence[AssetRef], grid: ChipGrid, resampling: str
    ) -> npt.NDArray[np.float32]:
        """Stored values of ``refs`` on ``grid`` (one request per image and tile), NaN masked."""
        ee = self._ee()
        parsed = [split_ee_href(ref.href) for ref in refs]
        by_image: dict[str, list[str]] = {}
        for image_id, band in parsed:
            names = by_image.setdefault(image_id, [])
            if band not in names:
                names.append(band)
        tiles: list[tuple[PixelTile, str]] = []
        for image_id, names in by_image.items():
            href = next(r.href for r, p in zip(refs, parsed, strict=True) if p[0] == image_id)
            tiles.extend(
                (tile, href)
                for tile in plan_pixel_tiles(
                    image_id,
                    names,
                    grid.height,
                    grid.width,
                    max_bytes=self.max_request_bytes,
                    max_side=self.max_side_px,
                    max_bands=self.max_bands,
                )
            )
        parts = self._pool.map(
            lambda th: self._read_tile(ee, th[0], grid, resampling, th[1]), tiles
        )
        # Stitch: every piece lands on its window of its image's bands.
        planes = {
            (image_id, band): np.full(grid.shape, np.nan, dtype=np.float32)
            for image_id, names in by_image.items()
            for band in names
        }
        for pieces in parts:
            for tile, arr in pieces:
                rows = slice(tile.row_off, tile.row_off + tile.height)
                cols = slice(tile.col_off, tile.col_off + tile.width)
                for i, band in enumerate(tile.bands):
                    planes[(tile.image_id, band)][rows, cols] = arr[i]
        out = np.empty((len(refs), grid.height, grid.width), dtype=np.float32)
        for i, (key, ref) in enumerate(zip(parsed, refs, strict=True)):
            band_data = planes[key]
            if ref.nodata is not None and not math.isnan(ref.nodata):
                band_data = np.where(band_data == np.float32(ref.nodata), np.nan, band_data)
            out[i] = band_data
        return out

    # --- the Reader protocol ---------------------------------------------------------------------

    def read(
        self,
        assets: Mapping[str, AssetRef],
        bands: Sequence[str],
        grid: ChipGrid,
        resampling: str = "nearest",
    ) -> ChipRead:
        """See :meth:`harvest.backends.base.Reader.read`.

        Raises:
            ReadError: a band the scene lacks, a request still too large after the halvings,
                or a transient error that outlived the client's retries.
            AssetReadError: Earth Engine refused the image (missing image or band, ...).
        """
        started = time.perf_counter()
        refs = band_refs(assets, bands)
        return physical_chip(self._read_bands(refs, grid, resampling), refs, grid, bands, started)

    def read_raw(self, asset: AssetRef, grid: ChipGrid) -> npt.NDArray[np.float32]:
        """See :meth:`harvest.backends.base.Reader.read_raw` (nearest, no scale or offset)."""
        return self._read_bands([asset], grid, "nearest")[0]
