"""Forward models of the demo world's sensors (the world's physics).

Pure numpy/scipy, independent of ``degradation/`` on purpose: the pipeline's estimators are tested
against this module, so it must not share their code. Conventions:

* Grids are north-up; row 0 is the northern edge. A pixel index ``(r, c)`` has its centre at
  ``x = x0 + (c + 0.5) * gsd``, ``y = y0 - (r + 0.5) * gsd``.
* HR to LR: Gaussian blur (``scipy.ndimage.gaussian_filter``, ``mode="reflect"``,
  ``truncate=4``) with a per-band sigma in HR pixels, then bilinear sampling at the LR pixel
  centres (no antialias): LR pixel ``i`` samples HR index ``(i + 0.5) * f - 0.5`` (``f`` = LR/HR
  gsd), which is what ``torch.nn.functional.interpolate(scale_factor=1/f, mode="bilinear",
  align_corners=False, antialias=False)`` does for integer ``f``.
* Misregistration ``(dx, dy)`` metres (east, north): the LR image content is displaced by it,
  i.e. ``LR(p) = blur(HR)(p - (dx, dy))``. To register the LR image onto the HR one, move it by
  ``(-dx, -dy)``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

PSF_TRUNCATE = 4.0


def area_downsample(x: NDArray[Any], src_gsd_m: float, dst_gsd_m: float) -> NDArray[np.float64]:
    """Exact area-weighted average from ``src_gsd_m`` to ``dst_gsd_m`` over the last two axes.

    The ratio must be rational with a small denominator (1 m -> 2.5 m is 5/2): each source pixel
    is split into ``q x q`` equal sub-pixels, then blocks of ``p x p`` sub-pixels are averaged.
    GDAL's warper with ``average`` resampling gives the same values.

    Raises:
        ValueError: when the sizes are not a whole number of output pixels.
    """
    arr = np.asarray(x)
    if arr.ndim > 2:  # one band at a time keeps the float64 temporaries small
        return np.stack([area_downsample(b, src_gsd_m, dst_gsd_m) for b in arr])
    ratio = Fraction(dst_gsd_m / src_gsd_m).limit_denominator(16)
    p, q = ratio.numerator, ratio.denominator
    out = arr.astype(np.float64)
    for axis in (-1, -2):
        n = out.shape[axis]
        if (n * q) % p:
            raise ValueError(f"{n} px at {src_gsd_m} m is not a whole number of {dst_gsd_m} m px")
        if q > 1:
            out = np.repeat(out, q, axis=axis)
        shape = list(out.shape)
        ax = axis % out.ndim
        shape[ax : ax + 1] = [n * q // p, p]
        out = out.reshape(shape).mean(axis=ax + 1)
    return out


def gaussian_blur(band: NDArray[np.floating], sigma_px: float) -> NDArray[np.float64]:
    """Blur one 2-D band with the world's Gaussian PSF (sigma in pixels of ``band``)."""
    return ndimage.gaussian_filter(
        np.asarray(band, dtype=np.float64), sigma_px, mode="reflect", truncate=PSF_TRUNCATE
    )


def sample_positions(
    out_shape: tuple[int, int], factor: float, hr_gsd_m: float, shift_m: tuple[float, float]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """HR fractional (row, col) indices sampled by each LR pixel centre, shift included."""
    dx, dy = shift_m
    rows = (np.arange(out_shape[0], dtype=np.float64) + 0.5) * factor - 0.5 + dy / hr_gsd_m
    cols = (np.arange(out_shape[1], dtype=np.float64) + 0.5) * factor - 0.5 - dx / hr_gsd_m
    return rows, cols


def bilinear_sample(
    band: NDArray[np.floating],
    out_shape: tuple[int, int],
    factor: float,
    hr_gsd_m: float,
    shift_m: tuple[float, float] = (0.0, 0.0),
) -> NDArray[np.float64]:
    """Bilinear samples of ``band`` at the (shifted) LR pixel centres, edges clamped."""
    rows, cols = sample_positions(out_shape, factor, hr_gsd_m, shift_m)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(
        np.asarray(band, dtype=np.float64), [rr, cc], order=1, mode="nearest", prefilter=False
    )


def degrade_band(
    hr: NDArray[np.floating],
    sigma_hr_px: float,
    factor: float,
    hr_gsd_m: float,
    shift_m: tuple[float, float],
) -> NDArray[np.float64]:
    """Blur then bilinearly decimate one HR band (no noise)."""
    out_shape = (int(round(hr.shape[0] / factor)), int(round(hr.shape[1] / factor)))
    return bilinear_sample(gaussian_blur(hr, sigma_hr_px), out_shape, factor, hr_gsd_m, shift_m)


def gamma_transfer(dn: NDArray[np.floating], gamma: float, dn_max: float = 255.0) -> NDArray:
    """NAIP-like DN (area averaged) to reflectance: ``(dn / dn_max) ** (1 / gamma)``."""
    return np.power(np.asarray(dn, dtype=np.float64) / dn_max, 1.0 / gamma)


def naip_dn(
    reflectance: NDArray[np.floating],
    gamma: float,
    noise_std_dn: float,
    rng: np.random.Generator,
) -> NDArray[np.uint8]:
    """Reflectance to NAIP-like DN: ``clip(round(255 * rho ** gamma + n), 1, 255)``."""
    dn = 255.0 * np.power(np.asarray(reflectance, dtype=np.float32), np.float32(gamma))
    dn += rng.standard_normal(dn.shape, dtype=np.float32) * np.float32(noise_std_dn)
    return np.clip(np.rint(dn), 1, 255).astype(np.uint8)


def cloud_field(
    shape: tuple[int, int],
    gsd_m: float,
    centres_px: list[tuple[float, float]],
    radii_m: list[float],
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Cloud opacity in [0, 1]: soft-edged blobs, exactly 0 away from them."""
    yy = np.arange(shape[0], dtype=np.float64)[:, None]
    xx = np.arange(shape[1], dtype=np.float64)[None, :]
    field = np.zeros(shape, dtype=np.float64)
    for (cy, cx), radius in zip(centres_px, radii_m, strict=True):
        r = radius / gsd_m
        field += np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.6 * r) ** 2)))
    lumps = ndimage.gaussian_filter(rng.standard_normal(shape), max(1.0, 40.0 / gsd_m))
    lumps /= float(lumps.std()) or 1.0
    field *= 1.0 + 0.35 * lumps
    return np.clip((field - 0.3) / 0.5, 0.0, 1.0)


def shadow_of(opacity: NDArray[np.float64], offset_px: tuple[int, int]) -> NDArray[np.float64]:
    """Shadow strength: the cloud opacity moved by ``(rows, cols)`` pixels (zero filled)."""
    out = np.zeros_like(opacity)
    dr, dc = offset_px
    h, w = opacity.shape
    src = opacity[max(0, -dr) : h - max(0, dr), max(0, -dc) : w - max(0, dc)]
    out[max(0, dr) : max(0, dr) + src.shape[0], max(0, dc) : max(0, dc) + src.shape[1]] = src
    return out


def block_max(x: NDArray, factor: int) -> NDArray:
    """Maximum over ``factor x factor`` blocks (a coarse pixel is flagged if any sub-pixel is)."""
    h, w = x.shape
    return x.reshape(h // factor, factor, w // factor, factor).max(axis=(1, 3))


def speckle(
    sigma0_linear: NDArray[np.floating], enl: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Multiplicative Gamma speckle with mean 1 and ``enl`` looks."""
    return np.asarray(sigma0_linear, dtype=np.float64) * rng.gamma(
        enl, 1.0 / enl, size=np.shape(sigma0_linear)
    )
