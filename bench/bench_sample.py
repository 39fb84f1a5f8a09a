"""Benchmark `harvest sample` against a one-dart-at-a-time baseline, side by side.

harvest: the whole process from the shell (`harvest sample ...` as a subprocess, interpreter start
and the GeoParquet write included), median of --repeat runs.

Baseline: the straightforward sequential dart throwing of SSL4EO-S12's downloader style: one
candidate at a time, shapely `contains` on the prepared region, an rtree index of the accepted
points' boxes to find neighbours, and an exact geodesic check per neighbour. It consumes the very
same candidate stream as harvest, so it must produce the very same points (checked on the prefix it
reaches). It runs in-process (no interpreter start counted) and is stopped after
--baseline-seconds; its time for the full n is then extrapolated from its cost per candidate and
the number of candidates harvest drew (recorded in the output's metadata).

Usage: .venv/bin/python bench/bench_sample.py [--sizes 18000 101123] [--baseline-seconds 60]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely
from pyproj import Geod, Transformer

from harvest.geoio import read_harvest_metadata
from harvest.regions import load_region

HARVEST = str(Path(sys.executable).parent / "harvest")
SEED = 7
MIN_DISTANCE_M = 5000.0


def run_cli(n: int, out: Path, repeat: int) -> tuple[float, int]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(
            [
                HARVEST,
                "sample",
                "--n",
                str(n),
                "--region",
                "conus",
                "--seed",
                str(SEED),
                "--no-progress",
                "-o",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times), int(read_harvest_metadata(out)["candidates_drawn"])


def baseline(n: int, budget_s: float) -> tuple[int, int, float, np.ndarray]:
    """Sequential dart throwing; returns (accepted, candidates, seconds, points)."""
    from rtree import index

    region = load_region("conus")
    geom = region.geometry
    shapely.prepare(geom)
    geod = Geod(ellps="WGS84")
    fwd = Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True)
    inv = Transformer.from_crs("EPSG:6933", "EPSG:4326", always_xy=True)
    x0, y0 = fwd.transform(geom.bounds[0], geom.bounds[1])
    x1, y1 = fwd.transform(geom.bounds[2], geom.bounds[3])
    # The same candidate box as harvest (bounding box padded by 1 m), so the streams match.
    x0, y0, x1, y1 = x0 - 1.0, y0 - 1.0, x1 + 1.0, y1 + 1.0
    rng = np.random.default_rng(SEED)
    tree = index.Index()
    pts: list[tuple[float, float]] = []
    lat_pad = MIN_DISTANCE_M / 110_000.0  # a degree of latitude is >= 110.5 km
    drawn = 0
    t0 = time.perf_counter()
    while len(pts) < n:
        if drawn % 1000 == 0 and time.perf_counter() - t0 > budget_s:
            break
        u = rng.random(2)
        drawn += 1
        lon, lat = inv.transform(x0 + u[0] * (x1 - x0), y0 + u[1] * (y1 - y0))
        lon, lat = round(lon, 7), round(lat, 7)
        if not geom.contains(shapely.Point(lon, lat)):
            continue
        lon_pad = lat_pad / max(math.cos(math.radians(abs(lat) + lat_pad)), 1e-6)
        ok = True
        for k in tree.intersection((lon - lon_pad, lat - lat_pad, lon + lon_pad, lat + lat_pad)):
            if geod.inv(lon, lat, pts[k][0], pts[k][1])[2] < MIN_DISTANCE_M:
                ok = False
                break
        if ok:
            tree.insert(len(pts), (lon, lat, lon, lat))
            pts.append((lon, lat))
    return len(pts), drawn, time.perf_counter() - t0, np.asarray(pts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[18000, 101123])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-seconds", type=float, default=60.0)
    args = parser.parse_args()

    import geopandas as gpd

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            out = Path(tmp) / f"rois_{n}.parquet"
            cli_s, candidates = run_cli(n, out, args.repeat)
            done, drawn, base_s, pts = baseline(n, args.baseline_seconds)
            ours = gpd.read_parquet(out)
            same = bool(
                np.array_equal(ours.geometry.x.to_numpy()[:done], pts[:, 0])
                and np.array_equal(ours.geometry.y.to_numpy()[:done], pts[:, 1])
            )
            full = done == n
            est_s = base_s if full else base_s / drawn * candidates
            rows.append((n, cli_s, est_s, full, done, candidates, same))

    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, seed {SEED}, CONUS, min distance 5 km\n"
    )
    print(
        "| n | harvest sample (whole CLI) | sequential baseline | speed-up | candidates drawn"
        " | baseline output identical |"
    )
    print("|---:|---:|---:|---:|---:|:---:|")
    for n, cli_s, est_s, full, done, candidates, same in rows:
        base = f"{est_s:.1f} s" if full else f"~{est_s:.0f} s (extrapolated from {done:,} ROIs)"
        print(
            f"| {n:,} | {cli_s:.2f} s | {base} | {est_s / cli_s:.0f}x | {candidates:,} | "
            f"{'yes' if same else 'NO'} |"
        )


if __name__ == "__main__":
    main()
