"""What the ``degradation fit`` and ``degrade`` stages share: reading files, comma lists.

Rasters and JSON are read with a one-line :class:`~harvest.errors.DegradeError` naming the
file; ``.npz`` files are written through :func:`harvest.diskio.write_file`, so a full disk names
the file and stops the run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harvest.diskio import write_file
from harvest.errors import DegradeError


def read_raster(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """All bands of a GeoTIFF and its grid (``crs``, ``transform``, ``res``, ``dtype``, ...).

    Raises:
        DegradeError: the file cannot be read as a raster.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as ds:
            data = ds.read()
            info = {
                "crs": ds.crs,
                "transform": ds.transform,
                "res": ds.res,
                "dtype": ds.dtypes[0],
                "descriptions": ds.descriptions,
                "nodata": ds.nodata,
            }
    except RasterioIOError as exc:
        raise DegradeError(f"cannot read {path}: {exc}; check the file") from None
    return data, info


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises:
        DegradeError: the file cannot be read, is not JSON, or does not hold an object.
    """
    try:
        loaded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DegradeError(f"cannot read {path}: {exc}; fix or remove the file") from None
    if not isinstance(loaded, dict):
        raise DegradeError(f"{path} does not hold a JSON object; fix or remove the file")
    return loaded


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` through one guarded write (a full disk names the file and stops the run)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    write_file(path, buf.getvalue())


def parse_list(
    value: str | Sequence[str] | None, allowed: Sequence[str], what: str
) -> tuple[str, ...]:
    """Split a comma list and check every entry is allowed (empty -> ()).

    Raises:
        DegradeError: an entry is not in ``allowed``.
    """
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(v.strip() for v in items if v.strip())
    bad = [v for v in out if v not in allowed]
    if bad:
        raise DegradeError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return out
