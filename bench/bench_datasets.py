"""Benchmark `harvest.datasets.SEN2NAIP`: one 1100 px statistical sample on one core.

The issue's target: well under 50 ms per 4 x 1100 x 1100 sample (SEN2NAIP's synthetic HR size),
on one core (torch and BLAS limited to one thread, as one DataLoader worker of many). Times
`dataset[i]` end to end (GeoTIFF read, gamma, PSF blur + downsampling, noise, tensors) and its
parts, median of --repeat calls, for every mode, on the same image stored two ways: uint16
reflectance x 10000 (what `harvest build` writes for the synthetic HR) and float32 reflectance
(cross-sensor chips, folders written before).

Usage: .venv/bin/python bench/bench_datasets.py [--repeat 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from threadpoolctl import threadpool_limits

from degradation.harmonize.gamma import apply_gamma, apply_gamma_table, gamma_table
from degradation.pipeline import Degrader, counts_to_reflectance
from degradation.psf import blur_downsample, blur_downsample_blocks
from harvest.datasets import SEN2NAIP, _read, _read_stored, _Stored

SIDE = 1100
MODES = ("raw", "statistical", "deterministic", "variational", "all")
#: Storage formats: (name, GeoTIFF dtype, predictor).
FORMATS = (("uint16 x 10000", "uint16", 2), ("float32", "float32", 3))


def make_hr() -> np.ndarray:
    rng = np.random.default_rng(0)
    # Smooth fields plus texture, reflectance 0-0.5: what a NAIP chip brought to 2.5 m holds.
    base = rng.random((4, SIDE // 10, SIDE // 10), dtype=np.float32)
    hr = np.kron(base, np.ones((10, 10), np.float32)) * 0.3
    hr += rng.random(hr.shape, dtype=np.float32) * 0.2
    return hr


def write_hr(root: Path, hr: np.ndarray, dtype: str, predictor: int) -> Path:
    """One synthetic image under ``root``, as harvest writes it (ZSTD, 256 px tiles)."""
    folder = root / "synthetic" / "ROI_000001" / "image"
    folder.mkdir(parents=True)
    data = np.clip(np.rint(hr * 10000), 0, 65535).astype(np.uint16) if dtype == "uint16" else hr
    profile = {
        "driver": "GTiff", "width": SIDE, "height": SIDE, "count": 4, "dtype": dtype,
        "crs": "EPSG:32615", "transform": from_origin(450000, 4650000, 2.5, 2.5),
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "zstd",
        "predictor": predictor, "nodata": None,
    }  # fmt: skip
    with rasterio.open(folder / "HR.tif", "w", **profile) as dst:
        dst.write(data)
        for i, band in enumerate(("red", "green", "blue", "nir"), start=1):
            dst.set_band_description(i, band)
    return folder / "HR.tif"


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def statistical_parts(
    stored: _Stored, hr: np.ndarray, deg: Degrader, repeat: int
) -> dict[str, float]:
    """The statistical mode's steps alone: gamma (by table for integer images), PSF."""
    rows: dict[str, float] = {}
    gamma = deg._gammas(np.random.default_rng(0), 1, 4)[0]
    data, scale = stored.data, stored.scale
    if scale is not None:
        levels = counts_to_reflectance(np.arange(65536), scale)
        rows["statistical part: gamma by table lookup (decoding included)"] = median_ms(
            lambda: apply_gamma_table(data, gamma_table(gamma, levels)), repeat
        )
        rows["statistical part: decode, then gamma by exp(log)"] = median_ms(
            lambda: apply_gamma(counts_to_reflectance(data, scale), gamma), repeat
        )
    else:
        rows["statistical part: gamma by exp(log)"] = median_ms(
            lambda: apply_gamma(hr, gamma), repeat
        )
    psf, t = deg.psf, torch.from_numpy(hr)[None]
    kw = {"kernel_size": psf.kernel_size, "truncate": psf.truncate}
    rows["statistical part: PSF + downsampling, block matrices"] = median_ms(
        lambda: blur_downsample_blocks(t, psf.sigma_px, psf.factor, **kw), repeat
    )
    rows["statistical part: PSF + downsampling, strided conv1d (before)"] = median_ms(
        lambda: blur_downsample(t, psf.sigma_px, psf.factor, **kw), repeat
    )
    return rows


def measure(root: Path, hr_path: Path, repeat: int) -> dict[str, float]:
    """Rows of one storage format: the read, each mode end to end, the statistical parts."""
    rows: dict[str, float] = {}
    stored = _read_stored(hr_path)
    rows["read the HR GeoTIFF (as stored)"] = median_ms(lambda: _read_stored(hr_path), repeat)
    rows["read the HR GeoTIFF as float32 reflectance"] = median_ms(lambda: _read(hr_path), repeat)
    for mode in MODES:
        ds = SEN2NAIP(root, split="all", mode=mode, seed=0)
        ds[0]  # the model loads once per worker
        deg = ds._get_degrader()
        gen = np.random.default_rng(0)
        data = stored.data
        rows[f"`dataset[0]`, mode {mode}"] = median_ms(lambda ds=ds: ds[0], repeat)
        rows[f"of which the degradation alone, mode {mode}"] = median_ms(
            lambda deg=deg, d=data, g=gen: deg.degrade_image(
                d, g, scale=stored.scale, nodata=stored.nodata
            ),
            repeat,
        )
        if mode == "statistical":
            rows.update(statistical_parts(stored, _read(hr_path), deg, repeat))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# SEN2NAIP dataset, 4 x {SIDE} x {SIDE} HR, 1 thread; "
          f"load average at start {os.getloadavg()[0]:.2f}")  # fmt: skip
    hr = make_hr()
    columns: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        for name, dtype, predictor in FORMATS:
            root = Path(tmp) / dtype
            path = write_hr(root, hr, dtype, predictor)
            columns[name] = measure(root, path, args.repeat)
    names = [name for name, _, _ in FORMATS]
    print(f"\n| what | {' | '.join(names)} |\n|---|{'---:|' * len(names)}")
    seen: list[str] = []
    for col in columns.values():
        seen += [row for row in col if row not in seen]
    for row in seen:
        cells = [f"{columns[n][row]:.1f}" if row in columns[n] else "" for n in names]
        print(f"| {row} | {' | '.join(cells)} |")
    stat = columns[names[0]]["`dataset[0]`, mode statistical"]
    verdict = "met" if stat < 50 else "NOT met"
    print(f"\ntarget: a statistical sample well under 50 ms, {names[0]}: {verdict} ({stat:.1f} ms)")


if __name__ == "__main__":
    main()
