"""SEN2VENuS's published layout: per site, four tensors, the patch footprints and an index.

For a pair ``{site}_{tile}_{YYYY-MM-DD}`` (Michel et al. 2022; ``SCIENCE.md`` section 2)::

    SITE/{id}_05m_b2b3b4b8.pt      int16 reflectance x 10000 [n, 4, 256, 256]  VENuS, S2-mapped
    SITE/{id}_10m_b2b3b4b8.pt      int16 [n, 4, 128, 128]                      S2 B02 B03 B04 B08
    SITE/{id}_05m_b5b6b7b8a.pt     int16 [n, 4, 256, 256]                      VENuS, S2-mapped
    SITE/{id}_20m_b5b6b7b8a.pt     int16 [n, 4, 64, 64]                        S2 B05 B06 B07 B8A
    SITE/{id}_patches.gpkg         one polygon per patch (the 5 m patch's footprint), in order
    SITE/index.csv                 tab separated, one row per pair (the published columns)

The tensors are written with ``torch.save`` and read back with ``torch.load``; patch ``i`` of
every file is the same place. Every file is written to a temporary name and renamed; the index
is rewritten whole (merged with the rows already there, by the pair's tensors) after the pair's
files, so a pair listed in the index is complete.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harvest.diskio import atomic_write_bytes, replacing
from harvest.ids import check_id
from harvest.sen2venus import PairPatches

#: index.csv's columns, in the published order.
INDEX_COLUMNS = (
    "venus_product_id",
    "sentinel2_product_id",
    "tensor_05m_b2b3b4b8",
    "tensor_10m_b2b3b4b8",
    "tensor_05m_b5b6b7b8a",
    "tensor_20m_b5b6b7b8a",
    "s2_tile",
    "vns_site",
    "date",
    "venus_zenith_angle",
    "patches_gpkg",
    "nb_patches",
)
INDEX_NAME = "index.csv"
#: Tensor file suffixes, in index order, with the PairPatches field each holds.
TENSORS = (
    ("_05m_b2b3b4b8.pt", "venus_10m"),
    ("_10m_b2b3b4b8.pt", "s2_10m"),
    ("_05m_b5b6b7b8a.pt", "venus_20m"),
    ("_20m_b5b6b7b8a.pt", "s2_20m"),
)
#: Reflectance scale of the int16 tensors.
SCALE = 10000


@dataclass(frozen=True)
class PairInfo:
    """The ids and grid of one pair, for its file names, footprints and index row.

    Attributes:
        site: the VENuS site name (``vns_site``), e.g. ``FR-LAM``.
        tile: the S2 MGRS tile (``s2_tile``), e.g. ``31TCJ``.
        date: the acquisition day, ``YYYY-MM-DD``.
        venus_id: the VENuS product id.
        s2_id: the Sentinel-2 product id.
        venus_zenith_deg: VENuS viewing zenith angle, degrees (None when unknown).
        crs: the grid's CRS (WKT or ``EPSG:n``).
        origin: (x, y) of the top-left corner of the 5 m grid the patches index.
        gsd_m: the 5 m grid's pixel size.
    """

    site: str
    tile: str
    date: str
    venus_id: str
    s2_id: str
    venus_zenith_deg: float | None
    crs: str
    origin: tuple[float, float]
    gsd_m: float = 5.0

    @property
    def pair_id(self) -> str:
        """``{site}_{tile}_{YYYY-MM-DD}``."""
        return f"{self.site}_{self.tile}_{self.date}"


def to_int16(x: np.ndarray) -> np.ndarray:
    """Reflectance as the published int16 x 10000 (rounded, clipped to int16)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * SCALE), -32768, 32767).astype(np.int16)


def _save_tensor(path: Path, x: np.ndarray) -> None:
    import torch  # lazy: only the writing needs it

    buf = io.BytesIO()
    torch.save(torch.from_numpy(np.ascontiguousarray(to_int16(x))), buf)
    atomic_write_bytes(path, buf.getvalue())


def _write_footprints(
    path: Path, info: PairInfo, patches: Sequence[tuple[int, int]], px: int
) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    x0, y0 = info.origin
    side = px * info.gsd_m
    left = [x0 + c * info.gsd_m for _, c in patches]
    top = [y0 - r * info.gsd_m for r, _ in patches]
    geoms = [box(x, y - side, x + side, y) for x, y in zip(left, top, strict=True)]
    frame = gpd.GeoDataFrame(
        {"patch": np.arange(len(geoms), dtype=np.int64), "row_5m": [r for r, _ in patches],
         "col_5m": [c for _, c in patches]},
        geometry=geoms, crs=info.crs,
    )  # fmt: skip
    with replacing(path) as tmp:
        # GDAL wants the .gpkg extension; the name keeps harvest's temporary mark.
        named = tmp.with_name(tmp.name + ".gpkg")
        try:
            frame.to_file(named, driver="GPKG", layer=path.stem)
            os.replace(named, tmp)
        finally:
            named.unlink(missing_ok=True)


def read_index(site_dir: Path) -> list[dict[str, str]]:
    """The rows of ``SITE/index.csv`` (empty when there is none)."""
    path = site_dir / INDEX_NAME
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def write_pair(out_dir: Path, info: PairInfo, patches: PairPatches) -> dict[str, str]:
    """Write one pair's tensors and footprints under ``out_dir/SITE`` and list it in the index.

    Args:
        out_dir: the dataset folder.
        info: the pair's ids and grid.
        patches: what :func:`harvest.sen2venus.process_pair` kept (at least one patch).

    Returns:
        The pair's index row.

    Raises:
        UnsafeIdError: a site, tile or date that is not a safe file name part.
    """
    for what, value in (("site", info.site), ("tile", info.tile), ("date", info.date)):
        check_id(value, field=what)
    site_dir = out_dir / info.site
    site_dir.mkdir(parents=True, exist_ok=True)
    pid = info.pair_id
    names = []
    for suffix, field in TENSORS:
        _save_tensor(site_dir / f"{pid}{suffix}", getattr(patches, field))
        names.append(f"{pid}{suffix}")
    gpkg = f"{pid}_patches.gpkg"
    _write_footprints(site_dir / gpkg, info, patches.patches, patches.venus_10m.shape[-1])
    row = dict(
        zip(
            INDEX_COLUMNS,
            [info.venus_id, info.s2_id, *names, info.tile, info.site, info.date,
             "" if info.venus_zenith_deg is None else f"{info.venus_zenith_deg:.6g}", gpkg,
             str(len(patches.patches))],
            strict=True,
        )
    )  # fmt: skip
    rows = [r for r in read_index(site_dir) if r["tensor_05m_b2b3b4b8"] != names[0]] + [row]
    rows.sort(key=lambda r: (r["date"], r["tensor_05m_b2b3b4b8"]))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=INDEX_COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(site_dir / INDEX_NAME, text.getvalue().encode())
    return row
