"""Benchmark the chip COG writer: rasterio against harvest's former own encoder (ADR 0009).

Issue 12's rule: ``harvest.cog`` (a hand-written TIFF encoder plus the ``zstandard``
dependency) stays only if the whole fetch is at least 15 % faster with it than with rasterio
writing the same chip. It was not on chips laid out like real ROIs (12-14 %), and was deleted;
this bench keeps the comparison runnable by loading the deleted module's source from git
(commit :data:`COG_COMMIT`; ``zstandard`` must be installed: ``pip install zstandard``).

Both writers make the same file: GDAL's COG layout (``LAYOUT=COG``), tiled (128 px tiles up to
128 px chips, else 256), pixel-interleaved, ZSTD level 1, the floating-point predictor for
floats and horizontal differencing for integers, band descriptions, nodata, EPSG code and
transform, no overviews. The rasterio writer (:func:`harvest.store.write_cog`'s own) uses GDAL's
COG driver into a ``MemoryFile`` (rasterio builds the image in a MEM dataset, then GDAL copies
it into the COG); GTiff's CreateCopy with ``COPY_SRC_OVERVIEWS=YES``, the other way to get
GDAL's COG layout, runs the same code and timed the same. Either way the bytes then go through
``write_cog``'s guarded write and SHA-256, into the chip's temporary folder that
:func:`harvest.store.write_chip` renames into place.

The writer is switched inside this bench only, by replacing the encoder ``write_cog`` calls (in
this process and, before a 2-worker run, on every Dask worker); it is not a user option.

(a) per file: encode + write + hash of LR.tif (4 x 121 x 121 float32), HR.tif (4 x 484 x 484
    float32) and SCL.tif (1 x 121 x 121 uint8) of real demo-world chips, as ``write_cog`` does,
    into a temporary folder; ``--repeat`` rounds, the writers' order alternating round by round.
(b) the whole fetch: the chips of ``bench_fetch.py`` (every sen2naip pair of the demo world at
    a 3 x 3 grid of ROI offsets) fetched with each writer, in process and on a 2-worker
    LocalCluster (a cluster per writer and round, warmed by one untimed run of the same chips;
    its start-up is not timed). Chips/s over the whole ``run`` call, over the chip span, and
    per CPU second of the processes doing the work; rounds alternate the writers' order;
    medians, with the smallest and largest round.

Usage: .venv/bin/python bench/bench_cog.py [--repeat 11] [--offsets 3] [--spacing M]
[--site-size M] [--world DIR] [--no-workers]; like real ROIs (no two chips share a decoded
tile): ``--site-size 6000 --spacing 1800``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from bench_fetch import RECIPE, drop_readers, harvest_run, make_jobs, split_from_status

import harvest.store
from harvest.demo.world import WORLD_FORMAT, run_demo_world
from harvest.grid import ChipGrid
from harvest.stages.fetch import _warm_worker, local_cluster
from harvest.store import HR_FILE, LR_FILE, SCL_FILE, iter_chip_folders, read_chip_folder

#: The last commit with ``harvest/cog.py``, the hand-written encoder.
COG_COMMIT = "aee14edbaaaa7bf1bab6448f64d1cb6b739542f9"
ROOT = Path(__file__).resolve().parents[1]
WRITERS = ("harvest.cog", "rasterio")

Encoder = Callable[[npt.NDArray[Any], ChipGrid, Sequence[str], "float | None"], bytes]


def cog_source() -> str:
    """The source of the deleted ``harvest/cog.py``, from git."""
    try:
        import zstandard  # noqa: F401  (the deleted encoder's codec)
    except ImportError as exc:
        raise SystemExit("the hand-written encoder needs zstandard: pip install zstandard") from exc
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{COG_COMMIT}:harvest/cog.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def handwritten(source: str) -> Encoder:
    """``write_cog``'s encoder made with the hand-written module of ``source``."""
    module = types.ModuleType("handwritten_cog")
    exec(compile(source, f"harvest/cog.py@{COG_COMMIT[:7]}", "exec"), module.__dict__)

    def encode(
        data: npt.NDArray[Any], grid: ChipGrid, band_names: Sequence[str], nodata: float | None
    ) -> bytes:
        return bytes(
            module.encode_cog(
                data,
                epsg=grid.epsg,
                transform=grid.transform,
                band_names=band_names,
                nodata=nodata,
                tile=128 if max(grid.width, grid.height) <= 128 else 256,
                zstd_level=1,
            )
        )

    return encode


def use_writer(name: str, source: str) -> None:
    """Make :func:`harvest.store.write_cog` encode with writer ``name`` (in this process).

    Pickled by value to the Dask workers (this script is ``__main__``): hence the source as an
    argument and the rasterio encoder kept on the store module.
    """
    store: Any = harvest.store
    if not hasattr(store, "_bench_rasterio_cog_bytes"):
        store._bench_rasterio_cog_bytes = store._cog_bytes
    store._cog_bytes = (
        store._bench_rasterio_cog_bytes if name == "rasterio" else handwritten(source)
    )


def order(round_no: int) -> list[str]:
    """The writers in round ``round_no``'s order: alternating, so drift hits both alike."""
    names = list(WRITERS)
    return names if round_no % 2 == 0 else names[::-1]


# ------------------------------------------------------------------------------------------
# (a) per file
# ------------------------------------------------------------------------------------------


def chip_files(out: Path, n: int) -> list[tuple[str, npt.NDArray[Any], Any, list[str], Any]]:
    """(file, array, grid, band names, nodata) of the first ``n`` chips fetched into ``out``."""
    files = []
    for _, folder, _ in list(iter_chip_folders(out))[:n]:
        chip = read_chip_folder(folder)
        files.append((LR_FILE, chip.lr, chip.lr_grid, list(RECIPE.lr.bands), np.nan))
        files.append((HR_FILE, chip.hr, chip.hr_grid, list(RECIPE.lr.bands), np.nan))
        if chip.scl is not None:
            files.append((SCL_FILE, chip.scl[None], chip.lr_grid, ["SCL"], 0))
    return files


def per_file(
    files: list[Any], tmp: Path, repeat: int, source: str
) -> dict[str, dict[str, list[float]]]:
    """Per writer and file name, one median (ms) per round of encode + write + hash."""
    out: dict[str, dict[str, list[float]]] = {w: {} for w in WRITERS}
    sizes: dict[tuple[str, str], int] = {}
    for name in WRITERS:  # first use of each writer untimed (imports, GDAL drivers)
        use_writer(name, source)
        for fname, data, grid, bands, nodata in files:
            harvest.store.write_cog(tmp / fname, data, grid, bands, nodata)
            sizes[name, fname] = (tmp / fname).stat().st_size
    for r in range(repeat):
        for name in order(r):
            use_writer(name, source)
            times: dict[str, list[float]] = {}
            for _ in range(3):
                for fname, data, grid, bands, nodata in files:
                    t0 = time.perf_counter()
                    harvest.store.write_cog(tmp / fname, data, grid, bands, nodata)
                    times.setdefault(fname, []).append(time.perf_counter() - t0)
            for fname, ts in times.items():
                out[name].setdefault(fname, []).append(statistics.median(ts) * 1000)
    for (name, fname), size in sorted(sizes.items()):
        out[name].setdefault(f"{fname} bytes", []).append(float(size))
    return out


# ------------------------------------------------------------------------------------------
# (b) the whole fetch
# ------------------------------------------------------------------------------------------


def fetch_in_process(
    jobs: list[Any], out: Path, writer: str, source: str
) -> tuple[float, float, float]:
    """(whole call, chip span, CPU seconds of this process) of one in-process fetch."""
    use_writer(writer, source)
    cpu = time.process_time()
    whole, span = harvest_run(jobs, out, 1)
    return whole, span, time.process_time() - cpu


def on_workers(address: str, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` on every worker, through a client closed at once.

    A second client left connected during a timed run made its whole call end 2-4 s after its
    last chip in some runs (seen with both writers).
    """
    from distributed import Client

    with Client(address) as client:
        return dict(client.run(fn, *args))


def fetch_two_workers(
    jobs: list[Any], out: Path, writer: str, source: str
) -> tuple[float, float, float]:
    """(whole call, chip span, CPU seconds of both workers and this process) on a fresh
    2-worker cluster warmed by one untimed run."""
    cluster = local_cluster(2)
    address = cluster.scheduler_address
    try:
        on_workers(address, use_writer, writer, source)
        # The workers' encoder: the store's own (rasterio) or the bench's wrapper.
        names = set(on_workers(address, lambda: harvest.store._cog_bytes.__name__).values())
        assert names == {"_cog_bytes" if writer == "rasterio" else "encode"}, names
        harvest_run(jobs, out, scheduler=address)  # warm-up, untimed
        before = sum(on_workers(address, time.process_time).values()) + time.process_time()
        whole, span = harvest_run(jobs, out, scheduler=address)
        after = sum(on_workers(address, time.process_time).values()) + time.process_time()
        return whole, span, after - before
    finally:
        cluster.close()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=11, help="Rounds (writers alternate order).")
    ap.add_argument("--offsets", type=int, default=3, help="ROIs per site side (n x n).")
    ap.add_argument("--spacing", type=float, default=450.0, help="Metres between ROI centres.")
    ap.add_argument("--site-size", type=float, default=2400.0, help="Demo-world site side, m.")
    ap.add_argument("--world", type=Path, default=None)
    ap.add_argument("--no-workers", action="store_true", help="Skip the 2-worker runs.")
    args = ap.parse_args()
    name = f"demo-world-seed0-format{WORLD_FORMAT}"
    if args.site_size != 2400.0:
        name += f"-site{args.site_size:g}"
    world = args.world or Path(".cache/harvest") / name
    run_demo_world(out_dir=world, seed=0, progress=False, site_size_m=args.site_size)
    jobs = make_jobs(world, args.offsets, args.spacing)
    n = len(jobs)
    _warm_worker()
    source = cog_source()
    load_before = os.getloadavg()
    span: dict[tuple[str, str], list[float]] = {}
    whole: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    writes: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for writer in WRITERS:  # first use of each writer, untimed
            fetch_in_process(jobs, tmp / "warm", writer, source)
        files = chip_files(tmp / "warm", 9)
        (tmp / "files").mkdir()
        file_ms = per_file(files, tmp / "files", args.repeat, source)
        for r in range(args.repeat):
            for writer in order(r):
                w, s, c = fetch_in_process(jobs, tmp / "one", writer, source)
                whole.setdefault(("1", writer), []).append(n / w)
                span.setdefault(("1", writer), []).append(n / s)
                cpu.setdefault(("1", writer), []).append(n / c)
                writes.setdefault(writer, []).append(
                    split_from_status(tmp / "one")["seconds_write"]
                )
            if args.no_workers:
                continue
            for writer in order(r):
                w, s, c = fetch_two_workers(jobs, tmp / "two", writer, source)
                whole.setdefault(("2", writer), []).append(n / w)
                span.setdefault(("2", writer), []).append(n / s)
                cpu.setdefault(("2", writer), []).append(n / c)
        drop_readers()
    load_after = os.getloadavg()

    print(
        f"{platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"{n} chips, ROIs {args.spacing:g} m apart on {args.site_size:g} m sites; "
        f"{args.repeat} rounds, writers alternating; median (smallest-largest round)"
    )
    print()
    print("(a) per file, encode + write + SHA-256, ms (median of 3 x 9 chips per round):")
    print("| file | harvest.cog | rasterio | rasterio - harvest.cog | KB harvest.cog / rasterio |")
    print("|---|---|---|---|---|")
    for fname in (LR_FILE, HR_FILE, SCL_FILE):
        a, b = file_ms["harvest.cog"][fname], file_ms["rasterio"][fname]
        diff = statistics.median(b) - statistics.median(a)
        kb = (
            f"{file_ms['harvest.cog'][f'{fname} bytes'][0] / 1024:.0f} / "
            f"{file_ms['rasterio'][f'{fname} bytes'][0] / 1024:.0f}"
        )
        print(f"| {fname} | {spread(a)} | {spread(b)} | {diff:.1f} | {kb} |")
    print()
    print(
        "(b) whole fetch, chips/s (per CPU second: chips per CPU second of the processes "
        "doing the work, which other load on the machine disturbs less):"
    )
    print("| run | measure | harvest.cog | rasterio | harvest.cog faster by, paired rounds |")
    print("|---|---|---|---|---|")
    for cores, label in (("1", "in process"), ("2", "LocalCluster, 2 workers, warmed")):
        for measure, table in (
            ("whole call", whole),
            ("chip span", span),
            ("per CPU second", cpu),
        ):
            if (cores, "harvest.cog") not in table:
                continue
            a, b = table[cores, "harvest.cog"], table[cores, "rasterio"]
            # Each round's two runs ran back to back: their ratio drifts less with the load.
            paired = [100 * (x / y - 1) for x, y in zip(a, b, strict=True)]
            print(f"| {label} | {measure} | {spread(a)} | {spread(b)} | {spread(paired)} % |")
    print()
    print(
        "write stage per chip in process (3 COGs + metadata, status file aside), ms: "
        + ", ".join(f"{w} {spread(v)}" for w, v in writes.items())
    )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
