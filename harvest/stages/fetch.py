"""The fetch stage: pairs -> read LR + HR on the nested chip grid -> QA -> chip folders.

One task per chip (:func:`process_chip`): read every band group of the recipe's LR and HR
sensors on its nested grid (with the sensor's resampling: the LR bands on their own pixels, the
HR ones area-averaged) and the SCL if the recipe has one, check the chip as the recipe says
(:func:`harvest.qa.evaluate_groups`: HR brought to the LR grid by area average, for SEN2NAIP a
factor 4; blank detection on the full-resolution HR), optionally move the LR groups by the
estimated shift (bicubic), write the chip folder with the recipe's writer
(:mod:`harvest.writers`) and then its :class:`~harvest.records.ChipRecord` as its status file.
Tasks run in this process (``workers=1``), on a
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import shapely

from harvest.backends.base import AssetRef, Reader, SceneRef, Signer
from harvest.backends.registry import ReaderSettings, reader_for, warm_readers
from harvest.config import config_hash
from harvest.errors import ConfigError, DiskWriteError, HarvestError, InputFileError
from harvest.grid import ChipGridArray, ChipLayout, NestedChips, chip_grids, lonlat_transformer
from harvest.hrefs import LOCAL_POLICY, AllowedHost, HrefPolicy
from harvest.ids import check_id, check_ids
from harvest.lock import dataset_lock_path, folder_lock
from harvest.pairing import PairCandidate
from harvest.progress import NO_PROGRESS, Progress
from harvest.qa import QaThresholds, ShiftEstimate
from harvest.qa import correct_shift as shift_lr
from harvest.recipes import Recipe, Role, Sensor, SensorKind
from harvest.records import ChipRecord, ChipStatus, FetchSummary, qa_metrics
from harvest.stages._chips import ChipProgress, evaluate, finish_run, write_layout_manifest
from harvest.store import (
    assign_split,
    check_run_file,
    chip_folder,
    clean_temporaries,
    load_record,
    load_records,
    write_record,
)
from harvest.writers import ChipContext, ChipData, GroupChip, writer_for

logger = logging.getLogger(__name__)


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
        config_hash: Hash of the recipe, recorded in every metadata.json.
        reader: How each worker builds its readers (GDAL options with the ``--timeout``, the
            href signer, the GDAL drivers the href policy allows, the Earth Engine project,
            endpoint and deadline); :func:`harvest.backends.registry.reader_for` picks the
            reader of each scene from it.
        href_policy: Which asset hrefs may be read (:mod:`harvest.hrefs`): everything for a
            local catalog; for a remote one public URLs and the allow-listed hosts, through
            the GDAL drivers of :data:`~harvest.hrefs.REMOTE_RASTER_DRIVERS` only (carried by
            ``reader.drivers``). A refused href fails its chip before anything is read.
    """

    recipe: Recipe
    out_dir: Path
    thresholds: QaThresholds = field(default_factory=QaThresholds)
    correct_shift: bool = False
    config_hash: str = ""
    reader: ReaderSettings = field(default_factory=ReaderSettings)
    href_policy: HrefPolicy = LOCAL_POLICY


def _reader_for(
    assets: Mapping[str, AssetRef], given: Reader | None, settings: FetchSettings
) -> Reader:
    """The reader of one scene: the one given (tests), else the registry's for its hrefs.

    The registry keeps one reader per worker process and settings, so open datasets and the
    Earth Engine request pool survive from one chip to the next.
    """
    return given if given is not None else reader_for(assets, settings.reader)


def _scene(job: FetchJob, role: Role) -> SceneRef:
    return job.pair.lr if role is Role.LR else job.pair.hr


def _hrefs_read(job: FetchJob, recipe: Recipe) -> list[str]:
    """The hrefs a chip reads: per sensor (LR first) its groups' bands, then its cloud mask."""
    hrefs = []
    for role, sensor in ((Role.LR, recipe.lr), (Role.HR, recipe.hr)):
        assets = _scene(job, role).assets
        wanted = [b for g in sensor.groups for b in g.bands]
        if sensor.cloud_mask is not None:
            wanted.append(sensor.cloud_mask)
        hrefs += [assets[band].href for band in wanted if band in assets]
    return hrefs


def _saturation_value(assets: Mapping[str, AssetRef], bands: Sequence[str]) -> float | None:
    # An 8-bit source saturates at DN 255; wider types have no fixed ceiling worth testing.
    values = []
    for band in bands:
        ref = assets.get(band)
        if ref is None or ref.dtype != "uint8":
            return None
        values.append(255.0 * ref.scale + ref.offset)
    return min(values) if values else None


def _read_sensor(
    job: FetchJob,
    role: Role,
    sensor: Sensor,
    grids: NestedChips,
    reader: Reader | None,
    settings: FetchSettings,
) -> tuple[list[GroupChip], npt.NDArray[np.uint8] | None]:
    """Every band group of one sensor on its grid, and its cloud mask (SCL) if the scene has it."""
    assets = _scene(job, role).assets
    rdr = _reader_for(assets, reader, settings)
    sar = sensor.kind is SensorKind.SAR
    groups = []
    for group, grid in zip(sensor.groups, grids.of_role(role.value), strict=True):
        chip = rdr.read(assets, group.bands, grid, sensor.resampling)
        groups.append(
            GroupChip(role, group, sar, grid, chip.data, _saturation_value(assets, group.bands))
        )
    ref = assets.get(sensor.cloud_mask) if sensor.cloud_mask is not None else None
    if ref is None:
        return groups, None
    raw = rdr.read_raw(ref, grids.of_role(role.value)[0])
    return groups, np.nan_to_num(raw, nan=0.0).astype(np.uint8)


def _shift_lr_groups(chip: ChipData, shift: ShiftEstimate) -> ChipData:
    """The chip with every LR group moved back by ``shift`` (given in primary LR pixels)."""
    lr = chip.of_role(Role.LR)
    moved = []
    for g in chip.groups:
        if g.role is Role.LR:
            s = shift
            if g is not lr[0]:
                k = shift.gsd_m / g.group.gsd_m  # the same metres in this group's pixels
                s = replace(
                    shift, dx_px=shift.dx_px * k, dy_px=shift.dy_px * k, gsd_m=g.group.gsd_m
                )
            g = replace(g, data=shift_lr(g.data, s).astype(np.float32))
        moved.append(g)
    return replace(chip, groups=tuple(moved))


def process_chip(
    job: FetchJob,
    settings: FetchSettings,
    split: str,
    reader: Reader | None = None,
) -> ChipRecord:
    """Fetch, check and write one chip; returns (and records) its record.

    Every band group of the LR and HR sensors is read on its nested grid, checked as the
    recipe says (:func:`harvest.stages._chips.evaluate`) and written by the recipe's writer.
    Never raises for a chip-level problem: a missing, corrupt or truncated file, or any other
    error, becomes a ``failed`` record naming the cause (the run goes on with other chips).
    """
    started_at = _utc_now()
    recipe = settings.recipe
    writer = writer_for(recipe.writer)
    grids = job.grids(recipe)
    left, bottom, right, top = grids.bounds
    footprint = shapely.box(left, bottom, right, top)
    base = ChipRecord(
        roi_id=job.roi_id,
        status=ChipStatus.FAILED,
        split=split,
        lr_id=job.pair.lr.item_id,
        hr_id=job.pair.hr.item_id,
        epsg=grids.epsg,
        dt_hours=job.pair.dt_hours,
        footprint_wkt=_footprint_lonlat(footprint, grids.epsg).wkt,
    )
    try:
        t0 = time.perf_counter()
        # Before any read: a remote catalog's href to a local file or a private host fails
        # the chip here, and no request is sent.
        settings.href_policy.check_all(_hrefs_read(job, recipe))
        lr_groups, lr_scl = _read_sensor(job, Role.LR, recipe.lr, grids, reader, settings)
        t1 = time.perf_counter()
        hr_groups, hr_scl = _read_sensor(job, Role.HR, recipe.hr, grids, reader, settings)
        t2 = time.perf_counter()
        chip = ChipData(
            groups=(*lr_groups, *hr_groups),
            scl=lr_scl if lr_scl is not None else hr_scl,
            scl_role=Role.HR if recipe.hr.cloud_mask else Role.LR,
        )
        qa = evaluate(chip, recipe, settings.thresholds)
        corrected = False
        if settings.correct_shift and qa.kept and qa.shift.ok:
            chip = _shift_lr_groups(chip, qa.shift)
            corrected = True
        t3 = time.perf_counter()
        ctx = ChipContext(
            roi_id=job.roi_id,
            split=split,
            lr=job.pair.lr,
            hr=job.pair.hr,
            dt_hours=job.pair.dt_hours,
            grids=grids,
            recipe=recipe,
            config_hash=settings.config_hash,
            shift_corrected=corrected,
        )
        files = writer.write(
            settings.out_dir,
            job.roi_id,
            kept=qa.kept,
            chip=chip,
            metadata=writer.metadata(ctx, chip, qa),
        )
        t4 = time.perf_counter()
        record = replace(
            base,
            status=ChipStatus.KEPT if qa.kept else ChipStatus.REJECTED,
            reasons=qa.reasons,
            folder=str(files.folder.relative_to(settings.out_dir)),
            metrics=qa_metrics(qa),
            checksums=files.sha256,
            seconds={
                "seconds_read_lr": t1 - t0,
                "seconds_read_hr": t2 - t1,
                "seconds_read": t2 - t0,
                "seconds_qa": t3 - t2,
                "seconds_write": t4 - t3,
            },
        )
    except DiskWriteError:
        raise  # a full or failing disk fails every later chip too: stop the run
    except Exception as exc:
        # Chip-level failures are data, not crashes: the manifest names the cause. No log line
        # here: the parent logs each failed chip at debug level and sums them up per kind.
        kind = type(exc).__name__ if not isinstance(exc, HarvestError) else "HarvestError"
        record = replace(
            base,
            error=f"{kind}: {' '.join(str(exc).split())}"[:500],
            error_kind=type(exc).__name__,
        )
    record = replace(record, started_at=started_at, finished_at=_utc_now())
    write_record(settings.out_dir, record)
    return record


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _footprint_lonlat(box: shapely.Polygon, epsg: int) -> shapely.Geometry:
    tr = lonlat_transformer(epsg)
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
    on_done: Callable[[ChipRecord], None],
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
                    records = fut.result()
                except DiskWriteError:
                    raise
                except Exception as exc:
                    # A worker died under the task (KilledWorker) or the task could not run:
                    # the chips it finished have their status on disk, the others fail.
                    kept_dir = writer_for(settings.recipe.writer).kept_dir
                    records = [
                        _recorded_or_failed(settings.out_dir, job, split[job.roi_id], exc, kept_dir)
                        for job in batch
                    ]
                for record in records:
                    on_done(record)
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
) -> list[ChipRecord]:
    """:func:`process_chip` for each job of a batch (one Dask task), in order."""
    return [process_chip(job, settings, sp) for job, sp in zip(jobs, splits, strict=True)]


def _scene_groups(jobs: Sequence[FetchJob]) -> list[list[FetchJob]]:
    """Jobs per (LR, HR) scene pair, in order of first appearance, input order within."""
    groups: dict[tuple[str, str], list[FetchJob]] = {}
    for job in jobs:
        groups.setdefault((job.pair.lr.item_id, job.pair.hr.item_id), []).append(job)
    return list(groups.values())


def _recorded_or_failed(
    out_dir: Path, job: FetchJob, split: str, exc: BaseException, kept_dir: str
) -> ChipRecord:
    """The record a chip of a lost task already wrote, else a ``failed`` one (recorded)."""
    recorded = load_record(out_dir, job.roi_id)
    if recorded is not None and _finished(out_dir, recorded, kept_dir):
        return recorded
    record = ChipRecord(
        roi_id=job.roi_id,
        status=ChipStatus.FAILED,
        split=split,
        lr_id=job.pair.lr.item_id,
        hr_id=job.pair.hr.item_id,
        error=f"{type(exc).__name__}: {exc}"[:500],
        error_kind=type(exc).__name__,
    )
    write_record(out_dir, record)
    return record


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
    import harvest.qa  # noqa: F401  (scipy, OpenCV)

    warm_readers()  # rasterio, GDAL


def _finished(out_dir: Path, record: ChipRecord | None, kept_dir: str) -> bool:
    """Whether a chip is done: QA decided on it and its folder is there."""
    if record is None or not record.finished:
        return False
    kept = record.status is ChipStatus.KEPT
    return chip_folder(out_dir, record.roi_id, kept, kept_dir=kept_dir).is_dir()


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
        env_options: GDAL settings (default: the registry's, see
            :class:`harvest.backends.registry.ReaderSettings`).
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
            Earth Engine deadline (:meth:`harvest.backends.registry.ReaderSettings.with_timeout`).
            None: the readers' defaults.

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
    if recipe.guide is not None:
        raise ConfigError(
            f"recipe {recipe.name} is a time series with a guide sensor, which fetch does not "
            "read: build its stores with 'harvest build' and products: [sentinel-hr] (see "
            "configs/builds/sentinel-hr.yaml)"
        )
    jobs = _as_jobs(pairs)
    policy = href_policy or _href_policy(pairs, allow_hosts)
    # Checked before the folder is touched: a bad --timeout is a ConfigError.
    readers = ReaderSettings.with_timeout(
        timeout_s,
        gdal_options={
            **(ReaderSettings().gdal_options if env_options is None else env_options),
            **policy.gdal_options,
        },
        sign=sign,
        drivers=policy.raster_drivers,
        ee_project=ee_project,
        ee_url=ee_url,
    )
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
        check_run_file(out, recipe.name, chash, recipe.model_dump(mode="json"))
        clean_temporaries(out)
        split = assign_split(
            [j.roi_id for j in jobs],
            [j.lon_deg for j in jobs],
            [j.lat_deg for j in jobs],
            seed=split_seed,
        )
        writer = writer_for(recipe.writer)
        records = load_records(out)
        if records:
            # A resumed run first brings the manifest up to what the last (maybe killed) run did.
            write_layout_manifest(out, records, writer, recipe)
        pending = [j for j in jobs if not _finished(out, records.get(j.roi_id), writer.kept_dir)]
        settings = FetchSettings(
            recipe=recipe,
            out_dir=out,
            thresholds=thresholds or QaThresholds(),
            correct_shift=correct_shift,
            config_hash=chash,
            reader=readers,
            href_policy=policy,
        )
        bar = ChipProgress(Progress.of(progress), len(pending), "fetch")
        try:
            _run_tasks(
                pending,
                settings,
                split,
                workers=workers,
                client=client,
                on_done=lambda rec: _chip_done(rec, bar),
                reader=reader,
            )
        finally:
            bar.close()
        n_before = len(jobs) - len(pending)
        return finish_run(out, writer, recipe, len(jobs), n_before, len(pending), started)


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


def _chip_done(record: ChipRecord, bar: ChipProgress) -> None:
    if record.status is ChipStatus.FAILED:
        # Details only with -v: the end of the run sums failures up per kind (FetchSummary).
        logger.debug("chip %s failed: %s", record.roi_id, record.error)
    bar.update(record.status)
