"""Dataset files: chip folders, status files, the manifest, atomic writes, the split.

The layouts themselves are :mod:`harvest.writers`' (SEN2NAIP's, below, and the generic one of
:mod:`harvest.writers.generic`, whose kept chips live in ``OUT/kept/``). Layout of a SEN2NAIP
fetch output folder ``OUT``::

    OUT/cross-sensor/ROI_xxxxx/LR.tif         4 x 121 x 121, float32 reflectance, NaN = nodata
    OUT/cross-sensor/ROI_xxxxx/HR.tif         4 x 484 x 484, float32 reflectance, NaN = nodata
    OUT/cross-sensor/ROI_xxxxx/SCL.tif        1 x 121 x 121, uint8 Sentinel-2 SCL (0 = nodata)
    OUT/cross-sensor/ROI_xxxxx/metadata.json  Table 1 of the SEN2NAIP paper + harvest fields
    OUT/rejected/ROI_xxxxx/...                the same files for chips QA rejected
    OUT/manifest.parquet                      GeoParquet, one row per chip (any status)
    OUT/.harvest/status/ROI_xxxxx.json        per-chip record (harvest.records): the resume points
    OUT/.harvest/run.json                     recipe name, config hash and recipe of the folder

Storage choice: reflectance is stored as float32 (ZSTD level 1, floating-point predictor), not
as uint16 x 10000: Sentinel-2 L2A reflectance after the baseline-04.00 offset can be slightly
negative and NAIP DN / 255 is not a multiple of 1e-4, so float32 round-trips harvest's values
exactly. Chips QA rejects still get written (under ``rejected/``) so that ``harvest qa`` can
decide again with other thresholds without fetching; ``SCL.tif`` (an addition to the paper's
layout) keeps the cloud classes for the same reason.

Atomicity: a chip folder is written under a temporary name beside its final place and renamed
in one ``os.replace``; status files, the manifest and ``run.json`` are written to a temporary
file in the same folder and renamed. A killed run leaves at most temporary names behind, which
the next run deletes (:func:`clean_temporaries`, called under the folder's lock, so only
names of dead runs are there to delete). That is a guarantee against a killed
process; only ``run.json`` is fsynced, so after an operating-system crash or power loss the
most recent chips may need checking against their status files' SHA-256 sums. Every write
goes through :func:`harvest.diskio.write_guard`: a full or failing disk raises a
:class:`~harvest.errors.DiskWriteError` naming the path, after the temporary names of the
write in progress are removed.

Train/test split (:func:`assign_split`): blocks of a coarse equal-area grid (EASE-Grid 2.0,
EPSG:6933, ``block_km`` cells) are test blocks when a seeded hash of the block says so (about
``test_fraction`` of them); ROIs closer than ``min_gap_km`` to each other are then linked, and
each linked group takes the split of its lowest ROI id's block. Guarantee (tested): no test ROI
lies within ``min_gap_km`` (great-circle distance of the centres) of a train ROI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harvest.diskio import atomic_write_bytes, is_temporary, temp_name, write_file, write_guard
from harvest.errors import StoreError
from harvest.grid import ChipGrid
from harvest.ids import check_id, ensure_inside, is_inside
from harvest.records import ChipRecord

logger = logging.getLogger(__name__)

CROSS_SENSOR_DIR = "cross-sensor"
KEPT_DIR = "kept"
"""Where the generic layout keeps its chips (SEN2NAIP's layout: ``cross-sensor/``)."""
REJECTED_DIR = "rejected"
STATE_DIR = ".harvest"
STATUS_DIR = f"{STATE_DIR}/status"
MANIFEST_NAME = "manifest.parquet"
RUN_FILE = f"{STATE_DIR}/run.json"
LR_FILE, HR_FILE, SCL_FILE, META_FILE = "LR.tif", "HR.tif", "SCL.tif", "metadata.json"

EARTH_RADIUS_M = 6_371_008.8

# The fix for a chip folder or status file harvest did not write (its name is no safe id).
_FOREIGN = "harvest did not write it: move it out of the dataset folder and run again"


# --------------------------------------------------------------------------------------------
# Atomic small files
# --------------------------------------------------------------------------------------------


def atomic_write_json(path: Path, obj: Any, *, durable: bool = True) -> None:
    """Write JSON (sorted keys, NaN as null) atomically (``durable``: see atomic_write_bytes)."""
    atomic_write_bytes(path, json_bytes(obj), durable=durable)


def json_bytes(obj: Any) -> bytes:
    """The JSON harvest writes: sorted keys, two-space indent, NaN as null, final newline."""
    return (json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n").encode()


def json_safe(obj: Any) -> Any:
    """``obj`` as JSON can hold it: numpy scalars as Python ones, NaN and infinities as None."""
    if isinstance(obj, float):
        return None if not np.isfinite(obj) else obj
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Chip folders
# --------------------------------------------------------------------------------------------


def write_cog(
    path: Path,
    data: npt.NDArray[Any],
    grid: ChipGrid,
    band_names: Sequence[str],
    nodata: float | None = None,
) -> str:
    """Write a ``[C, H, W]`` array on ``grid`` as a Cloud-Optimized GeoTIFF with band names.

    Returns:
        The hex SHA-256 of the file's bytes.

    Raises:
        StoreError: the array does not match ``band_names`` and ``grid``.
        DiskWriteError: the disk cannot take the file (:mod:`harvest.diskio`).
    """
    if data.shape != (len(band_names), grid.height, grid.width):
        raise StoreError(
            f"{path.name}: array {data.shape} does not match {len(band_names)} bands on a "
            f"{grid.height} x {grid.width} grid"
        )
    blob = _cog_bytes(data, grid, band_names, nodata)
    # Written and hashed from the same bytes (no re-read for checksums).
    write_file(path, blob)
    return hashlib.sha256(blob).hexdigest()


def _cog_bytes(
    data: npt.NDArray[Any], grid: ChipGrid, band_names: Sequence[str], nodata: float | None
) -> bytes:
    """The bytes of :func:`write_cog`'s file, encoded by GDAL's COG driver in memory.

    ZSTD level 1: float reflectance barely compresses (3.7 -> 2.4 MB for HR.tif with any codec),
    and it writes 2.7x faster than DEFLATE; GDAL >= 2.3 reads it. The floating-point predictor
    for floats, horizontal differencing for integers (ADR 0004). One 128 px tile for a 121 px
    LR chip (a 256 px tile would compress 4.5x padding). No overviews: a chip is a few tiles.
    A hand-written encoder made a whole fetch only 12-14 % faster: not worth its code (ADR 0009).
    """
    from rasterio.crs import CRS
    from rasterio.io import MemoryFile

    profile = {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "count": len(band_names),
        "dtype": data.dtype.name,
        "crs": CRS.from_epsg(grid.epsg),
        "transform": grid.transform,
        "nodata": nodata,
        "compress": "ZSTD",
        "level": 1,
        "predictor": 3 if data.dtype.kind == "f" else 2,
        "blocksize": 128 if max(grid.width, grid.height) <= 128 else 256,
        "overviews": "NONE",
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
            dst.descriptions = tuple(band_names)
        return bytes(mem.read())


@dataclass(frozen=True)
class ChipFiles:
    """What :func:`write_chip_folder` wrote: the folder and the SHA-256 of each file."""

    folder: Path
    sha256: dict[str, str]


def chip_folder(
    out_dir: Path, roi_id: str, kept: bool, *, kept_dir: str = CROSS_SENSOR_DIR
) -> Path:
    """Where a chip lives: ``kept_dir`` (``cross-sensor/``) when kept, ``rejected/`` otherwise.

    Raises:
        UnsafeIdError: ``roi_id`` is not a safe id (:mod:`harvest.ids`).
        UnsafePathError: the folder resolves outside ``out_dir`` (a symbolic link).
    """
    check_id(roi_id, field="roi_id")
    return ensure_inside(out_dir / (kept_dir if kept else REJECTED_DIR) / roi_id, out_dir)


def _remove_tree(path: Path, root: Path | None) -> None:
    # Never follow a path out of the output folder, even to delete (defence in depth).
    if root is not None:
        ensure_inside(path, root)
    # Rename first so a kill halfway through a deletion leaves only a temporary name behind.
    if not path.exists():
        return
    doomed = temp_name(path)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


@contextmanager
def atomic_folder(final: Path, *, root: Path | None = None) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``final``, then rename it into place.

    Yields the temporary folder to fill. When the block completes, any older ``final`` is
    removed and the new folder takes its name in one ``os.replace``; when it raises, ``final``
    is left as it was and the temporary folder is deleted.

    Args:
        final: The folder to build.
        root: The output folder ``final`` must resolve inside (checked before anything is
            created or removed); None when ``final`` is itself the folder the user named.

    Raises:
        UnsafePathError: ``final`` resolves outside ``root``.
    """
    if root is not None:
        ensure_inside(final, root)
    tmp = temp_name(final)
    # A full or failing disk, here or in the block, stops the run naming the folder (a write
    # in the block that names its own file wins: harvest.diskio).
    with write_guard(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        try:
            yield tmp
            _remove_tree(final, root)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class RasterFile:
    """One COG of a chip folder: its file name, pixels, grid, band names and nodata value."""

    name: str
    data: npt.NDArray[Any]
    grid: ChipGrid
    band_names: tuple[str, ...]
    nodata: float | None = None


def write_chip(
    out_dir: Path,
    roi_id: str,
    *,
    kept: bool,
    rasters: Sequence[RasterFile],
    metadata: Mapping[str, Any],
    kept_dir: str = CROSS_SENSOR_DIR,
) -> ChipFiles:
    """Write one chip folder (its COGs and metadata.json) atomically: complete or absent.

    The chip lands in ``kept_dir`` when ``kept`` else in ``rejected/``, replacing any older
    copy; a copy under the other folder (from an earlier run or QA pass) is removed.
    """
    final = chip_folder(out_dir, roi_id, kept, kept_dir=kept_dir)
    # Both checked before anything is written.
    other = chip_folder(out_dir, roi_id, not kept, kept_dir=kept_dir)
    with atomic_folder(final, root=out_dir) as tmp:
        sums = {
            r.name: write_cog(tmp / r.name, r.data, r.grid, r.band_names, r.nodata) for r in rasters
        }
        meta_bytes = json_bytes(dict(metadata))
        write_file(tmp / META_FILE, meta_bytes)
        sums[META_FILE] = hashlib.sha256(meta_bytes).hexdigest()
        sums = dict(sorted(sums.items()))
    _remove_tree(other, out_dir)
    return ChipFiles(folder=final, sha256=sums)


def write_chip_folder(
    out_dir: Path,
    roi_id: str,
    *,
    kept: bool,
    lr: npt.NDArray[np.float32],
    lr_grid: ChipGrid,
    lr_bands: Sequence[str],
    hr: npt.NDArray[np.float32],
    hr_grid: ChipGrid,
    hr_bands: Sequence[str],
    scl: npt.NDArray[np.uint8] | None,
    metadata: Mapping[str, Any],
) -> ChipFiles:
    """Write one chip folder of SEN2NAIP's cross-sensor layout (``LR.tif``, ``HR.tif``, ...).

    The chip lands in ``cross-sensor/`` when ``kept`` else in ``rejected/`` (:func:`write_chip`).
    """
    rasters = [
        RasterFile(LR_FILE, lr.astype(np.float32, copy=False), lr_grid, tuple(lr_bands), np.nan),
        RasterFile(HR_FILE, hr.astype(np.float32, copy=False), hr_grid, tuple(hr_bands), np.nan),
    ]
    if scl is not None:
        rasters.append(RasterFile(SCL_FILE, scl[None].astype(np.uint8), lr_grid, ("SCL",), 0))
    return write_chip(out_dir, roi_id, kept=kept, rasters=rasters, metadata=metadata)


def move_chip_folder(
    out_dir: Path, roi_id: str, kept: bool, *, kept_dir: str = CROSS_SENSOR_DIR
) -> Path:
    """Move a written chip between ``kept_dir`` (``cross-sensor/``) and ``rejected/`` (a rename)."""
    src = chip_folder(out_dir, roi_id, not kept, kept_dir=kept_dir)
    dst = chip_folder(out_dir, roi_id, kept, kept_dir=kept_dir)
    if src.exists():
        with write_guard(dst):
            dst.parent.mkdir(parents=True, exist_ok=True)
            _remove_tree(dst, out_dir)
            os.replace(src, dst)
    return dst


@dataclass(frozen=True)
class ChipOnDisk:
    """A chip folder read back."""

    folder: Path
    lr: npt.NDArray[np.float32]
    hr: npt.NDArray[np.float32]
    scl: npt.NDArray[np.uint8] | None
    lr_grid: ChipGrid
    hr_grid: ChipGrid
    metadata: dict[str, Any]


def read_raster(path: Path) -> tuple[npt.NDArray[Any], ChipGrid]:
    """A COG's pixels ``[C, H, W]`` and its grid."""
    import rasterio

    with rasterio.open(path) as ds:
        data = ds.read()
        grid = ChipGrid(int(ds.crs.to_epsg()), ds.transform, ds.width, ds.height, ds.res[0])
    return data, grid


def read_chip_folder(folder: Path) -> ChipOnDisk:
    """Read a chip folder written by :func:`write_chip_folder`.

    Raises:
        StoreError: a file is missing or unreadable.
    """
    try:
        lr, lr_grid = read_raster(folder / LR_FILE)
        hr, hr_grid = read_raster(folder / HR_FILE)
        scl = read_raster(folder / SCL_FILE)[0][0] if (folder / SCL_FILE).exists() else None
        metadata = json.loads((folder / META_FILE).read_text())
    except Exception as exc:
        raise StoreError(f"chip folder {folder} is incomplete or unreadable: {exc}") from exc
    return ChipOnDisk(folder, lr, hr, scl, lr_grid, hr_grid, metadata)


# --------------------------------------------------------------------------------------------
# Status files, run file, manifest
# --------------------------------------------------------------------------------------------


def write_status(out_dir: Path, roi_id: str, status: Mapping[str, Any]) -> None:
    """Record one chip's outcome (atomically); the manifest is built from these.

    Not fsynced: the resume guarantee is against a killed run, for which the rename is the
    atomicity; the chip files the status vouches for are not fsynced either (one ``fsync``
    per chip cost 0.6-5 ms on a busy 2-core machine), so an fsync of the status alone would
    not make a chip survive power loss. After an operating-system crash, check the chips
    against the SHA-256 sums in their status files.

    Raises:
        UnsafeIdError: ``roi_id`` is not a safe id (:mod:`harvest.ids`).
        UnsafePathError: the status file resolves outside ``out_dir`` (a symbolic link).
    """
    path = out_dir / STATUS_DIR / f"{check_id(roi_id, field='roi_id')}.json"
    atomic_write_json(ensure_inside(path, out_dir), status, durable=False)


def _read_status_file(path: Path) -> Any:
    """A status file's JSON, or None when it is missing or unreadable (the chip is redone)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_status(out_dir: Path, roi_id: str) -> dict[str, Any] | None:
    """One chip's recorded status, or None when there is none (or it is unreadable)."""
    loaded = _read_status_file(out_dir / STATUS_DIR / f"{check_id(roi_id, field='roi_id')}.json")
    return loaded if isinstance(loaded, dict) else None


def load_statuses(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every recorded chip status, by roi_id (unreadable files are ignored: redone).

    Raises:
        UnsafeIdError: a status file's name is not a safe id (not a file harvest wrote).
    """
    out: dict[str, dict[str, Any]] = {}
    folder = out_dir / STATUS_DIR
    if not folder.exists():
        return out
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        check_id(path.stem, field="roi_id", where=str(path), fix=_FOREIGN)
        loaded = _read_status_file(path)
        if loaded is not None:
            out[path.stem] = loaded
    return out


def write_record(out_dir: Path, record: ChipRecord) -> None:
    """Record one chip's outcome as its status file (:func:`write_status`)."""
    write_status(out_dir, record.roi_id, record.to_json())


def _record(roi_id: str, loaded: Mapping[str, Any]) -> ChipRecord | None:
    try:
        return ChipRecord.from_json(loaded, f"status of {roi_id}")
    except StoreError as exc:
        # A status harvest cannot read (another version's status or reason): like an
        # unreadable file, the chip is done again.
        logger.warning("%s; the chip is fetched again", exc)
        return None


def forget_chip(out_dir: Path, roi_id: str) -> None:
    """Remove a chip's status and folders, so that the next fetch does it again.

    The status goes first: a kill after it leaves a folder without a status, which a fetch
    redoes (and replaces) anyway.

    Raises:
        UnsafeIdError: ``roi_id`` is not a safe id.
        UnsafePathError: a path resolves outside ``out_dir``.
    """
    status = ensure_inside(
        out_dir / STATUS_DIR / f"{check_id(roi_id, field='roi_id')}.json", out_dir
    )
    status.unlink(missing_ok=True)
    for sub in (CROSS_SENSOR_DIR, KEPT_DIR, REJECTED_DIR):
        _remove_tree(out_dir / sub / roi_id, out_dir)


def load_record(out_dir: Path, roi_id: str) -> ChipRecord | None:
    """One chip's record, or None when there is none (or it is unreadable: redone)."""
    loaded = load_status(out_dir, roi_id)
    return None if loaded is None else _record(roi_id, loaded)


def load_records(out_dir: Path) -> dict[str, ChipRecord]:
    """Every chip's record, by roi_id (unreadable status files are ignored: redone).

    Raises:
        UnsafeIdError: a status file's name is not a safe id (not a file harvest wrote).
    """
    records = {roi_id: _record(roi_id, st) for roi_id, st in load_statuses(out_dir).items()}
    return {roi_id: rec for roi_id, rec in records.items() if rec is not None}


def clean_temporaries(out_dir: Path) -> int:
    """Delete what a killed run left under temporary names; returns how many were removed."""
    subs = (CROSS_SENSOR_DIR, KEPT_DIR, REJECTED_DIR, STATUS_DIR, STATE_DIR)
    # A sub-folder that is a symbolic link out of out_dir is not swept (nor written: chip_folder).
    inside = [out_dir / sub for sub in subs if is_inside(out_dir / sub, out_dir)]
    return remove_temporaries([*inside, out_dir])


def remove_temporaries(folders: Iterable[Path]) -> int:
    """Delete the temporary files and folders (:func:`is_temporary`) directly in ``folders``.

    Folders that do not exist are skipped. Returns how many entries were removed.
    """
    n = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if is_temporary(path):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                n += 1
    return n


def check_run_file(
    out_dir: Path,
    recipe_name: str,
    config_hash: str,
    recipe_spec: Mapping[str, Any] | None = None,
) -> None:
    """Record the recipe of a new folder, or refuse to mix recipes in an existing one.

    Args:
        out_dir: The dataset folder.
        recipe_name: The recipe's name.
        config_hash: Its hash.
        recipe_spec: The whole recipe (its JSON dump), so that ``harvest qa`` can decide again
            with exactly the recipe that made the folder, even one loaded from a file.

    Raises:
        StoreError: the folder was made with another recipe or recipe content.
    """
    path = ensure_inside(out_dir / RUN_FILE, out_dir)
    if path.exists():
        run = read_run_file(out_dir)
        if run.get("config_hash") not in (None, config_hash):
            raise StoreError(
                f"{out_dir} was fetched with recipe {run.get('recipe')} (config hash "
                f"{run.get('config_hash')}), not {recipe_name} ({config_hash}): use another "
                "output folder"
            )
    run_info: dict[str, Any] = {"recipe": recipe_name, "config_hash": config_hash}
    if recipe_spec is not None:
        run_info["recipe_spec"] = dict(recipe_spec)
    atomic_write_json(path, run_info)


def read_run_file(out_dir: Path) -> dict[str, Any]:
    """The folder's ``run.json`` (empty when missing or unreadable)."""
    path = ensure_inside(out_dir / RUN_FILE, out_dir)
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return run if isinstance(run, dict) else {}


MANIFEST_COLUMNS = (
    "roi_id",
    "status",
    "reasons",
    "error",
    "split",
    "s2_id",
    "naip_id",
    "epsg",
    "folder",
    "finished_at",
)
"""The first columns of a SEN2NAIP manifest (``s2_id``, ``naip_id``: the scene ids)."""

SEN2NAIP_FILES = (LR_FILE, HR_FILE, SCL_FILE, META_FILE)


def write_manifest(
    out_dir: Path,
    records: Mapping[str, ChipRecord],
    *,
    id_columns: tuple[str, str] = ("s2_id", "naip_id"),
    files: Sequence[str] = SEN2NAIP_FILES,
) -> Path:
    """Write the chip records as ``manifest.parquet`` (GeoParquet, EPSG:4326 footprints).

    One row per chip, sorted by roi_id; geometry is the chip footprint in lon/lat.

    Args:
        out_dir: The dataset folder.
        records: Every chip's record.
        id_columns: Names of the LR and HR scene id columns (the layout's).
        files: The chip folder's files: one ``sha256_<stem>`` column each.
    """
    import pandas as pd
    import pyarrow as pa
    import shapely

    from harvest.geoio import write_geoparquet

    lr_col, hr_col = id_columns
    columns = tuple({"s2_id": lr_col, "naip_id": hr_col}.get(c, c) for c in MANIFEST_COLUMNS)
    rows: list[dict[str, Any]] = []
    geoms = []
    for roi_id in sorted(records):
        rec = records[roi_id]
        geoms.append(shapely.from_wkt(rec.footprint_wkt) if rec.footprint_wkt else None)
        row: dict[str, Any] = {
            "roi_id": roi_id,
            "status": rec.status.value,
            "reasons": ";".join(rec.reasons),
            "error": rec.error,
            "split": rec.split,
            lr_col: rec.lr_id,
            hr_col: rec.hr_id,
            "epsg": rec.epsg,
            "folder": rec.folder,
            "finished_at": rec.finished_at,
        }
        row.update(rec.metrics)
        for name in files:
            row[f"sha256_{name.split('.')[0].lower()}"] = rec.checksums.get(name)
        for k in ("seconds_read", "seconds_qa", "seconds_write"):
            row[k] = rec.seconds.get(k)
        row["dt_hours"] = rec.dt_hours
        rows.append(row)
    # pandas infers the column types (None-only metric columns stay nullable doubles/objects,
    # as geopandas wrote them before); the geometry goes in as WKB through the one writer.
    frame = pd.DataFrame(rows) if rows else pd.DataFrame({c: [] for c in columns})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    wkb = [None if g is None else shapely.to_wkb(g) for g in geoms]
    table = table.append_column("geometry", pa.array(wkb, type=pa.binary()))
    present = [g for g in geoms if g is not None]
    bbox = list(shapely.total_bounds(present)) if present else None
    types = sorted({g.geom_type for g in present}) or ["Polygon"]
    path = ensure_inside(out_dir / MANIFEST_NAME, out_dir)
    write_geoparquet(path, table, geometry_types=types, bbox=bbox)
    return path


# --------------------------------------------------------------------------------------------
# Train / test split
# --------------------------------------------------------------------------------------------


def _block_is_test(ix: np.ndarray, iy: np.ndarray, seed: int, test_fraction: float) -> np.ndarray:
    out = np.empty(len(ix), dtype=bool)
    for k, (a, b) in enumerate(zip(ix.tolist(), iy.tolist(), strict=True)):
        digest = hashlib.sha256(f"{seed}:{a}:{b}".encode()).digest()
        out[k] = int.from_bytes(digest[:8], "big") / 2.0**64 < test_fraction
    return out


def assign_split(
    roi_ids: Sequence[str],
    lon_deg: npt.ArrayLike,
    lat_deg: npt.ArrayLike,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    block_km: float = 50.0,
    min_gap_km: float = 5.0,
) -> dict[str, str]:
    """Seeded, spatially blocked train/test assignment (see the module docstring).

    Args:
        roi_ids: ROI ids (unique).
        lon_deg: ROI centre longitudes.
        lat_deg: ROI centre latitudes.
        seed: Seed of the block hash: same seed, same split.
        test_fraction: Expected share of test blocks.
        block_km: Side of the equal-area blocks.
        min_gap_km: No test ROI centre lies closer than this to a train ROI centre.

    Returns:
        ``"train"`` or ``"test"`` per roi_id.
    """
    from pyproj import Transformer
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
    n = len(roi_ids)
    if n == 0:
        return {}
    if lon.shape != (n,) or lat.shape != (n,):
        raise StoreError("assign_split needs one lon and one lat per roi_id")
    x, y = Transformer.from_crs(4326, 6933, always_xy=True).transform(lon, lat)
    ix = np.floor(np.asarray(x) / (block_km * 1000.0)).astype(np.int64)
    iy = np.floor(np.asarray(y) / (block_km * 1000.0)).astype(np.int64)
    test = _block_is_test(ix, iy, seed, test_fraction)
    # Link ROIs closer than the gap (chord distance on the sphere never exceeds the arc, so
    # a chord radius equal to the arc gap catches every close pair).
    phi, lam = np.radians(lat), np.radians(lon)
    xyz = EARTH_RADIUS_M * np.column_stack(
        [np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]
    )
    pairs = cKDTree(xyz).query_pairs(min_gap_km * 1000.0, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    order = np.argsort(np.asarray(roi_ids, dtype=object).astype(str), kind="stable")
    leader: dict[int, int] = {}
    for i in order.tolist():
        leader.setdefault(int(comp[i]), i)
    return {
        rid: ("test" if test[leader[int(comp[i])]] else "train") for i, rid in enumerate(roi_ids)
    }


def iter_chip_folders(
    out_dir: Path, *, kept_dir: str = CROSS_SENSOR_DIR
) -> Iterable[tuple[str, Path, bool]]:
    """``(roi_id, folder, kept)`` of every complete chip folder under ``out_dir``.

    Kept chips are looked for in ``kept_dir`` (the layout's; SEN2NAIP: ``cross-sensor/``).

    Raises:
        UnsafeIdError: a folder's name is not a safe id (not a folder harvest wrote).
        UnsafePathError: a folder resolves outside ``out_dir`` (a symbolic link).
    """
    for sub, kept in ((kept_dir, True), (REJECTED_DIR, False)):
        folder = out_dir / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                check_id(path.name, field="roi_id", where=str(path), fix=_FOREIGN)
                yield path.name, ensure_inside(path, out_dir), kept
