"""The SEN2NAIP synthetic set: early and late HR images per ROI, blank filter, pruning, degradation.

``harvest build`` runs this for ``products: [synthetic]`` (SCIENCE.md section 1). The steps, each
resumable from what the previous run left:

1. :func:`search`: one bulk HR search over every ROI's synthetic chip (``chip_px`` HR pixels on
   the nested grid, 1,100 px at 2.5 m in the paper); per ROI the early (oldest, from the
   recipe's ``hr_min_year``) and late (most recent) acquisition covering the whole chip
   (:func:`harvest.pairing.early_late`). Written to ``OUT/acquisitions.parquet``, one row per
   ROI (``status`` ``chosen`` or the drop reason); ROIs already in it are not searched again.
2. :func:`read_images`: both images of every chosen ROI read on the chip grid; a ROI is
   rejected when either image holds a blank (zero-variance) 19 x 19 window (``blank``) or a
   nodata pixel (``nodata``): the paper removed 22.7 % of its ROIs so. Kept ROIs go to
   ``OUT/hr-pool/ROI_x/{early,late}/`` (``HR.tif``, uint16 reflectance x 10,000, and
   ``metadata.json``); each ROI's outcome is its status file ``OUT/.harvest/synthetic/ROI_x.json``.
3. Pruning (the build calls :func:`harvest.stages.prune.run` on the ``hr-pool`` images): one
   image per CLIP cluster. A ROI is kept when either of its images is selected, and then both
   are written: the paper's 18,000 clusters gave 17,567 ROIs and 35,134 images (early + late).
4. :func:`write_synthetic`: for each kept ROI and image, ``harvest degrade`` without image
   files, the paper's layout: ``OUT/synthetic/ROI_x/{early,late}/HR.tif`` and ``metadata.json``
   with Table 1's fields and ``d_sim_to_real`` (per method, the 4 x 120-bin histograms of the
   harmonised HR, which the dataloader matches NAIP to); ``histograms.npz`` beside it.

:func:`write_table` writes ``OUT/synthetic.parquet``: one row per image of every searched ROI
(kept, rejected with its reasons, or dropped at search), ``selected`` and ``folder``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harvest import __version__
from harvest.errors import ConfigError, DiskWriteError, HarvestError, InputFileError
from harvest.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    import pyarrow as pa

    from harvest.backends.base import Catalog, SceneRef
    from harvest.backends.registry import ReaderSettings
    from harvest.grid import NestedChips
    from harvest.hrefs import HrefPolicy
    from harvest.recipes import Recipe

logger = logging.getLogger(__name__)

ACQUISITIONS = "acquisitions.parquet"
"""Per ROI: the early and late HR scenes chosen by the search, or why there are none."""
POOL_DIR = "hr-pool"
"""Every kept ROI's early and late HR image, before pruning."""
TABLE = "synthetic.parquet"
"""One row per image: the synthetic set's manifest."""
STATUS_DIR = "synthetic"
"""Under the state folder (``.harvest``): one status file per searched ROI with two images."""
IMAGES = ("early", "late")
HR_SCALE = 10_000
"""HR.tif holds uint16 reflectance x 10,000 (1e-4 steps: far below NAIP's 1/255)."""


def synthetic_recipe(recipe: Recipe, chip_px: int) -> Recipe:
    """The recipe with its HR chip ``chip_px`` wide and its LR chip nested under it.

    Raises:
        ConfigError: ``chip_px`` does not nest on the LR grid (e.g. not a multiple of 4 for
            SEN2NAIP's 2.5 m over 10 m).
    """
    hr_g, lr_g = recipe.hr.primary, recipe.lr.primary
    side_mm = round(hr_g.gsd_m * 1000) * chip_px
    lr_mm = round(lr_g.gsd_m * 1000)
    if chip_px <= 0 or side_mm % lr_mm:
        ratio = lr_g.gsd_m / hr_g.gsd_m
        raise ConfigError(
            f"synthetic.chip_px {chip_px} at {hr_g.gsd_m:g} m does not fit whole {lr_g.gsd_m:g} m "
            f"pixels: give a multiple of {ratio:g} (1100 in the paper)"
        )
    lr_px = side_mm // lr_mm
    hr = recipe.hr.model_copy(update={"groups": (hr_g.model_copy(update={"chip_px": chip_px}),)})
    lr = recipe.lr.model_copy(update={"groups": (lr_g.model_copy(update={"chip_px": lr_px}),)})
    return recipe.model_copy(update={"hr": hr, "lr": lr})


# --- 1. search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchOutcome:
    """What :func:`search` did: ROIs searched now, chosen, and dropped by reason."""

    n_rois: int
    n_searched: int
    n_chosen: int
    dropped_by_reason: tuple[tuple[str, int], ...]
    seconds: float

    def line(self) -> str:
        """One line for the build summary."""
        drops = ", ".join(f"{n} {r}" for r, n in self.dropped_by_reason) or "none dropped"
        return f"{self.n_chosen} of {self.n_rois} ROIs with an early and a late image ({drops})"


def _scene_columns(prefix: str) -> list[pa.Field]:
    from harvest.tables import scene_fields

    return [f.with_nullable(True) for f in scene_fields(prefix)]


def _acquisition_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("roi_id", pa.string(), nullable=False),
            pa.field("lon_deg", pa.float64(), nullable=False),
            pa.field("lat_deg", pa.float64(), nullable=False),
            pa.field("chip_epsg", pa.int32(), nullable=False),
            pa.field("chip_transform", pa.list_(pa.float64(), 6), nullable=False),
            pa.field("chip_px", pa.int32(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("detail", pa.string(), nullable=False),
            pa.field("n_scenes", pa.int32(), nullable=False),
            *_scene_columns("early"),
            *_scene_columns("late"),
        ]
    )


@dataclass(frozen=True)
class Acquisition:
    """One row of ``acquisitions.parquet``.

    Attributes:
        roi_id: The ROI.
        lon_deg: ROI centre longitude.
        lat_deg: ROI centre latitude.
        chip_epsg: CRS of the chip grid.
        chip_transform: Affine of the HR chip (GDAL order as rasterio's first six).
        chip_px: HR chip side in pixels.
        status: ``chosen`` or the drop reason of the search.
        detail: Why it was dropped (empty when chosen).
        n_scenes: Qualifying scenes found.
        early: The early scene (None when dropped).
        late: The late scene (None when dropped).
    """

    roi_id: str
    lon_deg: float
    lat_deg: float
    chip_epsg: int
    chip_transform: tuple[float, ...]
    chip_px: int
    status: str
    detail: str
    n_scenes: int
    early: SceneRef | None = None
    late: SceneRef | None = None

    def to_record(self) -> dict[str, Any]:
        """A flat row of the table."""
        row: dict[str, Any] = {
            "roi_id": self.roi_id,
            "lon_deg": self.lon_deg,
            "lat_deg": self.lat_deg,
            "chip_epsg": self.chip_epsg,
            "chip_transform": list(self.chip_transform),
            "chip_px": self.chip_px,
            "status": self.status,
            "detail": self.detail,
            "n_scenes": self.n_scenes,
        }
        for prefix, scene in (("early", self.early), ("late", self.late)):
            rec = scene.to_record() if scene is not None else {}
            for field in _scene_columns(prefix):
                key = field.name[len(prefix) + 1 :]
                row[field.name] = rec.get("geometry" if key == "footprint" else key)
        return row

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> Acquisition:
        """Rebuild a row written by :meth:`to_record`."""
        from harvest.backends.base import SceneRef

        scenes: list[SceneRef | None] = []
        for prefix in IMAGES:
            if row.get(f"{prefix}_item_id") is None:
                scenes.append(None)
                continue
            cut = len(prefix) + 1
            sub = {k[cut:]: v for k, v in row.items() if k.startswith(f"{prefix}_")}
            sub["geometry"] = sub.pop("footprint")
            scenes.append(SceneRef.from_record(sub))
        return cls(
            roi_id=str(row["roi_id"]),
            lon_deg=float(row["lon_deg"]),
            lat_deg=float(row["lat_deg"]),
            chip_epsg=int(row["chip_epsg"]),
            chip_transform=tuple(float(v) for v in row["chip_transform"]),
            chip_px=int(row["chip_px"]),
            status=str(row["status"]),
            detail=str(row["detail"]),
            n_scenes=int(row["n_scenes"]),
            early=scenes[0],
            late=scenes[1],
        )

    def scene(self, image: str) -> SceneRef:
        """The scene of ``early`` or ``late``."""
        scene = self.early if image == "early" else self.late
        assert scene is not None, f"{self.roi_id} has no {image} scene"
        return scene


def read_acquisitions(path: Path) -> list[Acquisition]:
    """The rows of ``acquisitions.parquet`` (none when the file does not exist).

    Raises:
        InputFileError: the file is not an acquisitions table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        return []
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(
            f"cannot read {path} ({' '.join(str(exc).split())[:200]}); delete it to search again"
        ) from None
    missing = [n for n in _acquisition_schema().names if n not in table.column_names]
    if missing:
        raise InputFileError(
            f"{path} is not an acquisitions table (no column {missing[0]}); delete it to search "
            "again"
        )
    return [Acquisition.from_record(r) for r in table.to_pylist()]


def _write_acquisitions(path: Path, rows: Sequence[Acquisition]) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from harvest.diskio import atomic_write_bytes

    schema = _acquisition_schema()
    records = [r.to_record() for r in rows]
    table = pa.Table.from_pydict(
        {n: [rec[n] for rec in records] for n in schema.names}, schema=schema
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


def search(
    rois: Path,
    *,
    recipe: Recipe,
    catalog: Catalog,
    out_dir: Path,
    start: date,
    end: date,
    progress: Progress | bool = NO_PROGRESS,
) -> SearchOutcome:
    """Search early and late HR scenes for the ROIs not yet in ``acquisitions.parquet``.

    Args:
        rois: The ROI table.
        recipe: The synthetic recipe (:func:`synthetic_recipe`).
        catalog: The catalog backend.
        out_dir: The dataset folder.
        start: First acquisition day.
        end: Last acquisition day.
        progress: How to show the catalog's progress.

    Raises:
        InputFileError: an unreadable ROI or acquisitions table.
        CatalogError: the catalog cannot be searched.
    """
    from harvest.backends.base import Footprint, SearchRequest
    from harvest.geoio import read_roi_points
    from harvest.pairing import DroppedRoi, EarlyLate, RoiFootprint, early_late
    from harvest.stages.search import chip_footprints

    started = time.perf_counter()
    path = out_dir / ACQUISITIONS
    done = read_acquisitions(path)
    known = {a.roi_id for a in done}
    points = read_roi_points(rois)
    todo = [i for i, r in enumerate(points.roi_id) if r not in known]
    found: list[Acquisition] = []
    counts: Counter[str] = Counter()
    if todo:
        idx = np.array(todo)
        lon, lat = points.lon_deg[idx], points.lat_deg[idx]
        grids, geoms = chip_footprints(lon, lat, recipe)
        ids = [str(points.roi_id[i]) for i in todo]
        rois_fp = [
            RoiFootprint(roi_id=r, geometry=g, utm_epsg=int(e))
            for r, g, e in zip(ids, geoms, grids.epsg, strict=True)
        ]
        request = SearchRequest(
            footprints=tuple(Footprint(r.roi_id, r.geometry) for r in rois_fp),
            collections=(recipe.hr.collection,),
            start=datetime(start.year, start.month, start.day, tzinfo=UTC),
            end=datetime(end.year, end.month, end.day, 23, 59, 59, 999999, tzinfo=UTC),
            max_cloud_pct=recipe.max_scene_cloud_pct,
        )
        result = catalog.search(request, progress=Progress.of(progress).enabled)
        chosen = early_late(rois_fp, result.by_collection(recipe.hr.collection), recipe)
        by_roi: dict[str, EarlyLate | DroppedRoi] = {c.roi_id: c for c in chosen.chosen}
        by_roi.update({d.roi_id: d for d in chosen.dropped})
        for k, rid in enumerate(ids):
            chip = grids[k]
            got = by_roi[rid]
            base = Acquisition(
                rid, float(lon[k]), float(lat[k]), int(chip.epsg),
                tuple(chip.hr.transform_tuple), int(chip.hr.width), "chosen", "", 0,
            )  # fmt: skip
            if isinstance(got, EarlyLate):
                row = replace(base, n_scenes=got.n_scenes, early=got.early, late=got.late)
            else:
                row = replace(
                    base, status=str(got.reason.value), detail=got.detail, n_scenes=got.n_hr_scenes
                )
            found.append(row)
        _write_acquisitions(path, [*done, *found])
    rows = [*done, *found]
    for a in rows:
        if a.status != "chosen":
            counts[a.status] += 1
    return SearchOutcome(
        n_rois=len(rows),
        n_searched=len(found),
        n_chosen=sum(a.status == "chosen" for a in rows),
        dropped_by_reason=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        seconds=time.perf_counter() - started,
    )


# --- 2. read + blank filter ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOutcome:
    """What :func:`read_images` did (counts over every chosen ROI, done now or before)."""

    n_chosen: int
    n_kept: int
    n_rejected: int
    n_failed: int
    n_done_before: int
    rejected_by_reason: tuple[tuple[str, int], ...]
    seconds: float

    def line(self) -> str:
        """One line for the build summary."""
        why = ", ".join(f"{n} {r}" for r, n in self.rejected_by_reason)
        return (
            f"{self.n_kept} ROIs kept ({2 * self.n_kept} images), {self.n_rejected} rejected"
            + (f" ({why})" if why else "")
            + f", {self.n_failed} failed"
        )


def _status_path(out_dir: Path, roi_id: str) -> Path:
    from harvest.store import STATE_DIR

    return out_dir / STATE_DIR / STATUS_DIR / f"{roi_id}.json"


def load_status(out_dir: Path, roi_id: str) -> dict[str, Any] | None:
    """A ROI's status file, or None (none yet, or unreadable: the ROI is done again)."""
    path = _status_path(out_dir, roi_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") else None


def image_metadata(
    acq: Acquisition, image: str, grids: NestedChips, split: str, bands: Sequence[str]
) -> dict[str, Any]:
    """Table 1's fields of the synthetic subset for one image, plus harvest's own."""
    from harvest.writers.base import footprint_fields, iso_time

    scene = acq.scene(image)
    return {
        "roi_id": acq.roi_id,
        "test": split,  # the paper's convention: the string "train" or "test"
        "split": split,
        "image": image,
        "naip_id": scene.item_id,
        "naip_date": iso_time(scene),
        **footprint_fields(grids),
        "proj:transform": list(grids.hr.transform_tuple),
        "proj:shape": [grids.hr.height, grids.hr.width],
        "hr_bands": list(bands),
        "reflectance": f"uint16 x {HR_SCALE} (HR.tif)",
        "hr_collection": scene.collection,
        "hr_gsd_m": scene.gsd_m,
        "harvest_version": __version__,
    }


def write_hr(path: Path, data: np.ndarray, grids: NestedChips, bands: Sequence[str]) -> str:
    """``HR.tif``: reflectance as uint16 x 10,000, returns its SHA-256."""
    from harvest.store import write_cog

    scaled = np.clip(np.rint(data * HR_SCALE), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return write_cog(path, scaled, grids.hr, bands)


def _read_roi(
    acq: Acquisition,
    recipe: Recipe,
    readers: ReaderSettings,
    policy: HrefPolicy,
    blank_window_px: int,
) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
    """Both images of one ROI and the reasons to reject it (empty: keep)."""
    from harvest.backends.registry import reader_for
    from harvest.qa import blank_fraction

    sensor = recipe.hr
    group = sensor.primary
    grids = _grids(acq, recipe)
    data: dict[str, np.ndarray] = {}
    reasons: list[str] = []
    facts: dict[str, Any] = {}
    for image in IMAGES:
        scene = acq.scene(image)
        policy.check_all([scene.assets[b].href for b in group.bands if b in scene.assets])
        chip = reader_for(scene.assets, readers).read(
            scene.assets, group.bands, grids.hr, sensor.resampling
        )
        arr = np.asarray(chip.data, dtype=np.float32)
        data[image] = arr
        finite = np.isfinite(arr)
        nodata = float(1.0 - finite.all(axis=0).mean())
        blank = blank_fraction(np.where(finite, arr, 0.0), blank_window_px)
        facts[image] = {"nodata_fraction": nodata, "blank_fraction": blank}
        if nodata > 0 and "nodata" not in reasons:
            reasons.append("nodata")
        if blank > 0 and "blank" not in reasons:
            reasons.append("blank")
    return data, reasons, facts


def _grids(acq: Acquisition, recipe: Recipe) -> NestedChips:
    from harvest.grid import ChipGridArray, ChipLayout

    t = acq.chip_transform
    return ChipGridArray(
        layout=ChipLayout.from_recipe(recipe),
        epsg=np.array([acq.chip_epsg], dtype=np.int32),
        left_m=np.array([t[2]]),
        top_m=np.array([t[5]]),
    )[0]


def read_images(
    out_dir: Path,
    *,
    recipe: Recipe,
    readers: ReaderSettings,
    policy: HrefPolicy,
    split_seed: int = 0,
    blank_window_px: int = 19,
    progress: Progress | bool = NO_PROGRESS,
) -> ReadOutcome:
    """Read, check and pool the early and late images of every chosen ROI (module docstring).

    A ROI whose read fails is recorded ``failed`` and tried again on the next run.

    Raises:
        DiskWriteError: the disk is full or failing (the run stops; rerun to resume).
    """
    from harvest.ids import check_id
    from harvest.store import assign_split, atomic_folder, atomic_write_json, remove_temporaries

    started = time.perf_counter()
    chosen = [a for a in read_acquisitions(out_dir / ACQUISITIONS) if a.status == "chosen"]
    for a in chosen:
        check_id(a.roi_id, field="roi_id", where=str(out_dir / ACQUISITIONS))
    pool = out_dir / POOL_DIR
    if pool.is_dir():
        remove_temporaries(p for p in pool.iterdir())
    split = assign_split(
        [a.roi_id for a in chosen],
        [a.lon_deg for a in chosen],
        [a.lat_deg for a in chosen],
        seed=split_seed,
    )
    statuses = {a.roi_id: load_status(out_dir, a.roi_id) for a in chosen}
    todo = [
        a
        for a in chosen
        if (s := statuses[a.roi_id]) is None
        or s["status"] == "failed"
        or (s["status"] == "kept" and not (pool / a.roi_id).is_dir())
    ]
    bar = Progress.of(progress).bar("read HR images", len(todo))
    bands = list(recipe.hr.bands)
    try:
        for acq in todo:
            status: dict[str, Any] = {
                "roi_id": acq.roi_id,
                "split": split[acq.roi_id],
                "naip_ids": {i: acq.scene(i).item_id for i in IMAGES},
            }
            try:
                data, reasons, facts = _read_roi(acq, recipe, readers, policy, blank_window_px)
                status.update(facts=facts, reasons=reasons)
                if reasons:
                    status["status"] = "rejected"
                else:
                    grids = _grids(acq, recipe)
                    sums = {}
                    with atomic_folder(pool / acq.roi_id, root=out_dir) as tmp:
                        for image in IMAGES:
                            folder = tmp / image
                            folder.mkdir()
                            sums[image] = write_hr(folder / "HR.tif", data[image], grids, bands)
                            meta = image_metadata(acq, image, grids, split[acq.roi_id], bands)
                            atomic_write_json(folder / "metadata.json", meta, durable=False)
                    status.update(status="kept", sha256=sums)
            except DiskWriteError:
                raise
            except Exception as exc:
                kind = type(exc).__name__ if not isinstance(exc, HarvestError) else "HarvestError"
                status.update(status="failed", error=f"{kind}: {' '.join(str(exc).split())}"[:500])
                logger.debug("synthetic ROI %s failed: %s", acq.roi_id, status["error"])
            atomic_write_json(_status_path(out_dir, acq.roi_id), status, durable=False)
            statuses[acq.roi_id] = status
            bar.advance()
    finally:
        bar.close()
    by_status = Counter(str((s or {}).get("status")) for s in statuses.values())
    reasons_count: Counter[str] = Counter()
    for s in statuses.values():
        if s is not None and s.get("status") == "rejected":
            reasons_count.update(s.get("reasons", []))
    return ReadOutcome(
        n_chosen=len(chosen),
        n_kept=by_status["kept"],
        n_rejected=by_status["rejected"],
        n_failed=by_status["failed"],
        n_done_before=len(chosen) - len(todo),
        rejected_by_reason=tuple(sorted(reasons_count.items(), key=lambda kv: (-kv[1], kv[0]))),
        seconds=time.perf_counter() - started,
    )


# --- 4. the synthetic layout ---------------------------------------------------------------------


def kept_rois(selection: Path | None, out_dir: Path) -> list[str]:
    """The pooled ROIs to write: those with a selected image (all of them without pruning)."""
    pool = out_dir / POOL_DIR
    pooled = sorted(p.name for p in pool.iterdir() if p.is_dir()) if pool.is_dir() else []
    if selection is None:
        return pooled
    import pyarrow.parquet as pq

    table = pq.read_table(selection, columns=["path", "selected"]).to_pylist()
    chosen = {
        Path(r["path"]).parts[1]
        for r in table
        if r["selected"] and Path(r["path"]).parts[0] == POOL_DIR
    }
    return [r for r in pooled if r in chosen]


def write_synthetic(
    out_dir: Path,
    rois: Iterable[str],
    *,
    model: str,
    methods: Sequence[str],
    seed: int,
    images: bool = False,
    progress: Progress | bool = NO_PROGRESS,
) -> Any:
    """``synthetic/ROI_x/{early,late}/`` for ``rois`` (:func:`harvest.stages.degrade.run`)."""
    from harvest.stages import degrade

    keep = {(r, i) for r in rois for i in IMAGES}
    return degrade.run(
        out_dir / POOL_DIR,
        model,
        out_dir,
        methods=methods,
        seed=seed,
        only=keep,
        images=images,
        progress=progress,
    )


def write_table(out_dir: Path, selection: Path | None) -> Path:
    """``synthetic.parquet``: one row per image of every searched ROI (module docstring)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from harvest.diskio import atomic_write_bytes

    selected: dict[str, bool] = {}
    if selection is not None and selection.exists():
        for r in pq.read_table(selection, columns=["path", "selected"]).to_pylist():
            selected[str(r["path"])] = bool(r["selected"])
    rows: list[dict[str, Any]] = []
    for acq in read_acquisitions(out_dir / ACQUISITIONS):
        st = load_status(out_dir, acq.roi_id) if acq.status == "chosen" else None
        for image in IMAGES:
            scene = acq.early if image == "early" else acq.late
            if acq.status != "chosen":
                status, reasons = "dropped", acq.status
            elif st is None:
                status, reasons = "pending", ""
            else:
                status, reasons = str(st["status"]), ";".join(st.get("reasons", []))
            pool_rel = f"{POOL_DIR}/{acq.roi_id}/{image}/HR.tif"
            folder = f"synthetic/{acq.roi_id}/{image}"
            written = (out_dir / folder / "metadata.json").is_file()
            facts = (st or {}).get("facts", {}).get(image, {})
            rows.append(
                {
                    "roi_id": acq.roi_id,
                    "image": image,
                    "status": status,
                    "reasons": reasons,
                    "split": (st or {}).get("split"),
                    "naip_id": scene.item_id if scene is not None else None,
                    "naip_date": scene.datetime.date().isoformat() if scene is not None else None,
                    "lon_deg": acq.lon_deg,
                    "lat_deg": acq.lat_deg,
                    "epsg": acq.chip_epsg,
                    "blank_fraction": facts.get("blank_fraction"),
                    "nodata_fraction": facts.get("nodata_fraction"),
                    "selected": selected.get(pool_rel),
                    "folder": folder if written else None,
                }
            )
    schema = pa.schema(
        [
            ("roi_id", pa.string()),
            ("image", pa.string()),
            ("status", pa.string()),
            ("reasons", pa.string()),
            ("split", pa.string()),
            ("naip_id", pa.string()),
            ("naip_date", pa.string()),
            ("lon_deg", pa.float64()),
            ("lat_deg", pa.float64()),
            ("epsg", pa.int32()),
            ("blank_fraction", pa.float64()),
            ("nodata_fraction", pa.float64()),
            ("selected", pa.bool_()),
            ("folder", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    path = out_dir / TABLE
    atomic_write_bytes(path, buf.getvalue())
    return path
