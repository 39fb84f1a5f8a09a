"""Dataset writers: the SEN2NAIP cross-sensor layout, the manifest, atomic writes, the split.

Layout of a fetch output folder ``OUT``::

    OUT/cross-sensor/ROI_xxxxx/LR.tif         4 x 121 x 121, float32 reflectance, NaN = nodata
    OUT/cross-sensor/ROI_xxxxx/HR.tif         4 x 484 x 484, float32 reflectance, NaN = nodata
    OUT/cross-sensor/ROI_xxxxx/SCL.tif        1 x 121 x 121, uint8 Sentinel-2 SCL (0 = nodata)
    OUT/cross-sensor/ROI_xxxxx/metadata.json  Table 1 of the SEN2NAIP paper + harvest fields
    OUT/rejected/ROI_xxxxx/...                the same files for chips QA rejected
    OUT/manifest.parquet                      GeoParquet, one row per chip (any status)
    OUT/.harvest/status/ROI_xxxxx.json        per-chip status: the resume points
    OUT/.harvest/run.json                     recipe name and config hash of the folder

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
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harvest.cog import encode_cog
from harvest.diskio import write_file, write_guard
from harvest.errors import StoreError
from harvest.grid import ChipGrid
from harvest.ids import check_id, ensure_inside, is_inside

CROSS_SENSOR_DIR = "cross-sensor"
REJECTED_DIR = "rejected"
STATE_DIR = ".harvest"
STATUS_DIR = f"{STATE_DIR}/status"
MANIFEST_NAME = "manifest.parquet"
RUN_FILE = f"{STATE_DIR}/run.json"
TMP_MARK = ".tmp-"
LR_FILE, HR_FILE, SCL_FILE, META_FILE = "LR.tif", "HR.tif", "SCL.tif", "metadata.json"

EARTH_RADIUS_M = 6_371_008.8

# The fix for a chip folder or status file harvest did not write (its name is no safe id).
_FOREIGN = "harvest did not write it: move it out of the dataset folder and run again"


# --------------------------------------------------------------------------------------------
# Atomic small files
# --------------------------------------------------------------------------------------------


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary name of this module (what a killed run leaves behind)."""
    return path.name.startswith(".") and TMP_MARK in path.name


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Args:
        path: Destination.
        data: The bytes.
        durable: ``fsync`` the temporary file before the rename. The rename alone is what
            makes the write all-or-nothing for a killed process (the page cache outlives it);
            ``fsync`` only matters for an operating-system crash or power loss.
    """
    tmp = _tmp_name(path)
    try:
        # A full or failing disk stops the run with the path named (harvest.diskio).
        with write_guard(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: Path, obj: Any, *, durable: bool = True) -> None:
    """Write JSON (sorted keys, NaN as null) atomically (``durable``: see atomic_write_bytes)."""
    atomic_write_bytes(path, json_bytes(obj), durable=durable)


def json_bytes(obj: Any) -> bytes:
    """The JSON harvest writes: sorted keys, two-space indent, NaN as null, final newline."""
    return (json.dumps(_json_safe(obj), indent=2, sort_keys=True) + "\n").encode()


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if not np.isfinite(obj) else obj
    if isinstance(obj, np.floating):
        return _json_safe(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
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
    """
    if data.shape != (len(band_names), grid.height, grid.width):
        raise StoreError(
            f"{path.name}: array {data.shape} does not match {len(band_names)} bands on a "
            f"{grid.height} x {grid.width} grid"
        )
    # ZSTD level 1: float reflectance barely compresses (3.7 -> 2.4 MB for HR.tif with any
    # codec), and it writes 2.7x faster than DEFLATE; GDAL >= 2.3 reads it. The floating-point
    # predictor for floats, horizontal differencing for integers (ADR 0004). One 128 px tile
    # for a 121 px LR chip (a 256 px tile would compress 4.5x padding).
    blob = encode_cog(
        data,
        epsg=grid.epsg,
        transform=grid.transform,
        band_names=band_names,
        nodata=nodata,
        tile=128 if max(grid.width, grid.height) <= 128 else 256,
        zstd_level=1,
    )
    # Written and hashed from the same bytes (no re-read for checksums).
    write_file(path, blob)
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class ChipFiles:
    """What :func:`write_chip_folder` wrote: the folder and the SHA-256 of each file."""

    folder: Path
    sha256: dict[str, str]


def chip_folder(out_dir: Path, roi_id: str, kept: bool) -> Path:
    """Where a chip lives: ``cross-sensor/`` when kept, ``rejected/`` otherwise.

    Raises:
        UnsafeIdError: ``roi_id`` is not a safe id (:mod:`harvest.ids`).
        UnsafePathError: the folder resolves outside ``out_dir`` (a symbolic link).
    """
    check_id(roi_id, field="roi_id")
    return ensure_inside(out_dir / (CROSS_SENSOR_DIR if kept else REJECTED_DIR) / roi_id, out_dir)


def _remove_tree(path: Path, root: Path | None) -> None:
    # Never follow a path out of the output folder, even to delete (defence in depth).
    if root is not None:
        ensure_inside(path, root)
    # Rename first so a kill halfway through a deletion leaves only a temporary name behind.
    if not path.exists():
        return
    doomed = _tmp_name(path)
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
    tmp = _tmp_name(final)
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
    """Write one chip folder atomically (complete or absent), replacing any older copy.

    The chip lands in ``cross-sensor/`` when ``kept`` else in ``rejected/``; a copy under the
    other folder (from an earlier run or QA pass) is removed.
    """
    final = chip_folder(out_dir, roi_id, kept)
    other = chip_folder(out_dir, roi_id, not kept)  # checked before anything is written
    with atomic_folder(final, root=out_dir) as tmp:
        sums = {
            LR_FILE: write_cog(
                tmp / LR_FILE, lr.astype(np.float32, copy=False), lr_grid, lr_bands, np.nan
            ),
            HR_FILE: write_cog(
                tmp / HR_FILE, hr.astype(np.float32, copy=False), hr_grid, hr_bands, np.nan
            ),
        }
        if scl is not None:
            sums[SCL_FILE] = write_cog(
                tmp / SCL_FILE, scl[None].astype(np.uint8), lr_grid, ["SCL"], 0
            )
        meta_bytes = json_bytes(dict(metadata))
        write_file(tmp / META_FILE, meta_bytes)
        sums[META_FILE] = hashlib.sha256(meta_bytes).hexdigest()
        sums = dict(sorted(sums.items()))
    _remove_tree(other, out_dir)
    return ChipFiles(folder=final, sha256=sums)


def move_chip_folder(out_dir: Path, roi_id: str, kept: bool) -> Path:
    """Move a written chip between ``cross-sensor/`` and ``rejected/`` (one rename)."""
    src = chip_folder(out_dir, roi_id, not kept)
    dst = chip_folder(out_dir, roi_id, kept)
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


def _read_tif(path: Path) -> tuple[npt.NDArray[Any], ChipGrid]:
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
        lr, lr_grid = _read_tif(folder / LR_FILE)
        hr, hr_grid = _read_tif(folder / HR_FILE)
        scl = _read_tif(folder / SCL_FILE)[0][0] if (folder / SCL_FILE).exists() else None
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


def clean_temporaries(out_dir: Path) -> int:
    """Delete what a killed run left under temporary names; returns how many were removed."""
    subs = (CROSS_SENSOR_DIR, REJECTED_DIR, STATUS_DIR, STATE_DIR)
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


def check_run_file(out_dir: Path, recipe_name: str, config_hash: str) -> None:
    """Record the recipe of a new folder, or refuse to mix recipes in an existing one.

    Raises:
        StoreError: the folder was made with another recipe or recipe content.
    """
    path = ensure_inside(out_dir / RUN_FILE, out_dir)
    if path.exists():
        try:
            run = json.loads(path.read_text())
        except json.JSONDecodeError:
            run = {}
        if run.get("config_hash") not in (None, config_hash):
            raise StoreError(
                f"{out_dir} was fetched with recipe {run.get('recipe')} (config hash "
                f"{run.get('config_hash')}), not {recipe_name} ({config_hash}): use another "
                "output folder"
            )
    atomic_write_json(path, {"recipe": recipe_name, "config_hash": config_hash})


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


def write_manifest(out_dir: Path, statuses: Mapping[str, Mapping[str, Any]]) -> Path:
    """Merge the status records into ``manifest.parquet`` (GeoParquet, EPSG:4326 footprints).

    One row per chip, sorted by roi_id; geometry is the chip footprint in lon/lat.
    """
    import geopandas as gpd
    import shapely

    rows = []
    geoms = []
    for roi_id in sorted(statuses):
        st = dict(statuses[roi_id])
        wkt = st.pop("footprint_wkt", None)
        geoms.append(shapely.from_wkt(wkt) if wkt else None)
        sums = st.pop("sha256", None) or {}
        metrics = st.pop("qa", None) or {}
        row = {c: st.get(c) for c in MANIFEST_COLUMNS}
        row["roi_id"] = roi_id
        for k, v in metrics.items():
            row[k] = v
        for name in (LR_FILE, HR_FILE, SCL_FILE, META_FILE):
            row[f"sha256_{name.split('.')[0].lower()}"] = sums.get(name)
        for k in ("seconds_read", "seconds_qa", "seconds_write", "dt_hours"):
            row[k] = st.get(k)
        rows.append(row)
    frame = gpd.GeoDataFrame(rows, geometry=geoms, crs="EPSG:4326")
    if not rows:
        frame = gpd.GeoDataFrame({c: [] for c in MANIFEST_COLUMNS}, geometry=[], crs="EPSG:4326")
    path = ensure_inside(out_dir / MANIFEST_NAME, out_dir)
    tmp = _tmp_name(path)
    try:
        with write_guard(path):
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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


def iter_chip_folders(out_dir: Path) -> Iterable[tuple[str, Path, bool]]:
    """``(roi_id, folder, kept)`` of every complete chip folder under ``out_dir``.

    Raises:
        UnsafeIdError: a folder's name is not a safe id (not a folder harvest wrote).
        UnsafePathError: a folder resolves outside ``out_dir`` (a symbolic link).
    """
    for sub, kept in ((CROSS_SENSOR_DIR, True), (REJECTED_DIR, False)):
        folder = out_dir / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                check_id(path.name, field="roi_id", where=str(path), fix=_FOREIGN)
                yield path.name, ensure_inside(path, out_dir), kept
