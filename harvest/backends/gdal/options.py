"""GDAL settings for reading remote COGs: the one place for the options that matter.

No directory listing on open, merged range requests, HTTP/2 multiplexing, a VSI cache, a block
cache, GDAL's own HTTP retries and timeouts. Plain picklable dicts (no rasterio import here):
the fetch stage puts them in its :class:`~harvest.backends.registry.ReaderSettings`, which every
Dask worker receives; :func:`harvest.backends.gdal.reader.gdal_env` turns them into a
``rasterio.Env``.
"""

from __future__ import annotations

import math
from typing import Any

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
