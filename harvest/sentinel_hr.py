"""Sentinel-HR hybridation series (pure numpy/scipy): guides, targets, resampling, harmonization.

The Sentinel-HR phase-0 study (Michel et al., LPS 2022; ``SCIENCE.md`` section 4) built
spatio-temporal fusion sets per VENuS site:

- **guides**: the VENuS 5 m series thinned to a revisit of about 20 days (standing for
  Sentinel-HR): :func:`thin_guides`;
- **targets**: Sentinel-2 and VENuS acquired less than a day apart (S2 standing for the low
  resolution series, VENuS for its 5 m reference), on dates that are not guides:
  :func:`target_pairs`; S2 is registered onto VENuS (SIFT, as SEN2VENuS), brought to VENuS's
  radiometry by per-date least squares (:func:`fit_masked_mapping`), and resampled to 25 m
  (ratio 5, Sentinel-HR + S2) or 12.5 m (ratio 2.5, Sentinel-HR + S2-NG) with a Gaussian
  matched to the MTF at the output's Nyquist (:func:`resample`).

Guides are thinned greedily from the first date, so a series that grows at its end keeps the
guides it had (an extended build appends dates, it does not reshuffle them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from scipy import ndimage

from harvest.errors import QaError
from harvest.sen2venus import S2_MTF_AT_NYQUIST as MTF_AT_NYQUIST

RATIOS = (2.5, 5.0)


def thin_guides(dates: Sequence[datetime], revisit_days: float) -> list[int]:
    """Indices of a series thinned greedily to at least ``revisit_days`` between kept dates.

    The first date is kept, then each date at least ``revisit_days`` after the last kept one.
    """
    if revisit_days < 0:
        raise QaError(f"the guide revisit must be >= 0 days, got {revisit_days}")
    kept: list[int] = []
    for i in sorted(range(len(dates)), key=lambda k: dates[k]):
        if not kept or (dates[i] - dates[kept[-1]]).total_seconds() >= revisit_days * 86400:
            kept.append(i)
    return kept


def target_pairs(
    s2_dates: Sequence[datetime],
    venus_dates: Sequence[datetime],
    *,
    max_dt_hours: float = 24.0,
    exclude: Sequence[int] = (),
) -> list[tuple[int, int]]:
    """Target pairs: ``(s2 index, venus index)``, in VENuS date order.

    Each VENuS date not in ``exclude`` with the nearest S2 date less than ``max_dt_hours`` away.
    """
    skip = set(exclude)
    out = []
    for v in sorted(range(len(venus_dates)), key=lambda k: venus_dates[k]):
        if v in skip or not s2_dates:
            continue
        gaps = [abs((s - venus_dates[v]).total_seconds()) for s in s2_dates]
        best = int(np.argmin(gaps))
        if gaps[best] < max_dt_hours * 3600:
            out.append((best, v))
    return out


def mtf_sigma_m(gsd_m: float, mtf: float = MTF_AT_NYQUIST) -> float:
    """Standard deviation (metres) of the Gaussian whose MTF is ``mtf`` at ``gsd_m``'s Nyquist.

    ``exp(-2 (pi sigma f)^2) = mtf`` at ``f = 1 / (2 gsd)``.
    """
    return gsd_m * math.sqrt(-2.0 * math.log(mtf)) / math.pi


def resample(
    x: np.ndarray,
    in_gsd_m: float,
    out_gsd_m: float,
    mtf: float = MTF_AT_NYQUIST,
    in_mtf: float | None = None,
) -> np.ndarray:
    """Downsample [C, H, W] from ``in_gsd_m`` to ``out_gsd_m`` (any ratio >= 1).

    The grids share their top-left corner.

    The output gets a Gaussian MTF of ``mtf`` at its own Nyquist: when the input already has
    one of ``in_mtf`` at its Nyquist (Sentinel-2 at 10 m), only the missing blur is added
    (variances subtract). Then bilinear sampling at the output pixel centres; the output has
    ``floor(H * in / out)`` rows. NaN spreads to what it touches.
    """
    ratio = out_gsd_m / in_gsd_m
    if ratio < 1:
        raise QaError(f"resample downsamples: {in_gsd_m} m to {out_gsd_m} m is an upsampling")
    a = np.asarray(x, dtype=np.float64)
    var = mtf_sigma_m(out_gsd_m, mtf) ** 2
    if in_mtf is not None:
        var = max(var - mtf_sigma_m(in_gsd_m, in_mtf) ** 2, 0.0)
    sigma = math.sqrt(var) / in_gsd_m
    blurred = (
        ndimage.gaussian_filter(a, (0, sigma, sigma), mode="mirror", truncate=4.0)
        if sigma > 0
        else a
    )
    h = int(math.floor(a.shape[-2] / ratio + 1e-9))
    w = int(math.floor(a.shape[-1] / ratio + 1e-9))
    rows = (np.arange(h) + 0.5) * ratio - 0.5
    cols = (np.arange(w) + 0.5) * ratio - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack(
        [ndimage.map_coordinates(band, [rr, cc], order=1, mode="nearest") for band in blurred]
    )


def fit_masked_mapping(src: np.ndarray, dst: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Least squares with intercept from ``src`` [K, h, w] to ``dst`` [B, h, w] on ``valid``.

    Returns:
        ``W`` [K + 1, B] (last row: intercepts).

    Raises:
        QaError: fewer valid pixels than unknowns.
    """
    ok = valid & np.all(np.isfinite(src), axis=0) & np.all(np.isfinite(dst), axis=0)
    n = int(ok.sum())
    if n <= src.shape[0] + 1:
        raise QaError(f"{n} valid pixels cannot fit a {src.shape[0] + 1}-term linear map")
    x = np.concatenate([src[:, ok].T, np.ones((n, 1))], axis=1)
    w, *_ = np.linalg.lstsq(x, dst[:, ok].T, rcond=None)
    return np.asarray(w)


def apply_mapping(src: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``W`` of :func:`fit_masked_mapping` applied to ``src`` [K, H, W] -> [B, H, W]."""
    k, h, width = src.shape
    flat = np.concatenate([src.reshape(k, -1).T, np.ones((h * width, 1))], axis=1) @ w
    return np.asarray(flat.T.reshape(w.shape[1], h, width))
