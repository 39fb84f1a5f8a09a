"""Time and memory of one real-size VENuS site through the SEN2VENuS and Sentinel-HR cores.

The demo world's VENuS sites are 2.4 km wide (one 1,280 m patch); a real VENuS site is about
27.8 km (the paper: at most 484 patches). This builds one synthetic same-day pair of
``--km`` km (VENuS 5 m, Sentinel-2 10 / 20 m; S2 shifted by a known subpixel amount and seen
through a linear band map) and times, on this machine, in one run:

- ``harvest.sen2venus.process_pair`` (SIFT registration, bicubic resampling, the patch grid,
  the least squares per band group, the 500-patch selection);
- ``harvest.stages._sentinel_hr.make_target`` (registration, mapping, resampling to 25 m);

with the peak resident memory of the process after each (the pair itself included), and checks
the recovered shift.

Usage: .venv/bin/python bench/bench_venus_site.py [--km 25.6]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from scipy import ndimage

from harvest.sen2venus import (
    S2_10M_BANDS,
    S2_20M_BANDS,
    VENUS_10M_BANDS,
    VENUS_20M_BANDS,
    PairImages,
    mtf_downsample,
    process_pair,
)
from harvest.stages._sentinel_hr import make_target

SHIFT_PX = (0.4, -0.3)  # S2 content east / north, 10 m px


def _field(rng: np.random.Generator, n: int) -> np.ndarray:
    f = sum(ndimage.gaussian_filter(rng.normal(size=(n, n)), s) * s for s in (1, 3, 10))
    return (0.05 + 0.4 * (f - f.min()) / (f.max() - f.min())).astype(np.float64)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Build the pair, run both cores, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--km", type=float, default=25.6)
    args = parser.parse_args()
    n5 = int(args.km * 1000 / 20) * 4  # 5 m px, a multiple of 4 (20 m grid)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    s2_names = S2_10M_BANDS + S2_20M_BANDS
    land = {b: _field(rng, n5) for b in s2_names if b != "B8A"}
    land["B8A"] = land["B08"]
    dy, dx = SHIFT_PX[1] * 2, SHIFT_PX[0] * 2  # in 5 m px

    def s2(band: str, factor: int) -> np.ndarray:
        moved = ndimage.shift(land[band], (dy, dx), order=3, mode="mirror")
        return mtf_downsample(moved, factor) * 1.05 + 0.01

    venus_source = dict(zip(VENUS_10M_BANDS, S2_10M_BANDS, strict=True))
    venus_source.update(zip(VENUS_20M_BANDS, S2_20M_BANDS, strict=True))
    venus_bands = tuple(dict.fromkeys(VENUS_10M_BANDS + VENUS_20M_BANDS))
    venus = np.stack([land[venus_source[b]] for b in venus_bands])
    s2_10 = np.stack([s2(b, 2) for b in S2_10M_BANDS])
    s2_20 = np.stack([s2(b, 4) for b in S2_20M_BANDS])
    pair = PairImages(
        s2_10, s2_20, venus, venus_bands,
        np.ones(s2_10.shape[1:], bool), np.ones(s2_20.shape[1:], bool), np.ones((n5, n5), bool),
    )  # fmt: skip
    land.clear()  # the pair holds what is needed
    print(f"pair: {args.km:g} km, VENuS {n5} px at 5 m, built in {time.perf_counter() - t0:.1f} s,"
          f" peak {_peak_mib():.0f} MiB")  # fmt: skip
    t0 = time.perf_counter()
    out = process_pair(pair, np.random.default_rng(0))
    sec = time.perf_counter() - t0
    print(
        f"sen2venus process_pair: {sec:.1f} s, {len(out.patches)} patches of {out.n_grid}, "
        f"shift ({out.shift.dx_px:.3f}, {out.shift.dy_px:.3f}) px for {SHIFT_PX}, "
        f"peak {_peak_mib():.0f} MiB"
    )
    t0 = time.perf_counter()
    v4 = venus[[venus_bands.index(b) for b in ("B3", "B4", "B7", "B11")]]
    lr, shift, _ = make_target(s2_10, v4, 5.0)
    sec = time.perf_counter() - t0
    print(
        f"sentinel-hr make_target: {sec:.1f} s, LR {lr.shape[-1]} px at 25 m, shift "
        f"({shift.dx_px:.3f}, {shift.dy_px:.3f}) px, peak {_peak_mib():.0f} MiB"
    )


if __name__ == "__main__":
    main()
