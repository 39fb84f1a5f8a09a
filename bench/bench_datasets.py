"""Benchmark `harvest.datasets.SEN2NAIP`: one 1100 px statistical sample on one core.

The issue's target: well under 50 ms per 4 x 1100 x 1100 sample (SEN2NAIP's synthetic HR size),
on one core (torch and BLAS limited to one thread, as one DataLoader worker of many). Times
`dataset[i]` end to end (GeoTIFF read, gamma, PSF blur + downsampling, noise, tensors) and its
parts, median of --repeat calls, for every mode.

Usage: .venv/bin/python bench/bench_datasets.py [--repeat 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from threadpoolctl import threadpool_limits

from harvest.datasets import SEN2NAIP, _read

SIDE = 1100


def write_hr(root: Path) -> None:
    folder = root / "synthetic" / "ROI_000001" / "image"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    # Smooth fields plus texture, reflectance 0-0.5: what a NAIP chip brought to 2.5 m holds.
    base = rng.random((4, SIDE // 10, SIDE // 10), dtype=np.float32)
    hr = np.kron(base, np.ones((10, 10), np.float32)) * 0.3
    hr += rng.random(hr.shape, dtype=np.float32) * 0.2
    profile = {
        "driver": "GTiff", "width": SIDE, "height": SIDE, "count": 4, "dtype": "float32",
        "crs": "EPSG:32615", "transform": from_origin(450000, 4650000, 2.5, 2.5),
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "zstd", "predictor": 3,
    }  # fmt: skip
    with rasterio.open(folder / "HR.tif", "w", **profile) as dst:
        dst.write(hr)


def median_ms(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# SEN2NAIP dataset, 4 x {SIDE} x {SIDE} float32 HR, 1 thread; "
          f"load average at start {os.getloadavg()[0]:.2f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        root = Path(tmp)
        write_hr(root)
        hr_path = next(root.glob("synthetic/*/*/HR.tif"))
        print("\n| what | median ms |\n|---|---:|")
        print(f"| read the HR GeoTIFF | {median_ms(lambda: _read(hr_path), args.repeat):.1f} |")
        for mode in ("raw", "statistical", "deterministic", "variational", "all"):
            ds = SEN2NAIP(root, split="all", mode=mode, seed=0)
            ds[0]  # the model loads once per worker
            hr = _read(hr_path)
            deg = ds._get_degrader()
            gen = np.random.default_rng(0)
            full = median_ms(lambda ds=ds: ds[0], args.repeat)
            model = median_ms(lambda deg=deg, hr=hr, gen=gen: deg(hr, gen), args.repeat)
            print(f"| `dataset[0]`, mode {mode} | {full:.1f} |")
            print(f"| of which the degradation alone, mode {mode} | {model:.1f} |")
            if mode == "statistical":
                verdict = "met" if full < 50 else "NOT met"
                stat = full
        print(f"\ntarget: a statistical sample well under 50 ms: {verdict} ({stat:.1f} ms)")


if __name__ == "__main__":
    main()
