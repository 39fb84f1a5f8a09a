"""Benchmark `harvest fetch` (read + resample + QA + write) against the plain I/O floor.

Chips: every sen2naip pair of the demo world (seed 0) at a 3 x 3 grid of ROI offsets inside each
site's chip-safe area (63 chips), local COGs.

- harvest: :func:`harvest.stages.fetch.run`, in process (1 core) and on a Dask LocalCluster of 2
  worker processes (2 cores). Two throughputs: over the chip span (first chip's start to last
  chip's end, from the status timestamps: what a long run sustains) and over the whole call
  (cluster start-up, split assignment and manifest included, paid once per run). The process
  makes the imports a Dask worker makes before its first chip before it is timed. The
  2-worker chip span is also measured on a warmed cluster (:func:`warm_cluster`: one earlier
  run of the same chips, its open datasets then closed), what a long run sustains once its
  fresh workers' first chips are behind it. Every timed run starts with no reader open from an
  earlier one (no decoded tile carries over).
- rounds: floor and harvest runs are interleaved, ``--repeat`` rounds, medians reported (the
  machine is shared; interleaving spreads load changes over every row).
- floor: a plain rasterio windowed read of the same windows (4 LR bands + SCL at their native
  10 m / 20 m, the NAIP 4-band window at its native 1 m), nothing else, in 1 and 2 processes.
- floor again with every file kept open across chips (one process): overlapping chips then
  share decoded tiles, as harvest's do.
- harvest again in process with every file opened anew for each read (:class:`FreshReader`):
  no decoded tile is shared between chips, as in the floor, which opens every file for every
  chip (the bench's chips overlap: 9 per demo scene; real ROIs 5 km apart do not).
- time split: from the per-chip status records (LR + SCL read, HR read + resample, QA, write);
  the HR read is split into decode and resample by timing ``ds.read`` and
  :func:`harvest.backends.gdal.area_average.area_average_raw` apart, with open datasets kept as
  harvest keeps them.
- odc-stac: ``odc.stac.load`` of the same LR + HR chips for a few chips (decision record of the
  reader choice).

- like for like: ``--site-size 6000 --spacing 1800`` builds a demo world of 6 km sites (once,
  a few minutes) and places the ROIs 1.8 km apart, so that no two chips share a decoded tile
  (real ROIs are 5 km apart): harvest and the floor then decode the same tiles per chip.

Usage: .venv/bin/python bench/bench_fetch.py [--offsets 3] [--repeat 3] [--spacing M]
[--site-size M] [--world DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.windows import from_bounds

from harvest.backends.gdal.area_average import area_average_raw
from harvest.backends.gdal.reader import RasterioReader, aligned_window, gdal_env
from harvest.backends.profiles import load_profile, parse_item
from harvest.backends.registry import close_readers
from harvest.demo.stac import item_dicts_absolute
from harvest.demo.truth import load_truth
from harvest.demo.world import WORLD_FORMAT, run_demo_world
from harvest.pairing import RoiFootprint, pair_scenes
from harvest.recipes import load_recipe
from harvest.stages.fetch import FetchJob, _warm_worker, local_cluster
from harvest.stages.fetch import run as run_fetch
from harvest.store import load_statuses

RECIPE = load_recipe("sen2naip")


def make_jobs(world: Path, per_side: int, spacing_m: float = 450.0) -> list[FetchJob]:
    truth = load_truth(world)
    profile = load_profile("demo")
    scenes = {
        d["id"]: parse_item(d, profile)
        for d in item_dicts_absolute(world)
        if d["collection"] in ("sentinel-2-l2a", "naip")
    }
    half = spacing_m * (per_side - 1) / 2
    steps = np.linspace(-half, half, per_side) if per_side > 1 else np.zeros(1)
    jobs: list[FetchJob] = []
    for p in truth.pairs_for("sen2naip"):
        site = truth.site(p.site_id)
        b = site.chip_safe_bounds
        to_ll = Transformer.from_crs(site.utm_epsg, 4326, always_xy=True)
        for dx in steps:
            for dy in steps:
                x, y = (b.xmin + b.xmax) / 2 + dx, (b.ymin + b.ymax) / 2 + dy
                lon, lat = to_ll.transform(x, y)
                rid = f"ROI_{len(jobs) + 1:06d}"
                roi = RoiFootprint.square(rid, lon, lat, RECIPE.lr.chip_side_m, site.utm_epsg)
                pair = pair_scenes([roi], [scenes[p.lr_item_id]], [scenes[p.hr_item_id]], RECIPE)
                jobs.append(FetchJob(rid, lon, lat, site.utm_epsg, pair.pairs[0]))
    return jobs


def plain_read(job: FetchJob) -> tuple[float, float]:
    """The I/O floor of one chip: plain windowed reads at native resolution. (LR s, HR s)."""
    grids = job.grids(RECIPE)
    t0 = time.perf_counter()
    for band in (*RECIPE.lr.bands, "SCL"):
        ref = job.pair.lr.assets[band]
        with rasterio.open(ref.href) as ds:
            ds.read(1, window=from_bounds(*grids.lr.bounds, transform=ds.transform))
    t1 = time.perf_counter()
    href = job.pair.hr.assets["red"].href
    with rasterio.open(href) as ds:
        ds.read([1, 2, 3, 4], window=from_bounds(*grids.hr.bounds, transform=ds.transform))
    return t1 - t0, time.perf_counter() - t1


def floor_open(jobs: list[FetchJob]) -> float:
    """The floor with every file opened once and kept open (GDAL's decoded tiles are shared
    between overlapping chips, as in harvest's reader). Seconds for all chips, 1 process."""
    opened: dict[str, rasterio.DatasetReader] = {}

    def ds_for(href: str) -> rasterio.DatasetReader:
        return opened.get(href) or opened.setdefault(href, rasterio.open(href))

    t0 = time.perf_counter()
    for job in jobs:
        grids = job.grids(RECIPE)
        for band in (*RECIPE.lr.bands, "SCL"):
            ds = ds_for(job.pair.lr.assets[band].href)
            ds.read(1, window=from_bounds(*grids.lr.bounds, transform=ds.transform))
        ds = ds_for(job.pair.hr.assets["red"].href)
        ds.read([1, 2, 3, 4], window=from_bounds(*grids.hr.bounds, transform=ds.transform))
    seconds = time.perf_counter() - t0
    for ds in opened.values():
        ds.close()
    return seconds


def floor(jobs: list[FetchJob], processes: int) -> tuple[float, list[tuple[float, float]]]:
    t0 = time.perf_counter()
    if processes <= 1:
        parts = [plain_read(j) for j in jobs]
    else:
        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(plain_read, jobs[:processes]))  # start the processes first
            t0 = time.perf_counter()
            parts = list(pool.map(plain_read, jobs, chunksize=4))
    return time.perf_counter() - t0, parts


def chip_span(out: Path) -> float:
    """Seconds from the first chip's start to the last chip's end (status timestamps).

    In every process alike this leaves out what a run does before its first chip and after its
    last (cluster start-up, split assignment, the manifest), which the n-chip total pays once.
    """
    rows = list(load_statuses(out).values())
    starts = [datetime.fromisoformat(r["started_at"]).timestamp() for r in rows]
    ends = [datetime.fromisoformat(r["finished_at"]).timestamp() for r in rows]
    return max(ends) - min(starts)


class FreshReader(RasterioReader):
    """harvest's reader, closing its datasets after every read (their decoded tiles go too)."""

    def read(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read(*args, **kwargs)
        finally:
            self.close()

    def read_raw(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_raw(*args, **kwargs)
        finally:
            self.close()


def drop_readers() -> None:
    """Close this process's harvest readers: no decoded tile outlives a run into the next."""
    close_readers()


def harvest_run(
    jobs: list[FetchJob],
    out: Path,
    workers: int = 1,
    reader: RasterioReader | None = None,
    scheduler: str | None = None,
) -> tuple[float, float]:
    """(whole run_fetch call, chip span) in seconds, with no reader left open from before."""
    shutil.rmtree(out, ignore_errors=True)
    drop_readers()
    if scheduler is not None:
        from distributed import Client

        with Client(scheduler) as client:
            client.run(drop_readers)
    t0 = time.perf_counter()
    run_fetch(jobs, RECIPE, out, workers=workers, reader=reader, scheduler=scheduler)
    return time.perf_counter() - t0, chip_span(out)


def warm_cluster(jobs: list[FetchJob], out: Path) -> Any:
    """harvest's 2-worker LocalCluster after one run of ``jobs`` (into ``out``, then deleted).

    Fresh workers pay for their first chips: heaps and GDAL's state grow, page by page (a
    fresh cluster's run measured 17.8-18.6 chips/s, the same cluster's next runs 18.7-20.9).
    A long run pays that once; the chip span of a run on this cluster is what it sustains.
    """
    cluster = local_cluster(2)
    run_fetch(jobs, RECIPE, out, scheduler=cluster.scheduler_address)
    shutil.rmtree(out, ignore_errors=True)
    return cluster


def split_from_status(out: Path) -> dict[str, float]:
    rows = list(load_statuses(out).values())
    keys = ("seconds_read_lr", "seconds_read_hr", "seconds_qa", "seconds_write")
    return {k: statistics.median(r[k] for r in rows if k in r) * 1000 for k in keys}


def hr_split(jobs: list[FetchJob]) -> tuple[float, float]:
    """Median ms per chip of the NAIP decode and of the resample, as harvest's reader does them."""
    opened: dict[str, rasterio.DatasetReader] = {}
    decode, resample = [], []
    with gdal_env():
        for job in jobs:
            href = job.pair.hr.assets["red"].href
            ds = opened.get(href) or opened.setdefault(href, rasterio.open(href))
            found = aligned_window(ds, job.grids(RECIPE).hr)
            assert found is not None, "the demo world's NAIP is north-up in the chip's CRS"
            window, plan_r, plan_c = found
            t0 = time.perf_counter()
            raw = ds.read([1, 2, 3, 4], window=window)
            t1 = time.perf_counter()
            area_average_raw(raw, plan_r, plan_c, ds.nodata)
            decode.append(t1 - t0)
            resample.append(time.perf_counter() - t1)
    for ds in opened.values():
        ds.close()
    return statistics.median(decode) * 1000, statistics.median(resample) * 1000


def odc_stac_chip(world: Path, jobs: list[FetchJob], n: int) -> dict[str, tuple[float, float]]:
    """Median ms per chip and largest value difference from harvest's reader, per reader.

    Both load LR 4 x 121 x 121 + HR 1 x 484 x 484 (odc-stac exposes the NAIP ``image`` asset as
    one band, the first). odc-stac runs twice: as configured by default (it then reads NAIP from
    an overview) and with ``use_overviews=False`` (the exact area average, like harvest).
    """
    try:
        import odc.stac
        from odc.geo.geobox import GeoBox

        from harvest.demo.stac import load_world_items
    except ImportError:
        return {}
    items = {it.id: it for it in load_world_items(world)}
    reader = RasterioReader()
    times: dict[str, list[float]] = {"harvest": [], "odc": [], "odc-no-overviews": []}
    diffs: dict[str, list[float]] = {"harvest": [0.0], "odc": [], "odc-no-overviews": []}
    for job in jobs[:n]:
        grids = job.grids(RECIPE)
        t0 = time.perf_counter()
        reader.read(job.pair.lr.assets, RECIPE.lr.bands, grids.lr, "nearest")
        hr = reader.read(job.pair.hr.assets, ["red"], grids.hr, "average").data[0]
        times["harvest"].append(time.perf_counter() - t0)
        for name, overviews in (("odc", True), ("odc-no-overviews", False)):
            t0 = time.perf_counter()
            arrays = []
            for scene, grid, bands, resampling in (
                (job.pair.lr, grids.lr, ["B04", "B03", "B02", "B08"], "nearest"),
                (job.pair.hr, grids.hr, ["image"], "average"),
            ):
                gbox = GeoBox((grid.height, grid.width), grid.transform, f"EPSG:{grid.epsg}")
                ds = odc.stac.load(
                    [items[scene.item_id]],
                    bands=bands,
                    geobox=gbox,
                    resampling=resampling,
                    dtype="float32",
                    use_overviews=overviews,
                ).load()
                arrays.append(ds)
            times[name].append(time.perf_counter() - t0)
            red = arrays[1]["image"].values[0] / 255.0
            diffs[name].append(float(np.abs(red - hr).max()))
    return {k: (statistics.median(times[k]) * 1000, max(diffs[k])) for k in times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offsets", type=int, default=3, help="ROIs per site side (n x n).")
    ap.add_argument(
        "--spacing",
        type=float,
        default=450.0,
        help="Metres between neighbouring ROI centres (1.21 km chips overlap below 1210).",
    )
    ap.add_argument(
        "--site-size",
        type=float,
        default=2400.0,
        help="Demo-world site side in metres (6000 with --spacing 1800: chips share no tile).",
    )
    ap.add_argument("--world", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="Interleaved rounds (median).")
    args = ap.parse_args()
    name = f"demo-world-seed0-format{WORLD_FORMAT}"
    if args.site_size != 2400.0:
        name += f"-site{args.site_size:g}"
    world = args.world or Path(".cache/harvest") / name
    run_demo_world(out_dir=world, seed=0, progress=False, site_size_m=args.site_size)
    jobs = make_jobs(world, args.offsets, args.spacing)
    n = len(jobs)
    reader = RasterioReader()
    reader.read(jobs[0].pair.lr.assets, RECIPE.lr.bands, jobs[0].grids(RECIPE).lr)  # warm
    # The imports a Dask worker makes before its first chip (harvest.stages.fetch._warm_worker),
    # made here too, so that neither side's chip timings hold them.
    _warm_worker()
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        runs.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        floor(jobs, 1)  # warm the page cache
        for _ in range(args.repeat):
            note("f1", floor(jobs, 1)[0])
            note("f2", floor(jobs, 2)[0])
            note("fo", floor_open(jobs))
            whole, span = harvest_run(jobs, Path(tmp) / "one", 1)
            note("h1", whole)
            note("s1", span)
            whole, span = harvest_run(jobs, Path(tmp) / "fresh", 1, reader=FreshReader())
            note("h0", whole)
            note("s0", span)
            whole, span = harvest_run(jobs, Path(tmp) / "two", 2)
            note("h2", whole)
            note("s2", span)
            # Alive only for its own runs: an idle cluster beside the other rows slowed them.
            cluster = warm_cluster(jobs, Path(tmp) / "warm")
            _, span = harvest_run(jobs, Path(tmp) / "warm2", scheduler=cluster.scheduler_address)
            cluster.close()
            note("w2", span)
        split = split_from_status(Path(tmp) / "one")
        split2 = split_from_status(Path(tmp) / "warm2")
        parts = floor(jobs, 1)[1]
    decode_ms, resample_ms = hr_split(jobs)
    odc_ms = odc_stac_chip(world, jobs, 10)
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in runs.items()}
    f1, f2 = med["f1"], med["f2"]
    hr_plain = statistics.median(p[1] for p in parts) * 1000
    lr_plain = statistics.median(p[0] for p in parts) * 1000
    print(
        f"{n} chips (LR 4 x 121 x 121 + SCL, HR 4 x 484 x 484 from 1 m NAIP), ROIs "
        f"{args.spacing:g} m apart on {args.site_size:g} m sites; median of {args.repeat} "
        "interleaved rounds"
    )
    print("| run | cores | chips/s (chip span) | vs floor | chips/s (whole call) | vs floor |")
    print("|---|---|---|---|---|---|")
    print(f"| floor: plain rasterio windowed reads | 1 | {n / f1:.1f} | 1.00x | | |")
    print(f"| floor: plain rasterio windowed reads | 2 | {n / f2:.1f} | 1.00x | | |")
    print(f"| floor, files kept open | 1 | {n / med['fo']:.1f} | {med['fo'] / f1:.2f}x | | |")
    for label, cores, h, sp, fl in (
        ("harvest fetch (in process)", 1, med["h1"], med["s1"], f1),
        ("harvest fetch (in process, files reopened per read)", 1, med["h0"], med["s0"], f1),
        ("harvest fetch (LocalCluster, 2 workers, fresh)", 2, med["h2"], med["s2"], f2),
    ):
        print(
            f"| {label} | {cores} | {n / sp:.1f} | {sp / fl:.2f}x | {n / h:.1f} | {h / fl:.2f}x |"
        )
    w2 = med["w2"]
    print(
        f"| harvest fetch (LocalCluster, 2 workers, warmed) | 2 | {n / w2:.1f} | {w2 / f2:.2f}x "
        "| | |"
    )
    print()
    print("Median per chip, ms (harvest in process, last round):")
    print(f"- LR + SCL read: {split['seconds_read_lr']:.1f} (plain read {lr_plain:.1f})")
    print(
        f"- HR read + resample: {split['seconds_read_hr']:.1f} (apart: decode {decode_ms:.1f}, "
        f"resample {resample_ms:.1f}; the floor's plain 1 m read {hr_plain:.1f})"
    )
    print(f"- QA: {split['seconds_qa']:.1f}")
    print(f"- write (3 COGs + metadata + status): {split['seconds_write']:.1f}")
    print(
        "Median per chip, ms, inside the 2 warmed Dask workers: "
        + ", ".join(f"{k.removeprefix('seconds_')} {v:.1f}" for k, v in split2.items())
        + f" (sum {sum(split2.values()):.1f}; chip span per chip per worker "
        f"{2000 * w2 / n:.1f})"
    )
    for name, (ms, diff) in odc_ms.items():
        print(
            f"- reader choice, LR 4 bands + NAIP band 1: {name} {ms:.1f} ms (max diff {diff:.2g})"
        )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
