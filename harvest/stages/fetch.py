"""The fetch stage: pairs -> read LR + HR on the nested chip grid -> QA -> chip folders.

One task per chip (:func:`process_chip`): read the LR bands (and SCL) on the LR grid and the HR
bands area-averaged to the HR grid, bring HR to the LR grid (area average, factor 4 for
SEN2NAIP), run :func:`harvest.qa.evaluate_chip` (blank detection on the full-resolution HR),
optionally move the LR by the estimated shift (bicubic), write the chip folder
(:mod:`harvest.store`) and then its status file. Tasks run in this process (``workers=1``), on a
Dask ``LocalCluster`` of worker processes (``workers=N``) or on an existing cluster
(``scheduler=ADDR``; workers must see ``out_dir`` on a shared file system). Chips run in scene
order; on a cluster each worker gets a contiguous share of them in tasks of a few chips of one
scene, so a scene's files are opened (and its shared tiles decoded) once per worker. Workers of
an existing cluster should be started with the malloc settings of :data:`WORKER_MALLOC_ENV`
(``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``): with Dask's default the workers spent
half their time in the kernel.

Resume: every chip's status file is written after its folder is complete, so on a new run a
chip with a ``kept`` / ``rejected`` status (and its folder) is skipped and everything else
(``failed``, or never finished) is done again; temporary names left by a kill are deleted
first. The manifest is rebuilt from the status files at the end of every run (and by
``harvest qa``), so a killed run neither loses nor duplicates a chip.

One run per folder: fetch and QA hold the folder's lock (:mod:`harvest.lock`) from before the
first write (and the clean-up of temporary names, which therefore only meets what dead runs
left) to the end. A chip that cannot be read or checked is a ``failed`` row; a write the disk
refuses (full, quota, read-only, I/O error: :mod:`harvest.diskio`) stops the run instead,
cancelling what is queued on the cluster, since every later chip would fail the same way.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import shapely

from harvest import __version__
from harvest.catalog.base import AssetRef, SceneRef
from harvest.config import Recipe, config_hash
from harvest.errors import ConfigError, DiskWriteError, HarvestError, InputFileError
from harvest.grid import ChipGridArray, ChipLayout, NestedChips, chip_grids
from harvest.hrefs import LOCAL_POLICY, AllowedHost, HrefPolicy
from harvest.ids import check_id, check_ids
from harvest.lock import dataset_lock_path, folder_lock
from harvest.pairing import PairCandidate
from harvest.progress import NO_PROGRESS, Progress
from harvest.qa import QaResult, QaThresholds, evaluate_nested
from harvest.qa import correct_shift as shift_lr
from harvest.read import (
    RasterioReader,
    Reader,
    Signer,
    gdal_env_options,
    gdal_timeout_options,
)
from harvest.records import FAILED, KEPT, REJECTED, FetchSummary
from harvest.stages._chips import ChipProgress, finish_run, qa_columns
from harvest.store import (
    assign_split,
    check_run_file,
    chip_folder,
    clean_temporaries,
    load_status,
    load_statuses,
    write_chip_folder,
    write_manifest,
    write_status,
)

logger = logging.getLogger(__name__)

SCL_BAND = "SCL"


class PairRowLike(Protocol):
    """What the fetch stage needs of a pairs-table row (:class:`harvest.tables.PairRow`)."""

    @property
    def roi_id(self) -> str:
        """The ROI id."""
        ...

    @property
    def lon_deg(self) -> float:
        """ROI centre longitude."""
        ...

    @property
    def lat_deg(self) -> float:
        """ROI centre latitude."""
        ...

    @property
    def utm_epsg(self) -> int:
        """CRS of the chip grid."""
        ...

    @property
    def pair(self) -> PairCandidate:
        """The chosen pair."""
        ...


@dataclass(frozen=True)
class FetchJob:
    """One chip to fetch: the ROI, where its chip is, and the pair to read.

    Attributes:
        roi_id: The ROI (also the chip folder name).
        lon_deg: ROI centre longitude.
        lat_deg: ROI centre latitude.
        utm_epsg: CRS of the chip grid.
        pair: LR and HR scenes with their (unsigned) assets.
        chip_corner: ``(left_m, top_m)`` of the chip when the pairs table fixed it already.
    """

    roi_id: str
    lon_deg: float
    lat_deg: float
    utm_epsg: int
    pair: PairCandidate
    chip_corner: tuple[float, float] | None = None

    def grids(self, recipe: Recipe) -> NestedChips:
        """The nested LR/HR chip grids of this ROI."""
        if self.chip_corner is None:
            return chip_grids(self.lon_deg, self.lat_deg, recipe, epsg=self.utm_epsg)
        left, top = self.chip_corner
        return ChipGridArray(
            layout=ChipLayout.from_recipe(recipe),
            epsg=np.array([self.utm_epsg], dtype=np.int32),
            left_m=np.array([left]),
            top_m=np.array([top]),
        )[0]


def jobs_from_rows(rows: Iterable[PairRowLike]) -> list[FetchJob]:
    """Fetch jobs from pairs-table rows (rank-0 rows only when ranks are present).

    Raises:
        InputFileError: a ROI has two chosen pairs.
        UnsafeIdError: a roi_id is not a safe id (:mod:`harvest.ids`): it names the chip folder.
    """
    jobs: list[FetchJob] = []
    seen: set[str] = set()
    for i, row in enumerate(rows, start=1):
        check_id(row.roi_id, field="roi_id", where=f"pairs row {i}")
        if row.pair.rank != 0:
            continue
        if row.roi_id in seen:
            raise InputFileError(f"ROI {row.roi_id} has two rank-0 pairs: fix the pairs table")
        seen.add(row.roi_id)
        corner = None
        transform = getattr(row, "chip_transform", None)
        if getattr(row, "chip_px", 0) and transform is not None:
            corner = (float(transform[2]), float(transform[5]))
        jobs.append(
            FetchJob(
                roi_id=row.roi_id,
                lon_deg=float(row.lon_deg),
                lat_deg=float(row.lat_deg),
                utm_epsg=int(row.utm_epsg),
                pair=row.pair,
                chip_corner=corner,
            )
        )
    return jobs


@dataclass(frozen=True)
class FetchSettings:
    """Everything a chip task needs besides its job (picklable: goes to Dask workers).

    Attributes:
        recipe: The recipe (bands, grids).
        out_dir: Dataset folder.
        thresholds: QA limits.
        correct_shift: Move kept LR chips by the estimated shift (bicubic) before writing.
        env_options: GDAL settings for the reads (set inside every worker).
        sign: Href signer applied right before reading.
        config_hash: Hash of the recipe, recorded in every metadata.json.
        ee_project: Google Cloud project billed for Earth Engine reads (``ee://`` assets);
            None: the project of the credentials each worker finds.
        ee_url: Earth Engine endpoint for those reads (e.g. the high-volume one); None: the
            default.
        href_policy: Which asset hrefs may be read (:mod:`harvest.hrefs`): everything for a
            local catalog; for a remote one public URLs and the allow-listed hosts, through
            the GDAL drivers of :data:`~harvest.hrefs.REMOTE_RASTER_DRIVERS` only. A refused
            href fails its chip before anything is read.
        timeout_s: Seconds to wait for one answer of Earth Engine (``--timeout``; None: the
            reader's default). GDAL's HTTP timeouts travel in ``env_options``.
    """

    recipe: Recipe
    out_dir: Path
    thresholds: QaThresholds = field(default_factory=QaThresholds)
    correct_shift: bool = False
    env_options: Mapping[str, Any] = field(default_factory=gdal_env_options)
    sign: Signer | None = None
    config_hash: str = ""
    ee_project: str | None = None
    ee_url: str | None = None
    href_policy: HrefPolicy = LOCAL_POLICY
    timeout_s: float | None = None


# One reader per worker process, so open datasets survive from one chip to the next.
_READERS: dict[tuple[Any, ...], RasterioReader] = {}


def _worker_reader(settings: FetchSettings) -> RasterioReader:
    drivers = settings.href_policy.raster_drivers
    env = tuple(sorted((k, str(v)) for k, v in settings.env_options.items()))
    key = (id(settings.sign), env, drivers)
    reader = _READERS.get(key)
    if reader is None:
        reader = RasterioReader(
            sign=settings.sign, env_options=dict(settings.env_options), drivers=drivers
        )
        _READERS[key] = reader
    return reader


def _reader_for(
    assets: Mapping[str, AssetRef],
    default: Reader,
    given: Reader | None,
    settings: FetchSettings | None = None,
) -> Reader:
    """The reader of one scene: Earth Engine's for ``ee://`` assets, unless one was given.

    The Earth Engine reader is this process's for the settings' project and endpoint.
    """
    if given is None and any(ref.href.startswith("ee://") for ref in assets.values()):
        from harvest.catalog.earthengine import shared_reader

        if settings is None:
            return shared_reader()
        if settings.timeout_s is None:
            return shared_reader(settings.ee_project, settings.ee_url)
        return shared_reader(settings.ee_project, settings.ee_url, settings.timeout_s)
    return default


def _hrefs_read(job: FetchJob, recipe: Recipe) -> list[str]:
    """The hrefs a chip reads: its LR bands and SCL, then its HR bands (those the scenes have)."""
    lr, hr = job.pair.lr.assets, job.pair.hr.assets
    wanted = [(lr, b) for b in (*recipe.lr.bands, SCL_BAND)] + [(hr, b) for b in recipe.hr.bands]
    return [assets[band].href for assets, band in wanted if band in assets]


def _saturation_value(assets: Mapping[str, AssetRef], bands: Sequence[str]) -> float | None:
    # An 8-bit source saturates at DN 255; wider types have no fixed ceiling worth testing.
    values = []
    for band in bands:
        ref = assets.get(band)
        if ref is None or ref.dtype != "uint8":
            return None
        values.append(255.0 * ref.scale + ref.offset)
    return min(values) if values else None


def _date(scene: SceneRef) -> str:
    return scene.datetime.isoformat().replace("+00:00", "Z")


def chip_metadata(
    job: FetchJob,
    grids: NestedChips,
    split: str,
    qa: QaResult,
    settings: FetchSettings,
    *,
    shift_corrected: bool,
    hr_saturation: float | None,
) -> dict[str, Any]:
    """The metadata.json of one chip: SEN2NAIP's Table 1 fields plus harvest's own."""
    lr, hr = job.pair.lr, job.pair.hr
    left, bottom, right, top = grids.bounds
    cx, cy = (left + right) / 2.0, (bottom + top) / 2.0
    lon, lat = _to_lonlat(grids.epsg).transform(cx, cy)
    ring = [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]
    s = qa.shift
    return {
        "roi_id": job.roi_id,
        "test": split == "test",
        "split": split,
        "s2_id": lr.item_id,
        "s2_date": _date(lr),
        "s2_sen2cor_version": lr.processing_baseline,
        "s2_processing_baseline": lr.processing_baseline,
        "s2_view_off_nadir": lr.view_off_nadir_deg,
        "s2_view_sun_azimuth": lr.sun_azimuth_deg,
        "s2_view_sun_elevation": lr.sun_elevation_deg,
        "naip_id": hr.item_id,
        "naip_date": _date(hr),
        "proj:epsg": grids.epsg,
        "proj:geometry": {"type": "Polygon", "coordinates": [ring]},
        "proj:centroid": {"lat": lat, "lon": lon},
        "proj:transform": list(grids.lr.transform_tuple),
        "proj:shape": [grids.lr.height, grids.lr.width],
        "hr_proj:transform": list(grids.hr.transform_tuple),
        "hr_proj:shape": [grids.hr.height, grids.hr.width],
        "QA_1": qa.qa1_px,
        "QA_2": qa.qa2_deg,
        "dt_hours": job.pair.dt_hours,
        "shift_dx_px": s.dx_px,
        "shift_dy_px": s.dy_px,
        "shift_east_m": s.east_m,
        "shift_north_m": s.north_m,
        "shift_method": s.method,
        "shift_corrected": shift_corrected,
        "hr_saturation": hr_saturation,
        "lr_bands": list(settings.recipe.lr.bands),
        "hr_bands": list(settings.recipe.hr.bands),
        "reflectance": "float32, NaN = nodata",
        "recipe": settings.recipe.name,
        "harvest_version": __version__,
        "config_hash": settings.config_hash,
    }


def _factor(recipe: Recipe) -> int:
    ratio = recipe.lr.gsd_m / recipe.hr.gsd_m
    factor = round(ratio)
    if abs(ratio - factor) > 1e-9 or factor < 1:
        raise InputFileError(
            f"recipe {recipe.name}: LR {recipe.lr.gsd_m} m / HR {recipe.hr.gsd_m} m is not an "
            "integer ratio; the fetch stage needs nested grids"
        )
    return factor


def process_chip(
    job: FetchJob,
    settings: FetchSettings,
    split: str,
    reader: Reader | None = None,
) -> dict[str, Any]:
    """Fetch, check and write one chip; returns (and records) its status.

    Never raises for a chip-level problem: a missing, corrupt or truncated file, or any other
    error, becomes a ``failed`` status naming the cause (the run goes on with other chips).
    """
    started_at = _utc_now()
    recipe = settings.recipe
    grids = job.grids(recipe)
    left, bottom, right, top = grids.bounds
    footprint = shapely.box(left, bottom, right, top)
    status: dict[str, Any] = {
        "roi_id": job.roi_id,
        "split": split,
        "s2_id": job.pair.lr.item_id,
        "naip_id": job.pair.hr.item_id,
        "epsg": grids.epsg,
        "dt_hours": job.pair.dt_hours,
        "footprint_wkt": _footprint_lonlat(footprint, grids.epsg).wkt,
    }
    rdr = reader if reader is not None else _worker_reader(settings)
    try:
        t0 = time.perf_counter()
        lr_assets = job.pair.lr.assets
        hr_assets = job.pair.hr.assets
        # Before any read: a remote catalog's href to a local file or a private host fails
        # the chip here, and no request is sent.
        settings.href_policy.check_all(_hrefs_read(job, recipe))
        lr_rdr = _reader_for(lr_assets, rdr, reader, settings)
        lr = lr_rdr.read(lr_assets, recipe.lr.bands, grids.lr, "nearest")
        scl_ref = lr_assets.get(SCL_BAND)
        scl_raw = lr_rdr.read_raw(scl_ref, grids.lr) if scl_ref is not None else None
        t1 = time.perf_counter()
        hr = _reader_for(hr_assets, rdr, reader, settings).read(
            hr_assets, recipe.hr.bands, grids.hr, "average"
        )
        t2 = time.perf_counter()
        scl = None if scl_raw is None else np.nan_to_num(scl_raw, nan=0.0).astype(np.uint8)
        hr_sat = _saturation_value(hr_assets, recipe.hr.bands)
        qa = evaluate_nested(
            lr.data, hr.data, scl, _factor(recipe), recipe.lr.gsd_m, hr_sat, settings.thresholds
        )
        lr_data = lr.data
        corrected = False
        if settings.correct_shift and qa.kept and qa.shift.ok:
            lr_data = shift_lr(lr_data, qa.shift).astype(np.float32)
            corrected = True
        t3 = time.perf_counter()
        kept = qa.kept
        meta = chip_metadata(
            job, grids, split, qa, settings, shift_corrected=corrected, hr_saturation=hr_sat
        )
        files = write_chip_folder(
            settings.out_dir,
            job.roi_id,
            kept=kept,
            lr=lr_data,
            lr_grid=grids.lr,
            lr_bands=recipe.lr.bands,
            hr=hr.data,
            hr_grid=grids.hr,
            hr_bands=recipe.hr.bands,
            scl=scl,
            metadata=meta,
        )
        t4 = time.perf_counter()
        status.update(
            status=KEPT if kept else REJECTED,
            reasons=";".join(qa.reasons),
            error=None,
            folder=str(files.folder.relative_to(settings.out_dir)),
            qa=qa_columns(qa),
            sha256=files.sha256,
            seconds_read_lr=t1 - t0,
            seconds_read_hr=t2 - t1,
            seconds_read=t2 - t0,
            seconds_qa=t3 - t2,
            seconds_write=t4 - t3,
        )
    except DiskWriteError:
        raise  # a full or failing disk fails every later chip too: stop the run
    except Exception as exc:
        # Chip-level failures are data, not crashes: the manifest names the cause. No log line
        # here: the parent logs each failed chip at debug level and sums them up per kind.
        kind = type(exc).__name__ if not isinstance(exc, HarvestError) else "HarvestError"
        status.update(
            status=FAILED,
            reasons="",
            error=f"{kind}: {' '.join(str(exc).split())}"[:500],
            error_kind=type(exc).__name__,
            folder=None,
        )
    status.update(started_at=started_at, finished_at=_utc_now())
    write_status(settings.out_dir, job.roi_id, status)
    return status


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _to_lonlat(epsg: int) -> Any:
    """A pyproj transformer from ``epsg`` to lon/lat, built once per CRS and thread.

    Building one costs about 0.6 ms, twice per chip; one per thread because a worker of an
    external cluster may run several chips at once in threads.
    """
    return _cached_to_lonlat(epsg, threading.get_ident())


@lru_cache(maxsize=64)
def _cached_to_lonlat(epsg: int, thread_id: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4326, always_xy=True)


def _footprint_lonlat(box: shapely.Polygon, epsg: int) -> shapely.Geometry:
    tr = _to_lonlat(epsg)
    dense = shapely.segmentize(box, (box.bounds[2] - box.bounds[0]) / 8.0)
    return shapely.transform(dense, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def _as_jobs(pairs: Any) -> list[FetchJob]:
    if isinstance(pairs, (str, Path)):
        from harvest.tables import read_pairs

        pairs = read_pairs(pairs)
    rows = getattr(pairs, "rows", pairs)
    items = list(rows)
    if items and isinstance(items[0], FetchJob):
        return items
    return jobs_from_rows(items)


def _run_tasks(
    jobs: Sequence[FetchJob],
    settings: FetchSettings,
    split: Mapping[str, str],
    *,
    workers: int,
    client: Any,
    on_done: Callable[[dict[str, Any]], None],
    reader: Reader | None,
) -> None:
    """Run ``jobs`` in this process, on ``client``'s cluster, or on a new local cluster."""
    if not jobs:
        return  # no cluster to start for nothing
    if client is None and workers <= 1:
        with _one_blas_thread():
            # Chips of one scene one after another: its open datasets stay in the cache.
            for job in scene_order(jobs):
                on_done(process_chip(job, settings, split[job.roi_id], reader))
        return
    from distributed import Client, as_completed

    _quiet_distributed()
    cluster = own_client = None
    if client is None:
        cluster = local_cluster(workers)
        client = own_client = Client(cluster)
    try:
        # Imports that the first chip would otherwise pay for inside its timings (GDAL, scipy).
        client.run(_warm_worker)
        remote = client.scatter(settings, broadcast=True)
        # Each worker gets a contiguous share of the scene-ordered chips (its scenes stay in its
        # dataset and tile caches), in tasks of a few chips of one scene (per-task scheduling
        # costs CPU on the same cores); Dask may still move queued tasks to an idle worker.
        addresses = sorted(client.scheduler_info()["workers"]) or [None]
        ordered = scene_order(jobs)
        futures = {}
        for address, share in zip(
            addresses, np.array_split(np.arange(len(ordered)), len(addresses)), strict=True
        ):
            for batch in scene_batches([ordered[i] for i in share.tolist()], BATCH_SIZE):
                fut = client.submit(
                    process_chips,
                    batch,
                    remote,
                    [split[j.roi_id] for j in batch],
                    pure=False,
                    workers=None if address is None else [address],
                    allow_other_workers=True,
                )
                futures[fut] = batch
        try:
            for fut in as_completed(futures):
                batch = futures[fut]
                try:
                    statuses = fut.result()
                except DiskWriteError:
                    raise
                except Exception as exc:
                    # A worker died under the task (KilledWorker) or the task could not run:
                    # the chips it finished have their status on disk, the others fail.
                    statuses = [
                        _recorded_or_failed(settings.out_dir, job, split[job.roi_id], exc)
                        for job in batch
                    ]
                for status in statuses:
                    on_done(status)
        except DiskWriteError:
            # The disk is full or failing (on a worker or here): every queued chip would fail
            # the same way, and an external cluster would go on running them after we are gone.
            client.cancel(list(futures))
            raise
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()


def _quiet_distributed() -> None:
    # The scheduler and nannies log every start and stop at INFO: keep the CLI quiet.
    logging.getLogger("distributed").setLevel(logging.ERROR)


def connect_scheduler(address: str) -> Any:
    """A Dask ``Client`` of the running scheduler at ``address``.

    Raises:
        ConfigError: the address is malformed or no scheduler answers there (one line, with
            what to do).
    """
    from distributed import Client

    _quiet_distributed()
    try:
        return Client(address)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address} ({' '.join(str(exc).split())}): "
            "start it or fix --scheduler, or use --workers N for a local cluster"
        ) from exc


# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's
# adaptive mmap threshold: every array over 128 KiB is then a fresh mmap, page-faulted and
# zeroed by the kernel, and a chip allocates about 100 MB of them. Half the workers' CPU time
# went to the kernel (per-chip QA 27 ms instead of 15). Freed memory is kept for reuse up to
# these sizes instead. Set the same variables on the workers of an external cluster.
WORKER_MALLOC_ENV: dict[str, int] = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 256 * 1024 * 1024,
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 32 * 1024 * 1024,
}
# What a cluster without a dashboard does not need: the workers' statistical profiler (a stack
# sample every 10 ms, under the GIL), the 20 ms event-loop watchdog and the 0.5 s resource
# monitor of every process. Measured on 2 cores: the scheduler's process used 35 % less CPU
# and the chips 4-5 % less time.
QUIET_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


def local_cluster(workers: int) -> Any:
    """The ``LocalCluster`` of ``--workers N``: N single-threaded worker processes.

    Workers start with :data:`WORKER_MALLOC_ENV` in their environment and
    :data:`QUIET_CLUSTER_CONFIG` in their configuration.
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({**WORKER_MALLOC_ENV, **QUIET_CLUSTER_CONFIG}), _children_ignore_sigint():
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # Without a dashboard the scheduler still serves HTTP (health, metrics), on port
            # 8787 by default: a second run at the same time warned "Port 8787 is already in
            # use". Any free port does.
            scheduler_kwargs={"dashboard_address": ":0"},
            silence_logs=logging.ERROR,
        )


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Processes started inside the block ignore SIGINT (an ignored signal survives ``exec``).

    Ctrl-C in a terminal signals the whole foreground process group: without this every
    worker printed its own KeyboardInterrupt traceback (about 60 lines for two workers) while
    the parent was already shutting the cluster down. The parent alone handles the interrupt
    and closes the cluster, which stops the workers. A Ctrl-C during the cluster's start-up
    (a second or two) is ignored too.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def scene_order(jobs: Sequence[FetchJob]) -> list[FetchJob]:
    """Jobs grouped by their (LR, HR) scene pair, groups in order of first appearance.

    Chips of one scene in a row, in one process, reuse its open datasets (one open per remote
    file instead of one per chip) and GDAL's decoded tiles.
    """
    return [job for group in _scene_groups(jobs) for job in group]


# Chips per Dask task: few enough to balance the workers at the end of a run, enough that the
# scheduler's per-task work (on the same cores) stays small: one chip per task made the chips
# of a 2-worker run 10 % slower.
BATCH_SIZE = 4


def scene_batches(jobs: Sequence[FetchJob], size: int) -> list[list[FetchJob]]:
    """:func:`scene_order`'s runs of one scene pair cut into nearly equal batches of <= ``size``."""
    out: list[list[FetchJob]] = []
    for group in _scene_groups(jobs):
        n = -(-len(group) // size)
        out.extend(
            [group[i] for i in part.tolist()] for part in np.array_split(np.arange(len(group)), n)
        )
    return out


def process_chips(
    jobs: Sequence[FetchJob], settings: FetchSettings, splits: Sequence[str]
) -> list[dict[str, Any]]:
    """:func:`process_chip` for each job of a batch (one Dask task), in order."""
    return [process_chip(job, settings, sp) for job, sp in zip(jobs, splits, strict=True)]


def _scene_groups(jobs: Sequence[FetchJob]) -> list[list[FetchJob]]:
    """Jobs per (LR, HR) scene pair, in order of first appearance, input order within."""
    groups: dict[tuple[str, str], list[FetchJob]] = {}
    for job in jobs:
        groups.setdefault((job.pair.lr.item_id, job.pair.hr.item_id), []).append(job)
    return list(groups.values())


def _recorded_or_failed(
    out_dir: Path, job: FetchJob, split: str, exc: BaseException
) -> dict[str, Any]:
    """The status a chip of a lost task already recorded, else a ``failed`` one (recorded)."""
    recorded = load_status(out_dir, job.roi_id)
    if recorded is not None and _finished(out_dir, job.roi_id, recorded):
        return recorded
    status: dict[str, Any] = {
        "roi_id": job.roi_id,
        "split": split,
        "s2_id": job.pair.lr.item_id,
        "naip_id": job.pair.hr.item_id,
        "status": FAILED,
        "reasons": "",
        "error": f"{type(exc).__name__}: {exc}"[:500],
        "error_kind": type(exc).__name__,
    }
    write_status(out_dir, job.roi_id, status)
    return status


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread while chips run in this process, as Dask workers run them.

    QA's small matrix products (121 x 121, the upsampled DFT) took 3-13 ms each instead of
    0.05 ms with OpenBLAS's threads spinning against other work on a 2-core machine.
    ``threadpoolctl`` comes with scikit-learn; without it nothing changes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _warm_worker() -> None:
    """The imports a chip makes on first use, made before the first chip is timed."""
    import zstandard  # noqa: F401  (harvest.cog imports it on a chip's first write)

    import harvest.qa  # noqa: F401  (scipy, OpenCV)
    import harvest.read  # noqa: F401  (rasterio, GDAL)


def _finished(out_dir: Path, roi_id: str, status: Mapping[str, Any]) -> bool:
    st = status.get("status")
    if st not in (KEPT, REJECTED):
        return False
    return chip_folder(out_dir, roi_id, st == KEPT).is_dir()


def run(
    pairs: Any,
    recipe: Recipe,
    out_dir: str | Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    thresholds: QaThresholds | None = None,
    correct_shift: bool = False,
    progress: Progress | bool = NO_PROGRESS,
    sign: Signer | None = None,
    split_seed: int = 0,
    env_options: Mapping[str, Any] | None = None,
    reader: Reader | None = None,
    ee_project: str | None = None,
    ee_url: str | None = None,
    allow_hosts: Sequence[str | AllowedHost] = (),
    href_policy: HrefPolicy | None = None,
    timeout_s: float | None = None,
) -> FetchSummary:
    """Fetch, check and write every chip of a pairs table; resumable (module docstring).

    Args:
        pairs: A pairs.parquet path, a :class:`harvest.tables.PairsTable`, rows with
            ``roi_id, lon_deg, lat_deg, utm_epsg, pair`` or :class:`FetchJob` objects.
        recipe: The recipe the pairs were searched with.
        out_dir: Dataset folder (created; an existing one is resumed).
        workers: Worker processes of a local Dask cluster (1: run in this process).
        scheduler: Address of an existing Dask scheduler (overrides ``workers``).
        thresholds: QA limits (default :class:`~harvest.qa.QaThresholds`).
        correct_shift: Move kept LR chips by the estimated shift (bicubic).
        progress: How to show progress (a bar with chips/s and counts, or nothing).
        sign: Href signer applied right before each read (e.g. Planetary Computer).
        split_seed: Seed of the train/test block assignment.
        env_options: GDAL settings (default :func:`harvest.read.gdal_env_options`).
        reader: A reader to use in this process (tests); workers build their own.
        ee_project: Google Cloud project for Earth Engine reads (``ee://`` assets); None: the
            project of the credentials (the CLI passes ``$EE_PROJECT``).
        ee_url: Earth Engine endpoint for those reads; None: the default.
        allow_hosts: Hosts (``HOST`` or ``HOST:PORT``) whose hrefs are read even though they
            are loopback, private or link-local and the pairs come from a remote catalog.
        href_policy: Which hrefs may be read; None: that of the pairs table's catalog
            (:attr:`harvest.tables.SearchMetadata.kind`) with ``allow_hosts``, or everything
            for jobs and rows given directly (the caller made them).
        timeout_s: Seconds to wait for one answer of a remote file or of Earth Engine
            (``--timeout``): GDAL's read timeout (its connect timeout at most 10 s) and the
            Earth Engine deadline. None: :data:`harvest.read.GDAL_REMOTE_OPTIONS`' and the
            Earth Engine reader's defaults.

    Returns:
        A :class:`FetchSummary`.

    Raises:
        InputFileError: unreadable pairs, repeated ROIs.
        UnsafeIdError: a roi_id is not a safe id (nothing is written then).
        StoreError: the folder belongs to another recipe.
        ConfigError: no scheduler answers at ``scheduler`` (nothing is written then).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    if isinstance(pairs, (str, Path)):
        from harvest.tables import read_pairs

        pairs = read_pairs(pairs)
    searched = getattr(getattr(pairs, "metadata", None), "recipe", None)
    if searched is not None and searched != recipe.name:
        raise InputFileError(
            f"the pairs were searched with recipe {searched}, not {recipe.name}: "
            f"pass --recipe {searched}"
        )
    jobs = _as_jobs(pairs)
    policy = href_policy or _href_policy(pairs, allow_hosts)
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"--timeout {timeout_s} must be > 0 seconds")
    # Every roi_id names a folder under out: checked before the folder is even created.
    check_ids((j.roi_id for j in jobs), field="roi_id", source="fetch jobs")
    counts = Counter(j.roi_id for j in jobs)
    if len(counts) != len(jobs):
        dup = sorted(i for i, k in counts.items() if k > 1)[:3]
        raise InputFileError(f"roi_id values must be unique; repeated: {', '.join(dup)}")
    with contextlib.ExitStack() as stack:
        # Reach the scheduler before anything is written: a wrong address leaves no folder.
        client = None
        if scheduler is not None:
            client = stack.enter_context(contextlib.closing(connect_scheduler(scheduler)))
        # One run per folder, before anything is written or swept (harvest.lock): a second
        # run's clean-up would delete this one's temporary names, its chips mix with ours.
        stack.enter_context(folder_lock(out, dataset_lock_path(out)))
        out.mkdir(parents=True, exist_ok=True)
        chash = config_hash(recipe)
        check_run_file(out, recipe.name, chash)
        clean_temporaries(out)
        split = assign_split(
            [j.roi_id for j in jobs],
            [j.lon_deg for j in jobs],
            [j.lat_deg for j in jobs],
            seed=split_seed,
        )
        statuses = load_statuses(out)
        if statuses:
            # A resumed run first brings the manifest up to what the last (maybe killed) run did.
            write_manifest(out, statuses)
        pending = [j for j in jobs if not _finished(out, j.roi_id, statuses.get(j.roi_id, {}))]
        settings = FetchSettings(
            recipe=recipe,
            out_dir=out,
            thresholds=thresholds or QaThresholds(),
            correct_shift=correct_shift,
            env_options={
                **(dict(env_options) if env_options is not None else gdal_env_options()),
                **policy.gdal_options,
                **gdal_timeout_options(timeout_s),
            },
            sign=sign,
            config_hash=chash,
            ee_project=ee_project,
            ee_url=ee_url,
            href_policy=policy,
            timeout_s=timeout_s,
        )
        bar = ChipProgress(Progress.of(progress), len(pending), "fetch")
        try:
            _run_tasks(
                pending,
                settings,
                split,
                workers=workers,
                client=client,
                on_done=lambda st: _chip_done(st, bar),
                reader=reader,
            )
        finally:
            bar.close()
        return finish_run(out, len(jobs), len(jobs) - len(pending), len(pending), started)


def _href_policy(pairs: Any, allow_hosts: Sequence[str | AllowedHost]) -> HrefPolicy:
    """The href policy of a pairs table's catalog; read everything for jobs given directly.

    Raises:
        ConfigError: an allow-list entry is not a host, or the table's catalog kind is unknown.
    """
    meta = getattr(pairs, "metadata", None)
    kind = getattr(meta, "kind", None)
    if meta is None or kind is None:
        return HrefPolicy.for_catalog("stac-geoparquet", allow_hosts)
    return HrefPolicy.for_catalog(kind, allow_hosts)


def _chip_done(status: Mapping[str, Any], bar: ChipProgress) -> None:
    if status.get("status") == FAILED:
        # Details only with -v: the end of the run sums failures up per kind (FetchSummary).
        logger.debug("chip %s failed: %s", status.get("roi_id"), status.get("error"))
    bar.update(str(status["status"]))
